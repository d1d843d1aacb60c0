"""Node audit routes: a node's service pushes its ledger, head, consent counts and budget.

Only the node's own service (a ``node_service`` token bound to it) may push for a node or
see what the coordinator holds of its ledger: a human admin's token is refused there (403);
the node's service and its admins may read its budget. Auditors read what was pushed under
``/audit/nodes`` (:mod:`.audit`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from coordinator.audit_store import AuditStore
from coordinator.routes.deps import NodeCaller, NodeService, own_node
from federation.audit_models import (
    AuditReceipt,
    AuditSnapshot,
    AuditSyncState,
    LedgerEntryChunk,
    NodeBudgetPublic,
)

__all__ = ["AuditDep", "audit_store", "router"]

router = APIRouter(tags=["node audit"])

NodePath = Annotated[str, Path(min_length=1, max_length=64)]


def audit_store(request: Request) -> AuditStore:
    """Return the app's audit store (made on first use from the coordinator's store)."""
    audit: AuditStore | None = getattr(request.app.state, "audit_store", None)
    if audit is None:
        store = request.app.state.store
        audit = AuditStore(store.sessions, store.clock)
        request.app.state.audit_store = audit
    return audit


AuditDep = Annotated[AuditStore, Depends(audit_store)]


@router.get("/nodes/{name}/audit/state")
def audit_state(name: NodePath, caller: NodeService, audit: AuditDep) -> AuditSyncState:
    """How many of the node's ledger entries the coordinator holds verified and staged."""
    own_node(caller, name)
    return audit.sync_state(name)


@router.post("/nodes/{name}/audit/entries")
def audit_entries(
    name: NodePath, body: LedgerEntryChunk, caller: NodeService, audit: AuditDep
) -> AuditSyncState:
    """Upload ledger entries the coordinator lacks (as stored; verified with the next head)."""
    own_node(caller, name)
    return audit.stage(name, body)


@router.put("/nodes/{name}/audit/snapshot")
def audit_snapshot(
    name: NodePath, body: AuditSnapshot, caller: NodeService, audit: AuditDep
) -> AuditReceipt:
    """Push the node's signed head (verified now), consent counts and budget."""
    own_node(caller, name)
    return audit.receive(name, body)


@router.get("/nodes/{name}/budget")
def node_budget(name: NodePath, caller: NodeCaller, audit: AuditDep) -> NodeBudgetPublic:
    """The node's privacy budget per domain and period, as its service last pushed it."""
    own_node(caller, name)
    return audit.budget(name)[0]
