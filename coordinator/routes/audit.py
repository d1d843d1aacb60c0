"""Auditor routes (read-only): jobs, approvals, release decisions, privacy spent per node."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from coordinator.routes.deps import Auditor, StoreDep
from coordinator.schemas import EpsilonByNode
from federation.api_models import ApprovalPublic, JobPublic, JobState, ReleaseDecisionPublic

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("/jobs")
def audit_jobs(
    _: Auditor,
    store: StoreDep,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[JobPublic]:
    """Every job, newest first."""
    return store.list_jobs(None, state, limit, offset)


@router.get("/approvals")
def audit_approvals(
    _: Auditor,
    store: StoreDep,
    job_id: Annotated[str | None, Query(max_length=64)] = None,
    node: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ApprovalPublic]:
    """Every node's decision on every job (who, when, why)."""
    return store.approvals(job_id, node)


@router.get("/releases")
def audit_releases(
    _: Auditor,
    store: StoreDep,
    job_id: Annotated[str | None, Query(max_length=64)] = None,
    node: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ReleaseDecisionPublic]:
    """Every reviewer's release decision on every held result (who, when, what, why)."""
    return store.release_decisions(job_id, node)


@router.get("/epsilon")
def audit_epsilon(_: Auditor, store: StoreDep) -> list[EpsilonByNode]:
    """ε spent per node, summed over the finished jobs' results."""
    return store.epsilon_by_node()
