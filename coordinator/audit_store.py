"""Nodes' audit snapshots at the coordinator: mirrored ledgers, their verification, and views.

A node's service pushes its ledger entries, its latest signed tree head, its consent summary
and its budget (:mod:`federation.audit_models`). :meth:`AuditStore.receive` verifies the head
before anything it covers becomes visible to auditors:

1. the Ed25519 signature against the node's registered ledger key (and the same key as the
   head verified before);
2. the head neither covers fewer entries than the verified head nor carries an older time,
   and at the same size has the same root;
3. the node's RFC 9162 consistency proof from the verified head to the new one;
4. every new entry's own fields and hash chain, then the root recomputed here over the
   mirrored leaves (stored subtrees for the verified part, the new leaves hashed here) must
   equal the head's root.

Every outcome is recorded (``node_ledger_checks``) with the time it was checked; a failure is
kept and shown, never dropped, and the staged entries it concerned are discarded so the node
uploads them again. A failure that shows the node altered history it had signed (2, 3, 4) is
*flagged*. Repeats of one outcome for one head are merged into one row (a count and the last
time) so a node polling every few seconds does not grow the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from coordinator.audit_tables import (
    NodeAuditState,
    NodeLedgerCheck,
    NodeLedgerEntry,
    NodeLedgerTree,
)
from coordinator.audit_views import AuditViews, as_utc, ledger_time
from coordinator.errors import Conflict, InvalidInput
from coordinator.models import Node
from federation.audit_checks import (
    MirroredEntry,
    PerfectNode,
    VerifiedHead,
    check_new_head,
    mirrored_leaf,
)
from federation.audit_models import (
    LEDGER_TIME_FORMAT,
    MAX_CHUNK_ENTRIES,
    MAX_LEDGER_SIZE,
    AuditReceipt,
    AuditSnapshot,
    AuditSyncState,
    LedgerEntryChunk,
    SignedTreeHead,
)
from federation.errors import AuditCheckError

__all__ = ["MAX_STAGED", "AuditStore"]

#: Entries a node may hold staged (received, not yet covered by a verified head).
MAX_STAGED = 1_000_000
_BATCH = 2_000


class AuditStore(AuditViews):
    """Nodes' mirrored ledgers, checks, consent summaries and budgets.

    Args:
        sessions: the coordinator's session factory (a migrated database).
        clock: returns "now" (tests pass a fixed clock).
    """

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _state(s: Session, name: str, lock: bool = False) -> NodeAuditState:
        stmt = select(NodeAuditState).where(NodeAuditState.node == name)
        if lock:
            stmt = stmt.with_for_update()
        state = s.scalars(stmt).first()
        if state is None:
            state = NodeAuditState(node=name, verified_size=0)
            s.add(state)
            s.flush()
        return state

    @staticmethod
    def _staged_size(s: Session, name: str, verified: int) -> int:
        top = s.scalar(select(func.max(NodeLedgerEntry.idx)).where(NodeLedgerEntry.node == name))
        return verified if top is None or top < verified else int(top) + 1

    @staticmethod
    def _staged_rows(
        s: Session, name: str, lo: int, hi: int
    ) -> Iterator[tuple[int, str, datetime, bytes, bytes]]:
        for start in range(lo, hi, _BATCH):
            rows = s.execute(
                select(
                    NodeLedgerEntry.idx,
                    NodeLedgerEntry.kind,
                    NodeLedgerEntry.at,
                    NodeLedgerEntry.data,
                    NodeLedgerEntry.leaf,
                )
                .where(
                    NodeLedgerEntry.node == name,
                    NodeLedgerEntry.idx >= start,
                    NodeLedgerEntry.idx < min(hi, start + _BATCH),
                )
                .order_by(NodeLedgerEntry.idx)
            ).all()
            for idx, kind, at, data, leaf in rows:
                yield int(idx), str(kind), at, bytes(data), bytes(leaf)

    # -- what the node's service calls -------------------------------------------------------------
    def sync_state(self, name: str) -> AuditSyncState:
        """Return what the coordinator holds of the node's ledger.

        Raises:
            NotFound: no such node.
        """
        with self.sessions() as s:
            self._node(s, name)
            state = s.get(NodeAuditState, name)
            verified = state.verified_size if state else 0
            root = None
            if state is not None and state.head_check_id is not None:
                check = s.get(NodeLedgerCheck, state.head_check_id)
                root = check.root_hash if check else None
            return AuditSyncState(
                verified_size=verified,
                verified_root=root,
                staged_size=self._staged_size(s, name, verified),
                max_chunk_entries=MAX_CHUNK_ENTRIES,
            )

    def stage(self, name: str, chunk: LedgerEntryChunk) -> AuditSyncState:
        """Keep a run of the node's ledger entries until a signed head covers them.

        Raises:
            NotFound: no such node.
            Conflict: the run does not start where the staged entries end (``start``).
            InvalidInput: an entry's data is not base64, or too many entries are staged.
        """
        rows = []
        for offset, entry in enumerate(chunk.entries):
            try:
                data = entry.raw()
            except AuditCheckError as exc:
                raise InvalidInput(exc.message, field=f"entries[{offset}].data") from None
            at = datetime.strptime(entry.at, LEDGER_TIME_FORMAT).replace(tzinfo=UTC)
            rows.append((entry, data, at))
        with self._lock, self.sessions.begin() as s:
            self._node(s, name)
            state = self._state(s, name, lock=True)
            staged = self._staged_size(s, name, state.verified_size)
            if chunk.start != staged:
                raise Conflict(
                    f"start: the coordinator holds {staged} entries of node {name}; "
                    f"send entries from index {staged}",
                    field="start",
                )
            end = staged + len(rows)
            if end - state.verified_size > MAX_STAGED or end > MAX_LEDGER_SIZE:
                raise InvalidInput(
                    f"entries: at most {MAX_STAGED} entries wait for a signed head; "
                    "publish a head over those sent first",
                    field="entries",
                )
            s.add_all(
                NodeLedgerEntry(
                    node=name,
                    idx=entry.index,
                    kind=entry.kind,
                    at=at,
                    data=data,
                    leaf=mirrored_leaf(data, entry.leaf),
                )
                for entry, data, at in rows
            )
            return AuditSyncState(
                verified_size=state.verified_size,
                verified_root=None,
                staged_size=end,
                max_chunk_entries=MAX_CHUNK_ENTRIES,
            )

    def receive(self, name: str, snapshot: AuditSnapshot) -> AuditReceipt:
        """Record a node's consent summary and budget, and verify its signed head.

        Returns:
            The receipt: ``verified`` (the head and the entries it covers are now visible),
            ``failed`` (recorded with the reason; ``flagged`` when history was rewritten),
            ``incomplete`` (entries the head covers are still to come) or ``no_head``.

        Raises:
            NotFound: no such node.
            InvalidInput: the head covers more entries than the coordinator can mirror.
        """
        now = self.clock()
        head = snapshot.head
        if head is not None and head.tree_size > MAX_LEDGER_SIZE:
            raise InvalidInput(
                f"head.tree_size: at most {MAX_LEDGER_SIZE} entries", field="head.tree_size"
            )
        with self._lock, self.sessions.begin() as s:
            node = self._node(s, name)
            state = self._state(s, name, lock=True)
            state.snapshot_at = now
            if snapshot.consent is not None:
                state.consent = snapshot.consent.model_dump(mode="json")
            state.budget = [row.model_dump(mode="json") for row in snapshot.budget]
            m = state.verified_size
            staged = self._staged_size(s, name, m)

            def receipt(status: str, reason: str | None = None, flagged: bool = False) -> Any:
                return AuditReceipt(
                    status=status,  # type: ignore[arg-type]
                    verified_size=state.verified_size,
                    staged_size=self._staged_size(s, name, state.verified_size),
                    reason=reason,
                    flagged=flagged,
                    checked_at=now,
                )

            if head is None:
                return receipt("no_head", "the node has no signed tree head yet")
            if snapshot.since_size != m and head.tree_size > m:
                return receipt(
                    "incomplete",
                    f"since_size: the proof starts at {snapshot.since_size} but {m} entries "
                    "are verified; the next poll resends it",
                )
            prev = s.get(NodeLedgerCheck, state.head_check_id) if state.head_check_id else None
            try:
                new_nodes = self._verify(s, node, prev, m, staged, head, snapshot)
            except AuditCheckError as exc:
                s.execute(
                    delete(NodeLedgerEntry).where(
                        NodeLedgerEntry.node == name, NodeLedgerEntry.idx >= m
                    )
                )
                self._record(s, name, head, "failed", exc.message, exc.rewrite, now)
                return receipt("failed", exc.message, exc.rewrite)
            if new_nodes is None:
                return receipt(
                    "incomplete",
                    f"entries {staged}..{head.tree_size - 1} are still to be uploaded",
                )
            s.add_all(
                NodeLedgerTree(node=name, level=level, pos=pos, hash=h)
                for level, pos, h in new_nodes
            )
            check = self._record(s, name, head, "verified", None, False, now)
            state.verified_size = head.tree_size
            state.head_check_id = check.id
            return receipt("verified")

    def _verify(
        self,
        s: Session,
        node: Node,
        prev: NodeLedgerCheck | None,
        m: int,
        staged: int,
        head: SignedTreeHead,
        snapshot: AuditSnapshot,
    ) -> list[PerfectNode] | None:
        """Run :func:`~federation.audit_checks.check_new_head` on the stored mirror.

        Returns:
            The new subtree hashes, or None while entries are missing.

        Raises:
            AuditCheckError: a check failed.
        """
        verified = None
        if prev is not None:
            verified = VerifiedHead(
                size=m,
                root=bytes.fromhex(prev.root_hash),
                key_id=prev.key_id,
                timestamp=as_utc(prev.head_timestamp),
            )

        def entries(lo: int, hi: int) -> Iterator[MirroredEntry]:
            for idx, kind, at, data, leaf in self._staged_rows(s, node.name, lo, hi):
                yield idx, kind, ledger_time(at), data, leaf

        return check_new_head(
            head,
            node.public_key_pem,
            verified,
            staged,
            snapshot.consistency_proof,
            self._perfect_hashes(s, node.name),
            entries,
        )

    def _record(
        self,
        s: Session,
        name: str,
        head: SignedTreeHead,
        result: str,
        reason: str | None,
        flagged: bool,
        now: datetime,
    ) -> NodeLedgerCheck:
        text = head.model_dump_json()
        last = s.scalars(
            select(NodeLedgerCheck)
            .where(NodeLedgerCheck.node == name)
            .order_by(NodeLedgerCheck.id.desc())
            .limit(1)
        ).first()
        if last is not None and (last.head, last.result, last.reason) == (text, result, reason):
            last.last_checked_at = now
            last.checks += 1
            return last
        check = NodeLedgerCheck(
            node=name,
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            head_timestamp=head.timestamp,
            key_id=head.key_id,
            head=text,
            result=result,
            reason=reason,
            flagged=flagged,
            first_checked_at=now,
            last_checked_at=now,
            checks=1,
        )
        s.add(check)
        s.flush()
        return check
