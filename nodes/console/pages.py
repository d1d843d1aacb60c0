"""What every page of the node's console uses: its shell, the signed-in session, rendering.

The node console has one user, the node admin, who signs in with the node admin's token
(compared in constant time). The console's state (the admin's actions, the expected
token) sits on the admin app (:func:`console_state`); the dependencies ``SignedIn`` and
``SignedForm`` give a view the session (and the CSRF-checked form).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from federation.web import ConsoleCookies, ConsoleShell, Session, console_csp
from nodes.console.i18n import STRINGS

if TYPE_CHECKING:
    from nodes.admin_actions import NodeAdmin

__all__ = [
    "SESSION_COOKIE",
    "NodeConsole",
    "SignedForm",
    "SignedIn",
    "add_error_handlers",
    "console_state",
    "make_console",
    "render",
]

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "hmn_node_session"
COOKIES = ConsoleCookies(session=SESSION_COOKIE, lang="hmn_node_lang", login="hmn_node_login")
#: No script at all; images (the budget chart) and styles from the console itself.
CSP = console_csp(scripts=False, data_images=False)


class NeedLogin(Exception):
    """The request has no live session: sign in first."""


class CsrfFailed(Exception):
    """A form did not carry its session's CSRF value."""


@dataclass
class NodeConsole:
    """The console of one node: its shell, the admin's actions and the expected token."""

    shell: ConsoleShell
    admin: NodeAdmin
    token: str


def make_console(admin: NodeAdmin, token: str) -> NodeConsole:
    """Return the console of ``admin``'s node, signing in with ``token``."""
    shell = ConsoleShell(HERE / "templates", STRINGS, COOKIES, csp=CSP, form_limit=200_000)
    return NodeConsole(shell, admin, token)


def console_state(request: Request) -> NodeConsole:
    """Return the console of the request's admin app."""
    console: NodeConsole = request.app.state.node_console
    return console


def render(
    request: Request, name: str, status: int = 200, session: Session | None = None, **context: Any
) -> HTMLResponse:
    """Render a page; a signed-in page shows the session's CSRF value and its messages once."""
    console = console_state(request)
    flash = list(session.flash) if session else []
    if session:
        session.flash.clear()
    return console.shell.render(
        request,
        name,
        status,
        node=console.admin.node,
        signed_in=session is not None,
        csrf=session.csrf if session else "",
        flash=flash,
        **context,
    )


def _session(request: Request) -> Session:
    session = console_state(request).shell.session(request)
    if session is None:
        raise NeedLogin()
    return session


async def _signed_form(request: Request) -> tuple[Session, dict[str, str]]:
    session = _session(request)
    form = await console_state(request).shell.form(request)
    if not ConsoleShell.csrf_ok(session, form):
        raise CsrfFailed()
    return session, form


SignedIn = Annotated[Session, Depends(_session)]
SignedForm = Annotated[tuple[Session, dict[str, str]], Depends(_signed_form)]


def add_error_handlers(app: FastAPI) -> None:
    """Send a request without a session to sign in; answer a failed CSRF check with a page."""

    @app.exception_handler(NeedLogin)
    async def _need_login(request: Request, _: NeedLogin) -> Response:
        return RedirectResponse("/console/login", status_code=303)

    @app.exception_handler(CsrfFailed)
    async def _csrf_failed(request: Request, _: CsrfFailed) -> Response:
        t = console_state(request).shell.labels(request)
        return render(request, "error.html", 403, message=t["session_check"])
