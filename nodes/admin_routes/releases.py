"""Results held for this node's release review: release or withhold them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from federation.api_models import ReleaseView
from nodes.admin_models import ReleaseBody, WithholdBody
from nodes.admin_routes.deps import ACTION, AUTH, COORD, Admin, JobId

__all__ = ["router"]

router = APIRouter(prefix="/releases", tags=["releases"], dependencies=AUTH)


@router.get("/held", response_model=list[ReleaseView], responses=COORD)
def held(admin: Admin) -> list[ReleaseView]:
    """Results held for this node's release review (summaries, never the data)."""
    return admin.held()


@router.post("/{job_id}/release", response_model=ReleaseView, responses=ACTION)
def release(
    admin: Admin, job_id: JobId, body: Annotated[ReleaseBody | None, Body()] = None
) -> ReleaseView:
    """Release a held result; the node's ledger records the decision."""
    return admin.review(job_id, "release", body.reason if body else None)


@router.post("/{job_id}/withhold", response_model=ReleaseView, responses=ACTION)
def withhold(admin: Admin, job_id: JobId, body: WithholdBody) -> ReleaseView:
    """Withhold a held result, with a reason; the node's ledger records the decision."""
    return admin.review(job_id, "withhold", body.reason)
