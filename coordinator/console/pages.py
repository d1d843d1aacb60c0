"""What every page of the coordinator's console uses: the signed-in caller and their role.

Each view checks its caller as the API does (:mod:`coordinator.routes.deps`): a valid
token (a session whose token was revoked since sign-in ends) and one of the roles the
view admits. The dependencies below (``Researcher``, ``Viewer``, ``NodeAdmin``,
``Auditor``, ``AnyRole``) give a view its :class:`ConsoleCtx`. A caller who is not signed
in is sent to the sign-in page (an ``/console/api/`` call gets 401 JSON); a caller of
another role gets a 403 page (or JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from coordinator.audit_store import AuditStore
from coordinator.console.i18n import STRINGS
from coordinator.errors import Unauthorized
from coordinator.lifecycle import Lifecycle
from coordinator.routes.node_audit import audit_store
from coordinator.schemas import PrincipalPublic
from coordinator.store import Store
from federation.web import ConsoleCookies, ConsoleShell, Session, console_csp

__all__ = [
    "SESSION_COOKIE",
    "AnyRole",
    "Auditor",
    "ConsoleCtx",
    "NodeAdmin",
    "PageRefused",
    "Researcher",
    "Viewer",
    "add_error_handlers",
    "check_csrf",
    "make_shell",
    "page",
    "shell",
]

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "hmn_session"
COOKIES = ConsoleCookies(session=SESSION_COOKIE, lang="hmn_lang", login="hmn_login")
#: Scripts and styles from the console itself only; charts are drawn on a canvas.
CSP = console_csp(scripts=True, data_images=True)

# The roles each view admits: the same sets as the API's dependencies (routes/deps.py).
RESEARCHER = ("researcher",)
VIEWER = ("researcher", "auditor", "operator")
NODE_ADMIN = ("node_admin",)
AUDITOR = ("auditor", "operator")
ANY_ROLE = ("researcher", "node_admin", "auditor", "operator")


class NeedLogin(Exception):
    """The request has no live session: sign in first."""


class PageRefused(Exception):
    """The caller may not see or do this; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def make_shell() -> ConsoleShell:
    """Return the console's shell: its templates, labels, cookies and CSP."""
    return ConsoleShell(HERE / "templates", STRINGS, COOKIES, csp=CSP, form_limit=1_000_000)


def shell(request: Request) -> ConsoleShell:
    """Return the console shell of the request's app."""
    console: ConsoleShell = request.app.state.console_shell
    return console


@dataclass
class ConsoleCtx:
    """A signed-in caller's request: who, their session, the page's language."""

    request: Request
    caller: PrincipalPublic
    session: Session
    lang: str

    @property
    def store(self) -> Store:
        """The coordinator's store."""
        store: Store = self.request.app.state.store
        return store

    @property
    def lifecycle(self) -> Lifecycle:
        """The job lifecycle (submissions, decisions)."""
        lifecycle: Lifecycle = self.request.app.state.lifecycle
        return lifecycle

    @property
    def audit(self) -> AuditStore:
        """The store of what nodes published for the auditors."""
        return audit_store(self.request)

    @property
    def t(self) -> dict[str, str]:
        """The labels in the page's language."""
        return STRINGS[self.lang]


def _caller(roles: tuple[str, ...]) -> Callable[[Request], ConsoleCtx]:
    def dependency(request: Request) -> ConsoleCtx:
        console = shell(request)
        session = console.session(request)
        if session is None:
            raise NeedLogin()
        try:
            caller = request.app.state.store.authenticate(session.token or "")
        except Unauthorized:  # revoked or disabled since sign-in
            console.drop_session(request)
            raise NeedLogin() from None
        if caller.role not in roles:
            raise PageRefused(f"role {caller.role} may not do this; needs {' or '.join(roles)}")
        return ConsoleCtx(request, caller, session, console.lang(request))

    return dependency


Researcher = Annotated[ConsoleCtx, Depends(_caller(RESEARCHER))]
Viewer = Annotated[ConsoleCtx, Depends(_caller(VIEWER))]
NodeAdmin = Annotated[ConsoleCtx, Depends(_caller(NODE_ADMIN))]
Auditor = Annotated[ConsoleCtx, Depends(_caller(AUDITOR))]
AnyRole = Annotated[ConsoleCtx, Depends(_caller(ANY_ROLE))]


def page(ctx: ConsoleCtx, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a signed-in page (the caller and the session's CSRF value included)."""
    return shell(ctx.request).render(
        ctx.request, name, status, caller=ctx.caller, csrf=ctx.session.csrf, **context
    )


async def check_csrf(ctx: ConsoleCtx) -> dict[str, str]:
    """Return the request's form after checking it carries the session's CSRF value.

    Raises:
        PageRefused: it does not (403).
    """
    form = await shell(ctx.request).form(ctx.request)
    if not ConsoleShell.csrf_ok(ctx.session, form):
        raise PageRefused("the form's session check failed; reload the page")
    return form


def add_error_handlers(app: FastAPI) -> None:
    """Answer :class:`NeedLogin` and :class:`PageRefused` as pages (JSON under ``/api/``)."""

    @app.exception_handler(NeedLogin)
    async def _need_login(request: Request, _: NeedLogin) -> Response:
        if request.url.path.startswith("/console/api/"):
            return JSONResponse(
                {"detail": "sign in first", "code": "unauthorized", "field": None}, status_code=401
            )
        return RedirectResponse("/console/login", status_code=303)

    @app.exception_handler(PageRefused)
    async def _refused(request: Request, exc: PageRefused) -> Response:
        if request.url.path.startswith("/console/api/"):
            code = {403: "forbidden", 404: "not_found"}.get(exc.status, "refused")
            return JSONResponse(
                {"detail": exc.message, "code": code, "field": None}, status_code=exc.status
            )
        return shell(request).render(
            request, "error.html", exc.status, message=exc.message, code=exc.status
        )
