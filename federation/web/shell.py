"""What every web console shares: templates, labels, sign-in, sessions, CSRF, headers.

The coordinator's console and each node's console differ in who may sign in and what
their pages show; how a browser signs in and stays signed in is the same, and lives here:

* sign-in form: ``login.html`` (from this package, extending the console's own
  ``base.html``) carries a random nonce that must match a cookie set with the form (login
  CSRF), so another site cannot sign a browser into someone else's session;
* session: the browser holds only a random id in an HttpOnly, SameSite=Strict cookie
  scoped to ``/console``; the session itself stays in the server's memory
  (:class:`~federation.web.sessions.SessionStore`);
* forms: every form of a signed-in page carries the session's CSRF value, compared in
  constant time;
* every page: ``Cache-Control: no-store``, a Content-Security-Policy with nothing from
  another origin, ``nosniff`` and no referrer; labels in English or Japanese
  (``?lang=ja``, remembered in a cookie);
* the stylesheet (``static/console.css``) behind the console's own static files.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from federation.web.i18n import pick_lang
from federation.web.sessions import Session, SessionStore, same_secret

__all__ = ["ConsoleCookies", "ConsoleShell", "console_csp"]

_HERE = Path(__file__).resolve().parent
#: This package, whose ``static`` folder holds the shared stylesheet.
_PACKAGE = "federation.web"


def console_csp(*, scripts: bool, data_images: bool) -> str:
    """Return a console's Content-Security-Policy: nothing from another origin, no framing.

    ``scripts``: the console's own scripts may run (else none at all); ``data_images``:
    images may also be ``data:`` URLs (charts exported by a script).
    """
    img = "'self' data:" if data_images else "'self'"
    script = "'self'" if scripts else "'none'"
    return (
        f"default-src 'self'; img-src {img}; style-src 'self'; script-src {script}; "
        "frame-ancestors 'none'; form-action 'self'"
    )


@dataclass(frozen=True)
class ConsoleCookies:
    """The names of a console's cookies (each console its own, so they never mix)."""

    session: str
    lang: str
    login: str


class ConsoleShell:
    """The sign-in, session, CSRF, label and header plumbing of one console.

    Args:
        templates_dir: the console's own templates (``base.html`` and its pages).
        strings: the console's labels per language (shared ones included).
        cookies: the console's cookie names.
        csp: the Content-Security-Policy of its pages.
        form_limit: the most bytes of a form body read.
    """

    def __init__(
        self,
        templates_dir: Path,
        strings: Mapping[str, Mapping[str, str]],
        cookies: ConsoleCookies,
        *,
        csp: str,
        form_limit: int = 200_000,
    ) -> None:
        dirs: Sequence[Path] = [templates_dir, _HERE / "templates"]
        self.templates = Jinja2Templates(directory=dirs)
        self.strings, self.cookies, self.csp = strings, cookies, csp
        self.form_limit = form_limit
        self.sessions = SessionStore()

    # -- pages ------------------------------------------------------------------------------
    def lang(self, request: Request) -> str:
        """Return the page's language: the query's, else the cookie's, else English."""
        return pick_lang(request.query_params.get("lang"), request.cookies.get(self.cookies.lang))

    def labels(self, request: Request) -> Mapping[str, str]:
        """Return the labels in the page's language."""
        return self.strings[self.lang(request)]

    def secure(self, response: Response) -> Response:
        """Add the headers every console response carries; return the response."""
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = self.csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def render(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """Render template ``name`` with the page's labels and language.

        Returns:
            The page, with the console's headers (and the language cookie when the query
            chose the language).
        """
        lang = self.lang(request)
        response = self.templates.TemplateResponse(
            request,
            name,
            {"t": self.strings[lang], "lang": lang, "path": request.url.path, **context},
            status_code=status,
        )
        if request.query_params.get("lang") == lang:
            response.set_cookie(
                self.cookies.lang, lang, max_age=365 * 86400, samesite="strict", httponly=True
            )
        self.secure(response)
        return response

    async def form(self, request: Request) -> dict[str, str]:
        """Return the request's urlencoded form (the first value of each field, size-capped)."""
        body = (await request.body())[: self.form_limit].decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    # -- sign-in and sessions -----------------------------------------------------------------
    def login_page(
        self, request: Request, status: int = 200, error: str | None = None, **context: Any
    ) -> HTMLResponse:
        """Return the sign-in page with a fresh login nonce (in the form and in a cookie)."""
        nonce = secrets.token_urlsafe(24)
        response = self.render(
            request, "login.html", status, error=error, login_nonce=nonce, **context
        )
        response.set_cookie(
            self.cookies.login,
            nonce,
            httponly=True,
            samesite="strict",
            path="/console/login",
            secure=request.url.scheme == "https",
            max_age=3600,
        )
        return response

    def login_nonce_ok(self, request: Request, form: Mapping[str, str]) -> bool:
        """Return True if the sign-in form carries the nonce of the cookie set with it."""
        cookie = request.cookies.get(self.cookies.login, "")
        return bool(cookie) and same_secret(form.get("nonce", ""), cookie)

    def sign_in(self, request: Request, to: str, token: str | None = None) -> Response:
        """Open a session for a verified sign-in and send the browser to ``to``.

        ``token`` is what the console acts with for this session, if anything.

        Returns:
            The redirect, carrying the session cookie.
        """
        response = RedirectResponse(to, status_code=303)
        response.delete_cookie(self.cookies.login, path="/console/login")
        response.set_cookie(
            self.cookies.session,
            self.sessions.create(token),
            httponly=True,
            samesite="strict",
            path="/console",
            secure=request.url.scheme == "https",
        )
        return response

    def sign_out(self, request: Request) -> Response:
        """End the request's session.

        Returns:
            The redirect to the sign-in page, clearing the session cookie.
        """
        self.sessions.drop(request.cookies.get(self.cookies.session))
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(self.cookies.session, path="/console")
        return response

    def session(self, request: Request) -> Session | None:
        """Return the request's live session, else None."""
        return self.sessions.get(request.cookies.get(self.cookies.session))

    def drop_session(self, request: Request) -> None:
        """End the request's session without answering (its sign-in no longer holds)."""
        self.sessions.drop(request.cookies.get(self.cookies.session))

    @staticmethod
    def csrf_ok(session: Session, form: Mapping[str, str]) -> bool:
        """Return True if ``form`` carries ``session``'s CSRF value (constant-time compare)."""
        return same_secret(form.get("csrf", ""), session.csrf)

    # -- static files -------------------------------------------------------------------------
    def mount_static(self, app: FastAPI, name: str, own: Path | None = None) -> None:
        """Serve ``/console/static/``: the console's own files (``own``), then the shared ones."""
        app.mount(
            "/console/static",
            StaticFiles(directory=own, packages=[(_PACKAGE, "static")]),
            name=name,
        )
