"""Jobs waiting for this node's decision: what they would use here; approve or reject."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from nodes.admin_models import ApproveBody, DecisionPublic, RejectBody, WaitingJob
from nodes.admin_routes.deps import ACTION, AUTH, COORD, Admin, JobId

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=AUTH)


@router.get("/waiting", response_model=list[WaitingJob], responses=COORD)
def waiting(admin: Admin) -> list[WaitingJob]:
    """Jobs waiting for this node's decision, with what they would use here."""
    return admin.waiting()


@router.get("/{job_id}", response_model=WaitingJob, responses=ACTION)
def job(admin: Admin, job_id: JobId) -> WaitingJob:
    """One waiting job: purpose, features, ε, subjects after consent, the policy's verdict."""
    return admin.job(job_id)


@router.post("/{job_id}/approve", response_model=DecisionPublic, responses=ACTION)
def approve(
    admin: Admin, job_id: JobId, body: Annotated[ApproveBody | None, Body()] = None
) -> DecisionPublic:
    """Approve a job for this node: reserves its budget and posts the approval."""
    return admin.approve(job_id, body.reason if body else None)


@router.post("/{job_id}/reject", response_model=DecisionPublic, responses=ACTION)
def reject(admin: Admin, job_id: JobId, body: RejectBody) -> DecisionPublic:
    """Reject a job for this node, with a reason (shown to the researcher)."""
    return admin.reject(job_id, body.reason)
