"""What auditors read of nodes' mirrored ledgers: statuses, checks, entries, proofs, budgets.

Only what :class:`~coordinator.audit_store.AuditStore` verified is shown: entries up to the
latest verified head, with inclusion proofs against it.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.audit_tables import (
    NodeAuditState,
    NodeLedgerCheck,
    NodeLedgerEntry,
    NodeLedgerTree,
)
from coordinator.db import aware
from coordinator.errors import NotFound
from coordinator.models import Node
from federation.audit_checks import (
    PerfectHashes,
    head_timestamp_text,
    inclusion_path,
    public_key_id,
)
from federation.audit_models import (
    LEDGER_TIME_FORMAT,
    BudgetRow,
    ConsentSummary,
    InclusionProofPublic,
    LedgerEntryPublic,
    LedgerPage,
    NodeBudgetPublic,
    NodeConsentPublic,
    NodeLedgerStatus,
    SignedTreeHead,
    VerificationPublic,
)
from federation.errors import AuditCheckError

__all__ = ["AuditViews"]


def as_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC (a naive value, as SQLite returns them, is taken as UTC)."""
    return aware(value).astimezone(UTC)


def _check_public(c: NodeLedgerCheck) -> VerificationPublic:
    """Return a stored check's public view."""
    return VerificationPublic(
        id=c.id,
        node=c.node,
        tree_size=c.tree_size,
        root_hash=c.root_hash,
        head_timestamp=as_utc(c.head_timestamp),
        key_id=c.key_id,
        result=c.result,  # type: ignore[arg-type]
        reason=c.reason,
        flagged=c.flagged,
        first_checked_at=as_utc(c.first_checked_at),
        last_checked_at=as_utc(c.last_checked_at),
        checks=c.checks,
    )


def ledger_time(value: datetime) -> str:
    """Return a stored time in the ledger's text form (what its entries carry)."""
    return as_utc(value).strftime(LEDGER_TIME_FORMAT)


class AuditViews:
    """Nodes' mirrored ledgers as auditors read them, and the look-ups the store shares.

    Args:
        sessions: the coordinator's session factory (a migrated database).
        clock: returns "now" (tests pass a fixed clock).
    """

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self.sessions = sessions
        self.clock = clock
        self._lock = threading.Lock()  # one writer per process (the database serialises others)

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _node(s: Session, name: str) -> Node:
        node = s.get(Node, name)
        if node is None:
            raise NotFound(f"name: no node named {name!r}", field="name")
        return node

    @staticmethod
    def _leaf(s: Session, name: str, index: int) -> bytes:
        leaf = s.scalar(
            select(NodeLedgerEntry.leaf).where(
                NodeLedgerEntry.node == name, NodeLedgerEntry.idx == index
            )
        )
        if leaf is None:
            raise NotFound(f"index: node {name} has no mirrored entry {index}", field="index")
        return bytes(leaf)

    def _perfect(self, s: Session, name: str, level: int, pos: int) -> bytes:
        if level == 0:
            return self._leaf(s, name, pos)
        h = s.scalar(
            select(NodeLedgerTree.hash).where(
                NodeLedgerTree.node == name,
                NodeLedgerTree.level == level,
                NodeLedgerTree.pos == pos,
            )
        )
        if h is None:
            raise NotFound(f"node {name}'s mirrored tree lacks subtree ({level}, {pos})")
        return bytes(h)

    def _perfect_hashes(self, s: Session, name: str) -> PerfectHashes:
        """Return the look-up of node ``name``'s stored perfect subtrees (cached per call)."""
        cache: dict[tuple[int, int], bytes] = {}

        def perfect(level: int, pos: int) -> bytes:
            key = (level, pos)
            if key not in cache:
                cache[key] = self._perfect(s, name, level, pos)
            return cache[key]

        return perfect

    # -- what auditors read ----------------------------------------------------------------------
    def statuses(self) -> list[NodeLedgerStatus]:
        """Return every registered node's verified head, last check and flag, by name."""
        with self.sessions() as s:
            nodes = s.scalars(select(Node).order_by(Node.name)).all()
            states = {st.node: st for st in s.scalars(select(NodeAuditState))}
            last_ids = dict(
                s.execute(
                    select(NodeLedgerCheck.node, func.max(NodeLedgerCheck.id)).group_by(
                        NodeLedgerCheck.node
                    )
                ).all()
            )
            wanted = set(last_ids.values()) | {
                st.head_check_id for st in states.values() if st.head_check_id
            }
            checks = {
                c.id: c
                for c in s.scalars(select(NodeLedgerCheck).where(NodeLedgerCheck.id.in_(wanted)))
            }
            flagged = set(
                s.scalars(
                    select(NodeLedgerCheck.node).where(NodeLedgerCheck.flagged.is_(True)).distinct()
                )
            )
            out = []
            for n in nodes:
                st = states.get(n.name)
                head_check = checks.get(st.head_check_id) if st and st.head_check_id else None
                last = checks.get(last_ids.get(n.name, -1))
                try:
                    kid = public_key_id(n.public_key_pem) if n.public_key_pem else None
                except AuditCheckError:
                    kid = None
                out.append(
                    NodeLedgerStatus(
                        node=n.name,
                        public_key_id=kid,
                        head=SignedTreeHead.model_validate_json(head_check.head)
                        if head_check
                        else None,
                        verified_size=st.verified_size if st else 0,
                        last_check=_check_public(last) if last else None,
                        flagged=n.name in flagged,
                        snapshot_at=aware(st.snapshot_at) if st else None,
                    )
                )
            return out

    def status(self, name: str) -> NodeLedgerStatus:
        """Return one node's verified head, last check and flag.

        Raises:
            NotFound: no such node.
        """
        for st in self.statuses():
            if st.node == name:
                return st
        raise NotFound(f"name: no node named {name!r}", field="name")

    def checks(self, name: str, limit: int = 50) -> list[VerificationPublic]:
        """Return the node's latest checks, newest first.

        Raises:
            NotFound: no such node.
        """
        with self.sessions() as s:
            self._node(s, name)
            rows = s.scalars(
                select(NodeLedgerCheck)
                .where(NodeLedgerCheck.node == name)
                .order_by(NodeLedgerCheck.id.desc())
                .limit(limit)
            )
            return [_check_public(c) for c in rows]

    def entries(
        self,
        name: str,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
        newest_first: bool = False,
    ) -> LedgerPage:
        """Return a page of the node's verified entries, filtered by kind and time.

        Raises:
            NotFound: no such node.
        """
        with self.sessions() as s:
            self._node(s, name)
            state = s.get(NodeAuditState, name)
            size = state.verified_size if state else 0
            where = [NodeLedgerEntry.node == name, NodeLedgerEntry.idx < size]
            if kind:
                where.append(NodeLedgerEntry.kind == kind)
            if since is not None:
                where.append(NodeLedgerEntry.at >= as_utc(since))
            if until is not None:
                where.append(NodeLedgerEntry.at < as_utc(until))
            total = int(
                s.scalar(select(func.count()).select_from(NodeLedgerEntry).where(*where)) or 0
            )
            order = NodeLedgerEntry.idx.desc() if newest_first else NodeLedgerEntry.idx
            rows = s.scalars(
                select(NodeLedgerEntry).where(*where).order_by(order).limit(limit).offset(offset)
            ).all()
            kinds = sorted(
                s.scalars(
                    select(NodeLedgerEntry.kind)
                    .where(NodeLedgerEntry.node == name, NodeLedgerEntry.idx < size)
                    .distinct()
                )
            )
            entries = []
            for r in rows:
                try:
                    payload = json.loads(bytes(r.data))["payload"] if r.data else {}
                except (ValueError, KeyError, TypeError):
                    payload = {}
                entries.append(
                    LedgerEntryPublic(
                        index=r.idx,
                        kind=r.kind,
                        at=as_utc(r.at),
                        leaf_hash=bytes(r.leaf).hex(),
                        payload=payload if isinstance(payload, dict) else {},
                        withheld=not r.data,
                    )
                )
            return LedgerPage(
                node=name,
                tree_size=size,
                total=total,
                offset=offset,
                limit=limit,
                kinds=kinds,
                entries=entries,
            )

    def inclusion(self, name: str, index: int) -> InclusionProofPublic:
        """Return entry ``index`` with its inclusion proof against the latest verified head.

        Raises:
            NotFound: no such node, or the entry is not among the verified ones.
        """
        with self.sessions() as s:
            node = self._node(s, name)
            state = s.get(NodeAuditState, name)
            size = state.verified_size if state else 0
            if state is None or state.head_check_id is None or not 0 <= index < size:
                raise NotFound(
                    f"index: entry {index} is not among node {name}'s {size} verified entries",
                    field="index",
                )
            check = s.get(NodeLedgerCheck, state.head_check_id)
            row = s.get(NodeLedgerEntry, (name, index))
            if check is None or row is None:
                raise NotFound(f"index: node {name}'s mirror lacks entry {index}", field="index")
            head = SignedTreeHead.model_validate_json(check.head)
            proof = inclusion_path(index, size, self._perfect_hashes(s, name))
            return InclusionProofPublic(
                node=name,
                index=index,
                tree_size=size,
                data=base64.b64encode(bytes(row.data)).decode("ascii") if row.data else None,
                leaf_hash=bytes(row.leaf).hex(),
                proof=proof,
                head=head,
                head_timestamp_text=head_timestamp_text(head),
                public_key_pem=node.public_key_pem,
            )

    def _states(self, s: Session, name: str | None) -> list[tuple[str, NodeAuditState | None]]:
        """Return each node's name with its audit state (None: never pushed), by name.

        Raises:
            NotFound: ``name`` is given and no such node is registered.
        """
        names = [self._node(s, name).name] if name else list(s.scalars(select(Node.name)))
        states = {st.node: st for st in s.scalars(select(NodeAuditState))}
        return [(n, states.get(n)) for n in sorted(names)]

    def consent(self, name: str | None = None) -> list[NodeConsentPublic]:
        """Return the consent summary of one node (or of every node), by name.

        Raises:
            NotFound: no such node.
        """
        with self.sessions() as s:
            return [
                NodeConsentPublic(
                    node=n,
                    received_at=aware(st.snapshot_at) if st else None,
                    summary=ConsentSummary.model_validate(st.consent)
                    if st and st.consent
                    else None,
                )
                for n, st in self._states(s, name)
            ]

    def budget(self, name: str | None = None) -> list[NodeBudgetPublic]:
        """Return the budget of one node (or of every node), by name.

        Raises:
            NotFound: no such node.
        """
        with self.sessions() as s:
            return [
                NodeBudgetPublic(
                    node=n,
                    received_at=aware(st.snapshot_at) if st and st.budget is not None else None,
                    rows=[BudgetRow.model_validate(r) for r in (st.budget or [])] if st else [],
                )
                for n, st in self._states(s, name)
            ]
