"""Researcher routes: submit jobs, follow them, fetch results, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from coordinator.errors import Forbidden
from coordinator.routes.deps import LifecycleDep, Researcher, StoreDep, Viewer
from coordinator.schemas import JobSubmit, PrincipalPublic, ResultPublic, Role
from coordinator.store import Store
from federation.api_models import JobEventPublic, JobPublic, JobState

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobPath = Annotated[str, Path(min_length=1, max_length=64)]


def _visible(store: Store, caller: PrincipalPublic, job_id: str) -> JobPublic:
    job, owner_id = store.get_job(job_id)
    if caller.role == Role.RESEARCHER and owner_id != caller.id:
        raise Forbidden("this job belongs to another researcher")
    return job


@router.post("", status_code=201)
def submit_job(body: JobSubmit, caller: Researcher, lifecycle: LifecycleDep) -> JobPublic:
    """Submit a job spec; it is validated (422 naming the field) and sent for approval."""
    return lifecycle.submit(caller, body.spec)


@router.get("")
def list_jobs(
    caller: Viewer,
    store: StoreDep,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[JobPublic]:
    """List jobs, newest first: a researcher's own, or all for auditors and the operator."""
    owner = caller.id if caller.role == Role.RESEARCHER else None
    return store.list_jobs(owner, state, limit, offset)


@router.get("/{job_id}")
async def get_job(job_id: JobPath, caller: Viewer, store: StoreDep) -> JobPublic:
    """A job's status: state, reason, round k of N, latest metrics, approvals."""
    if store.reads_are_local:  # SQLite (WAL): two indexed reads, cheaper than a thread hop
        return _visible(store, caller, job_id)
    return await run_in_threadpool(_visible, store, caller, job_id)


@router.get("/{job_id}/events")
def job_events(job_id: JobPath, caller: Viewer, store: StoreDep) -> list[JobEventPublic]:
    """A job's history: every state it entered, when and why."""
    _visible(store, caller, job_id)
    return store.events(job_id)


@router.get("/{job_id}/result")
def job_result(job_id: JobPath, caller: Researcher, store: StoreDep) -> ResultPublic:
    """A finished job's result: report, aggregate model, ε spent per node.

    Only the researcher who submitted the job reads it; auditors and the operator see the
    job's metadata (``GET /jobs/{id}``, its events and approvals) and the ε each node spent
    (``GET /audit/epsilon``), never the model or the report.
    """
    _visible(store, caller, job_id)
    return store.result(job_id)


@router.get(
    "/{job_id}/result/plot.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def job_plot(job_id: JobPath, caller: Researcher, store: StoreDep) -> Response:
    """The result report's plot (PNG); only the submitting researcher reads it."""
    _visible(store, caller, job_id)
    return Response(store.plot(job_id), media_type="image/png")


@router.post("/{job_id}/cancel")
def cancel_job(job_id: JobPath, caller: Researcher, lifecycle: LifecycleDep) -> JobPublic:
    """Cancel one's own job; a running job stops at its next round."""
    _visible(lifecycle.store, caller, job_id)
    return lifecycle.cancel(job_id, by=caller.name)
