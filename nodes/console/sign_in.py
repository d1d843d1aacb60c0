"""The node console's sign-in with the node admin's token, and sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from federation.web import same_secret
from nodes.console.pages import SignedForm, SignedIn, console_state

__all__ = ["router"]

router = APIRouter()


def _login_page(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    console = console_state(request)
    return console.shell.login_page(
        request, status, error, node=console.admin.node, signed_in=False, csrf="", flash=[]
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    """The sign-in form."""
    return _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    """Sign in with the node admin's token (compared in constant time)."""
    console = console_state(request)
    shell = console.shell
    form = await shell.form(request)
    t = shell.labels(request)
    if not shell.login_nonce_ok(request, form):
        return _login_page(request, 403, t["login_expired"])
    if not same_secret(form.get("token", "").strip(), console.token):
        return _login_page(request, 401, t["bad_token"])
    return shell.sign_in(request, "/console/jobs")


@router.post("/logout")
async def logout(request: Request, _form: SignedForm) -> Response:
    """End the session."""
    return console_state(request).shell.sign_out(request)


@router.get("/")
def home(_session: SignedIn) -> Response:
    """The console starts at the jobs page."""
    return RedirectResponse("/console/jobs", status_code=303)
