"""The coordinator's store as one object: every part of its persistent state, one front door."""

from __future__ import annotations

from coordinator.store.approvals import ApprovalStore
from coordinator.store.jobs import JobStore
from coordinator.store.nodes import NodeStore
from coordinator.store.organisations import OrganisationStore
from coordinator.store.principals import PrincipalStore
from coordinator.store.release import ReleaseStore
from coordinator.store.results import ResultStore

__all__ = ["Store"]


class Store(
    PrincipalStore,
    OrganisationStore,
    NodeStore,
    JobStore,
    ApprovalStore,
    ResultStore,
    ReleaseStore,
):
    """All persistent state of the coordinator, behind typed methods.

    Each part manages one thing (principals and tokens, organisations, nodes, jobs and
    their states, approvals, results, release review) and shares the engine, sessions and
    clock of :class:`~coordinator.store.base.StoreBase`; see that module for the
    transaction rules.

    Args:
        engine: a migrated engine (see :func:`coordinator.db.migrate`).
        hasher: the keyed hasher of API tokens.
        verifier: checks and briefly caches verified tokens.
        clock: returns "now" (tests pass a fixed clock).
    """
