"""Operator routes: principals, their tokens, and researchers' organisations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from coordinator.routes.deps import Caller, Operator, StoreDep
from coordinator.schemas import (
    OrganisationCreate,
    OrganisationMembership,
    OrganisationPublic,
    PrincipalCreate,
    PrincipalCreated,
    PrincipalPublic,
    TokenIssued,
    TokenPublic,
)

router = APIRouter(tags=["principals"])

PrincipalId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/me")
def who_am_i(caller: Caller) -> PrincipalPublic:
    """Return the caller's own principal."""
    return caller


@router.post("/principals", status_code=201)
def create_principal(body: PrincipalCreate, _: Operator, store: StoreDep) -> PrincipalCreated:
    """Register a principal and issue its first token (shown once, never again)."""
    principal, token = store.create_principal(body)
    return PrincipalCreated(principal=principal, token=token)


@router.get("/principals")
def list_principals(_: Operator, store: StoreDep) -> list[PrincipalPublic]:
    """List every principal."""
    return store.list_principals()


@router.post("/principals/{principal_id}/tokens", status_code=201)
def issue_token(principal_id: PrincipalId, _: Operator, store: StoreDep) -> TokenIssued:
    """Issue another token for a principal (shown once)."""
    return store.issue_token(principal_id)


@router.delete("/tokens/{prefix}")
def revoke_token(
    prefix: Annotated[str, Path(min_length=1, max_length=32)], _: Operator, store: StoreDep
) -> TokenPublic:
    """Revoke a token by its public prefix; it stops working at once."""
    return store.revoke_token(prefix)


@router.post("/organisations", status_code=201)
def register_organisation(
    body: OrganisationCreate, _: Operator, store: StoreDep
) -> OrganisationPublic:
    """Register an organisation, its type and the projects it may run.

    Its researchers' jobs carry this identity as their requester; nodes' policies evaluate
    it, never what a spec claims.
    """
    return store.register_organisation(body)


@router.get("/organisations")
def list_organisations(_: Operator, store: StoreDep) -> list[OrganisationPublic]:
    """List the registered organisations."""
    return store.list_organisations()


@router.put("/principals/{principal_id}/organisation")
def set_organisation(
    principal_id: PrincipalId, body: OrganisationMembership, _: Operator, store: StoreDep
) -> PrincipalPublic:
    """Give a researcher registered without an organisation its organisation (once)."""
    store.set_organisation(principal_id, body.organisation)
    return next(p for p in store.list_principals() if p.id == principal_id)
