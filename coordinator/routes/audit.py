"""Auditor routes (read-only): jobs, approvals, release decisions, ε per node, nodes' ledgers.

Each node's mirrored ledger (verified heads, checks, entries, inclusion proofs), consent counts
and budget are as the nodes' services pushed them (:mod:`.node_audit`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from coordinator.routes.deps import Auditor, StoreDep
from coordinator.routes.node_audit import AuditDep
from coordinator.schemas import EpsilonByNode
from federation.api_models import ApprovalPublic, JobPublic, JobState, ReleaseDecisionPublic
from federation.audit_models import (
    MAX_LEDGER_SIZE,
    InclusionProofPublic,
    LedgerPage,
    NodeBudgetPublic,
    NodeConsentPublic,
    NodeLedgerStatus,
    VerificationPublic,
)

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


# -- nodes' ledgers, consent summaries and budgets (pushed by the nodes' services) ---------------
NodePath = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/nodes")
def audit_nodes(_: Auditor, audit: AuditDep) -> list[NodeLedgerStatus]:
    """Each node's latest verified signed head, its last check (when, result) and its flag."""
    return audit.statuses()


@router.get("/nodes/{name}/checks")
def audit_node_checks(
    name: NodePath,
    _: Auditor,
    audit: AuditDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[VerificationPublic]:
    """The coordinator's checks of the node's signed heads, newest first (failures kept)."""
    return audit.checks(name, limit)


@router.get("/nodes/{name}/ledger")
def audit_node_ledger(
    name: NodePath,
    _: Auditor,
    audit: AuditDep,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="Entries at or after this time.")] = None,
    until: Annotated[datetime | None, Query(description="Entries before this time.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_LEDGER_SIZE)] = 0,
    newest_first: Annotated[bool, Query()] = False,
) -> LedgerPage:
    """The node's verified ledger entries, filtered by kind and time, a page at a time."""
    return audit.entries(name, kind, since, until, limit, offset, newest_first)


@router.get("/nodes/{name}/ledger/{index}/proof")
def audit_node_proof(
    name: NodePath,
    index: Annotated[int, Path(ge=0, le=MAX_LEDGER_SIZE)],
    _: Auditor,
    audit: AuditDep,
) -> InclusionProofPublic:
    """An entry's bytes and its RFC 9162 inclusion proof against the latest verified head."""
    return audit.inclusion(name, index)


@router.get("/consent")
def audit_consent(_: Auditor, audit: AuditDep) -> list[NodeConsentPublic]:
    """Every node's consent counts per purpose category (small counts suppressed by the node)."""
    return audit.consent()


@router.get("/nodes/{name}/consent")
def audit_node_consent(name: NodePath, _: Auditor, audit: AuditDep) -> NodeConsentPublic:
    """One node's consent counts per purpose category and domain."""
    return audit.consent(name)[0]


@router.get("/budget")
def audit_budget(_: Auditor, audit: AuditDep) -> list[NodeBudgetPublic]:
    """Every node's privacy budget per domain and period."""
    return audit.budget()


@router.get("/nodes/{name}/budget")
def audit_node_budget(name: NodePath, _: Auditor, audit: AuditDep) -> NodeBudgetPublic:
    """One node's privacy budget per domain and period."""
    return audit.budget(name)[0]
