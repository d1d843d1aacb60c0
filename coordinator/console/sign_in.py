"""The console's sign-in with an API token, sign-out, and the landing page of each role."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from coordinator.console.pages import AnyRole, check_csrf, shell
from coordinator.errors import TooManyRequests, Unauthorized
from coordinator.routes.deps import authenticate_throttled

__all__ = ["router"]

router = APIRouter()

#: Where each role lands after signing in.
_HOME = {
    "researcher": "/console/jobs",
    "node_admin": "/console/node",
    "auditor": "/console/audit",
    "operator": "/console/audit",
}


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    """The sign-in form."""
    return shell(request).login_page(request)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Sign in with an API token; the token stays in the server-side session."""
    console = shell(request)
    form = await console.form(request)
    token = form.get("token", "").strip()
    t = console.labels(request)
    if not console.login_nonce_ok(request, form):
        return console.login_page(request, 403, t["login_expired"])
    try:
        await authenticate_throttled(request, request.app.state.store, token)
    except Unauthorized:
        return console.login_page(request, 401, t["bad_token"])
    except TooManyRequests as exc:  # as the API: too many bad tokens from this client
        page = console.login_page(request, 429, exc.message)
        page.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return page
    return console.sign_in(request, "/console/", token)


@router.post("/logout")
async def logout(ctx: AnyRole) -> Response:
    """End the session."""
    await check_csrf(ctx)
    return shell(ctx.request).sign_out(ctx.request)


@router.get("/")
def home(ctx: AnyRole) -> Response:
    """Send the caller to their role's page."""
    return RedirectResponse(_HOME[ctx.caller.role], status_code=303)
