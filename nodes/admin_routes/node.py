"""The node's own records: its privacy budget, its policy, its ledger (head, signing, check)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from consent.signing import SignedTreeHead
from nodes.admin_models import JobReservation, LedgerHead, LedgerVerification, PolicyPublic
from nodes.admin_routes.deps import AUTH, ERRORS, Admin
from policies import BudgetStatus

__all__ = ["router"]

router = APIRouter(dependencies=AUTH, responses=ERRORS)


@router.get("/budget", response_model=list[BudgetStatus], tags=["node"])
def budget(
    admin: Admin,
    at: Annotated[
        AwareDatetime | None,
        Query(description="A time (with zone) in the period to show; default now."),
    ] = None,
) -> list[BudgetStatus]:
    """The privacy budget per domain for one period: allowed, spent, reserved, left."""
    return admin.budget(at)


@router.get("/budget/jobs", response_model=list[JobReservation], tags=["node"])
def budget_jobs(
    admin: Admin,
    limit: Annotated[int, Query(ge=1, le=1000, description="How many jobs at most.")] = 50,
) -> list[JobReservation]:
    """Each job's reservation, newest first, with when and why it was released.

    For a failed job the reason says which of its rounds stay charged here, and why.
    """
    return [JobReservation.of(r) for r in admin.service.point.budget().reservations(limit)]


@router.get("/policy", response_model=PolicyPublic, tags=["node"])
def policy(admin: Admin) -> PolicyPublic:
    """The node policy in force (TOML and parsed)."""
    return admin.policy()


@router.get("/ledger/head", response_model=LedgerHead, tags=["ledger"])
def ledger_head(admin: Admin) -> LedgerHead:
    """The ledger's size and its latest signed head (signs nothing)."""
    return admin.ledger_head()


@router.post("/ledger/head", response_model=SignedTreeHead, tags=["ledger"])
def sign_head(admin: Admin) -> SignedTreeHead:
    """Sign the ledger's current head (for auditors) and return it."""
    return admin.sign_head()


@router.get("/ledger/verify", response_model=LedgerVerification, tags=["ledger"])
def verify(admin: Admin) -> LedgerVerification:
    """Verify every entry, Merkle node and signed head of the ledger with the node's key."""
    return admin.verify()
