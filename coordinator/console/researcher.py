"""The researcher's pages: submit a job from TOML, own jobs, a job's progress and results.

A job's page and its JSON are also open to auditors and operators, as in the API (state,
events, approvals, ε); its result and plot are the submitting researcher's only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from coordinator.console.formatting import numeric
from coordinator.console.pages import ConsoleCtx, PageRefused, Researcher, Viewer, check_csrf, page
from coordinator.errors import CATALOGUE, CoordinatorError, Forbidden, InvalidSpec, NotFound
from federation.errors import JobSpecError
from federation.spec import read_spec_text

__all__ = ["router"]

router = APIRouter()


def _researcher_page(
    ctx: ConsoleCtx, status: int = 200, spec_text: str = "", errors: dict[str, str] | None = None
) -> HTMLResponse:
    jobs = ctx.store.list_jobs(ctx.caller.id, None, 200, 0)
    return page(ctx, "researcher.html", status, jobs=jobs, spec_text=spec_text, errors=errors or {})


def _visible_job(ctx: ConsoleCtx, job_id: str) -> Any:
    """Return the job if the caller may see it.

    Raises:
        PageRefused: no such job (404), or another researcher's (403).
    """
    try:
        job, owner_id = ctx.store.get_job(job_id)
    except NotFound:
        raise PageRefused(f"no job {job_id!r}", 404) from None
    if ctx.caller.role == "researcher" and owner_id != ctx.caller.id:  # as routes/jobs.py
        raise PageRefused("this job belongs to another researcher")
    return job


@router.get("/jobs", response_class=HTMLResponse)
def researcher(ctx: Researcher) -> HTMLResponse:
    """The researcher's jobs and the submission form."""
    return _researcher_page(ctx)


@router.post("/jobs", response_class=HTMLResponse)
async def submit(ctx: Researcher) -> Response:
    """Submit a job spec pasted as TOML; errors are shown beside the field, nothing stored."""
    form = await check_csrf(ctx)
    text = form.get("spec", "")
    try:
        raw = read_spec_text(text, "toml")
    except JobSpecError as exc:
        message = f"{ctx.t['malformed_toml']}: {exc.reason}"
        return _researcher_page(ctx, 422, text, {"field": "spec", "message": message})
    try:
        job = ctx.lifecycle.submit(ctx.caller, raw)
    except (InvalidSpec, Forbidden) as exc:  # Forbidden: no registered organisation
        field = exc.field or "spec"
        message = exc.message if exc.message.startswith(field) else f"{field}: {exc.message}"
        status = 403 if isinstance(exc, Forbidden) else 422
        return _researcher_page(ctx, status, text, {"field": field, "message": message})
    return RedirectResponse(f"/console/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(ctx: Viewer, job_id: str) -> HTMLResponse:
    """A job's page: state, rounds and a polling metrics chart."""
    job = _visible_job(ctx, job_id[:64])
    return page(ctx, "job.html", job=job, events=ctx.store.events(job.id))


@router.get("/api/jobs/{job_id}")
def job_json(ctx: Viewer, job_id: str) -> JSONResponse:
    """A job's state, metrics per round and history, for the page's chart."""
    job = _visible_job(ctx, job_id[:64])
    history: list[dict[str, Any]] = []
    if job.has_result and ctx.caller.role == "researcher":  # the result is the owner's
        try:
            rounds = ctx.store.result(job.id).report.get("rounds")
        except CoordinatorError:
            rounds = None
        if isinstance(rounds, list):
            for i, r in enumerate(rounds, 1):
                if isinstance(r, dict):
                    m = r.get("metrics") if isinstance(r.get("metrics"), dict) else r
                    history.append({"round": r.get("round", i), "metrics": numeric(m)})
    body = {
        "job": job.model_dump(mode="json"),
        "metrics": numeric(job.metrics),
        "history": history,
        "events": [e.model_dump(mode="json") for e in ctx.store.events(job.id)],
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}/result.json")
def result_json(ctx: Researcher, job_id: str) -> Response:
    """Download a job's result (as routes/jobs.py: the submitting researcher only)."""
    job = _visible_job(ctx, job_id[:64])
    try:
        result = ctx.store.result(job.id)
    except CoordinatorError as exc:  # no result yet, or held by a node's release review
        raise PageRefused(exc.message, CATALOGUE.get(exc.code, 400)) from None
    return Response(
        result.model_dump_json(indent=2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{job.id}-result.json"'},
    )


@router.get("/jobs/{job_id}/plot.png")
def result_plot(ctx: Researcher, job_id: str) -> Response:
    """Download a job's report plot (the submitting researcher only)."""
    job = _visible_job(ctx, job_id[:64])
    try:
        png = ctx.store.plot(job.id)
    except CoordinatorError as exc:
        raise PageRefused(exc.message, CATALOGUE.get(exc.code, 400)) from None
    return Response(
        png,
        media_type="image/png",
        headers={"Content-Disposition": f'attachment; filename="{job.id}-plot.png"'},
    )
