"""Jobs waiting for this node (what they would use, the policy's verdict) and held results.

The admin approves or rejects a job, and releases or withholds a result held for the
node's review; rejecting and withholding need a reason.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from federation.linkage.reveals import REVEALS
from federation.web import Session
from nodes.admin_actions import AdminError
from nodes.console.pages import SignedForm, SignedIn, console_state, render

__all__ = ["router"]

router = APIRouter()

#: What the flash message says after each action.
_DONE = {"approve": "approved", "reject": "rejected", "release": "released"}


def _jobs_page(
    request: Request,
    session: Session,
    status: int = 200,
    errors: dict[str, dict[str, str]] | None = None,
    values: dict[str, dict[str, str]] | None = None,
) -> HTMLResponse:
    admin = console_state(request).admin
    down: str | None = None
    jobs: list[Any] = []
    held: list[Any] = []
    try:
        jobs = admin.waiting()
        held = admin.held()
    except AdminError as exc:
        if exc.status not in (502, 503):
            raise
        down = exc.message
        status = exc.status
    return render(
        request,
        "jobs.html",
        status,
        session,
        node_status=admin.status(),
        jobs=jobs,
        held=held,
        down=down,
        errors=errors or {},
        values=values or {},
        reveals=REVEALS,
    )


@router.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request, session: SignedIn) -> HTMLResponse:
    """The jobs awaiting this node's decision and the results held for its review."""
    return _jobs_page(request, session)


async def _act(
    request: Request, signed: tuple[Session, dict[str, str]], job_id: str, action: str
) -> Response:
    session, form = signed
    console = console_state(request)
    t = console.shell.labels(request)
    reason = form.get("reason", "").strip()
    required = {"reject": "reason_needed", "withhold": "withhold_reason_needed"}.get(action)
    if required and not reason:
        errors = {job_id: {"action": action, "reason": t[required]}}
        return _jobs_page(request, session, 422, errors=errors)
    try:
        if action == "approve":
            console.admin.approve(job_id, reason or None)
        elif action == "reject":
            console.admin.reject(job_id, reason)
        else:
            console.admin.review(job_id, action, reason or None)
    except AdminError as exc:
        errors = {job_id: {"action": action, "reason": exc.message}}
        values = {job_id: {"action": action, "reason": reason}}
        return _jobs_page(request, session, exc.status, errors=errors, values=values)
    session.flash.append(("ok", f"{t[_DONE.get(action, 'withheld')]} {job_id}"))
    return RedirectResponse("/console/jobs", status_code=303)


@router.post("/jobs/{job_id}/approve")
async def approve(request: Request, job_id: str, signed: SignedForm) -> Response:
    """Approve a job (a reason is optional)."""
    return await _act(request, signed, job_id, "approve")


@router.post("/jobs/{job_id}/reject")
async def reject(request: Request, job_id: str, signed: SignedForm) -> Response:
    """Reject a job with a reason."""
    return await _act(request, signed, job_id, "reject")


@router.post("/releases/{job_id}/release")
async def release(request: Request, job_id: str, signed: SignedForm) -> Response:
    """Release a held result (a reason is optional)."""
    return await _act(request, signed, job_id, "release")


@router.post("/releases/{job_id}/withhold")
async def withhold(request: Request, job_id: str, signed: SignedForm) -> Response:
    """Withhold a held result with a reason."""
    return await _act(request, signed, job_id, "withhold")
