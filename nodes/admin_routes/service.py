"""The node service's own state: health (no auth) and status."""

from __future__ import annotations

from fastapi import APIRouter

from nodes.admin_models import Health, Status
from nodes.admin_routes.deps import AUTH, ERRORS, Admin

__all__ = ["router"]

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health)
def health(admin: Admin) -> Health:
    """The service answers (no auth, no secret, no coordinator call)."""
    return Health(node=admin.node)


@router.get("/status", response_model=Status, dependencies=AUTH, responses=ERRORS)
def status(admin: Admin) -> Status:
    """The node's last poll of the coordinator (time, error) and its SuperNode's status."""
    return admin.status()
