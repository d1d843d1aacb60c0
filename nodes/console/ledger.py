"""The policy in force, and the node's ledger: its signed head, signing a new one, verifying."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nodes.admin_actions import AdminError
from nodes.console.pages import SignedForm, SignedIn, console_state, render

__all__ = ["router"]

router = APIRouter()


@router.get("/policy", response_class=HTMLResponse)
def policy(request: Request, session: SignedIn) -> HTMLResponse:
    """The node's policy, as a summary and as its TOML."""
    try:
        public = console_state(request).admin.policy()
    except AdminError as exc:
        return render(request, "error.html", exc.status, session, message=exc.message)
    return render(request, "policy.html", 200, session, p=public.policy, toml=public.toml)


@router.get("/ledger", response_class=HTMLResponse)
def ledger(request: Request, session: SignedIn) -> HTMLResponse:
    """The ledger's head; ``?verify=1`` verifies the whole ledger first."""
    admin = console_state(request).admin
    verification = None
    if request.query_params.get("verify"):
        try:
            verification = admin.verify()
        except AdminError as exc:
            return render(request, "error.html", exc.status, session, message=exc.message)
    return render(
        request, "ledger.html", 200, session, head=admin.ledger_head(), verification=verification
    )


@router.post("/ledger/sign")
async def sign(request: Request, signed: SignedForm) -> Response:
    """Sign a new ledger head."""
    session, _ = signed
    t = console_state(request).shell.labels(request)
    try:
        head = console_state(request).admin.sign_head()
    except AdminError as exc:
        return render(request, "error.html", exc.status, session, message=exc.message)
    session.flash.append(("ok", f"{t['signed']} ({t['tree_size']} {head.tree_size})"))
    return RedirectResponse("/console/ledger", status_code=303)
