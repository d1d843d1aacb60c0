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

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.audit_tables import (
    NodeAuditState,
    NodeLedgerCheck,
    NodeLedgerEntry,
    NodeLedgerTree,
)
from coordinator.errors import Conflict, InvalidInput, NotFound
from coordinator.models import Node
from federation.audit_models import (
    EMPTY_ROOT,
    LEDGER_TIME_FORMAT,
    MAX_CHUNK_ENTRIES,
    MAX_LEDGER_SIZE,
    AuditCheckError,
    AuditReceipt,
    AuditSnapshot,
    AuditSyncState,
    BudgetRow,
    ConsentSummary,
    InclusionProofPublic,
    LedgerEntryChunk,
    LedgerEntryPublic,
    LedgerPage,
    NodeBudgetPublic,
    NodeConsentPublic,
    NodeLedgerStatus,
    SignedTreeHead,
    VerificationPublic,
    check_consistency,
    check_entry,
    check_head_signature,
    hash_children,
    head_timestamp_text,
    inclusion_proof,
    public_key_id,
    withheld,
)

__all__ = ["MAX_STAGED", "AuditStore"]

#: Entries a node may hold staged (received, not yet covered by a verified head).
MAX_STAGED = 1_000_000
_ZERO = b"\x00" * 32
_BATCH = 2_000


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _utc(value: datetime | None) -> datetime:
    """Return ``value`` in UTC (a naive value, as SQLite returns them, is taken as UTC)."""
    out = _aware(value)
    assert out is not None
    return out.astimezone(UTC)


def _check_public(c: NodeLedgerCheck) -> VerificationPublic:
    return VerificationPublic(
        id=c.id,
        node=c.node,
        tree_size=c.tree_size,
        root_hash=c.root_hash,
        head_timestamp=_utc(c.head_timestamp),
        key_id=c.key_id,
        result=c.result,  # type: ignore[arg-type]
        reason=c.reason,
        flagged=c.flagged,
        first_checked_at=_utc(c.first_checked_at),
        last_checked_at=_utc(c.last_checked_at),
        checks=c.checks,
    )


def _ledger_time(value: datetime) -> str:
    return _utc(value).strftime(LEDGER_TIME_FORMAT)


class AuditStore:
    """Nodes' mirrored ledgers, checks, consent summaries and budgets.

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

    def _subtrees(self, s: Session, name: str) -> Callable[[int, int], bytes]:
        cache: dict[tuple[int, int], bytes] = {}

        def mth(lo: int, hi: int) -> bytes:
            n = hi - lo
            if n & (n - 1) == 0 and lo % n == 0:
                key = (n.bit_length() - 1, lo // n)
                if key not in cache:
                    cache[key] = self._perfect(s, name, *key)
                return cache[key]
            k = 1 << ((n - 1).bit_length() - 1)
            return hash_children(mth(lo, lo + k), mth(lo + k, hi))

        return mth

    def _frontier(self, s: Session, name: str, size: int) -> list[tuple[int, bytes]]:
        frontier: list[tuple[int, bytes]] = []
        offset = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size & (1 << level):
                frontier.append((level, self._perfect(s, name, level, offset >> level)))
                offset += 1 << level
        return frontier

    @staticmethod
    def _root(frontier: list[tuple[int, bytes]]) -> bytes:
        if not frontier:
            return EMPTY_ROOT
        acc = frontier[-1][1]
        for _, h in reversed(frontier[:-1]):
            acc = hash_children(h, acc)
        return acc

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
                    # a withheld entry (empty data) arrives with its leaf hash only
                    leaf=hashlib.sha256(b"\x00" + data).digest()
                    if data
                    else bytes.fromhex(entry.leaf or ""),
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
    ) -> list[tuple[int, int, bytes]] | None:
        """Run the checks; return the new subtree hashes, or None while entries are missing."""
        check_head_signature(head, node.public_key_pem)
        n = head.tree_size
        root = bytes.fromhex(head.root_hash)
        if prev is not None:
            if prev.key_id != head.key_id:
                raise AuditCheckError(
                    f"the head is signed by key {head.key_id[:16]}…, not by key "
                    f"{prev.key_id[:16]}… that signed the verified head: the ledger was replaced",
                    rewrite=True,
                )
            if head.timestamp < _utc(prev.head_timestamp):
                raise AuditCheckError(
                    f"the head (size {n}) is dated before the verified head (size "
                    f"{prev.tree_size}): backdated",
                    rewrite=True,
                )
        if n < m:
            raise AuditCheckError(
                f"the head covers {n} entries but {m} were verified before: signed history "
                "was truncated",
                index=n,
                rewrite=True,
            )
        prev_root = bytes.fromhex(prev.root_hash) if prev is not None else EMPTY_ROOT
        if n == m:
            if root != prev_root:
                raise AuditCheckError(
                    f"the head has the verified size {n} but another root: signed history "
                    "was rewritten",
                    index=0,
                    rewrite=True,
                )
            return []
        if m > 0:
            check_consistency(m, n, prev_root, root, snapshot.consistency_proof)
        if staged < n:
            return None
        frontier = self._frontier(s, node.name, m)
        prev_leaf = self._leaf(s, node.name, m - 1) if m else _ZERO
        nodes: list[tuple[int, int, bytes]] = []
        expected = m
        for idx, kind, at, data, stored_leaf in self._staged_rows(s, node.name, m, n):
            if idx != expected:
                raise AuditCheckError(
                    f"entry {expected} is missing from the upload", index=expected
                )
            expected += 1
            if data:
                leaf = check_entry(idx, kind, _ledger_time(at), data, prev_leaf)
            elif withheld(kind):
                # content kept at the node: the signed root covers its leaf, and the next
                # entry's hash-chain link is checked against it
                leaf = stored_leaf
            else:
                raise AuditCheckError(f"entry {idx}: a {kind} entry came without its content")
            prev_leaf = leaf
            level, h, pos = 0, leaf, idx
            while frontier and frontier[-1][0] == level:
                _, left = frontier.pop()
                h = hash_children(left, h)
                level += 1
                pos >>= 1
                nodes.append((level, pos, h))
            frontier.append((level, h))
        if self._root(frontier) != root:
            raise AuditCheckError(
                f"entries {m}..{n - 1} as the node stores them do not hash to the root it "
                "signed: entries were altered after signing",
                index=m,
                rewrite=True,
            )
        return nodes

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
                        snapshot_at=_aware(st.snapshot_at) if st else None,
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
                where.append(NodeLedgerEntry.at >= _utc(since))
            if until is not None:
                where.append(NodeLedgerEntry.at < _utc(until))
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
                        at=_utc(r.at),
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
            assert check is not None
            head = SignedTreeHead.model_validate_json(check.head)
            row = s.get(NodeLedgerEntry, (name, index))
            assert row is not None
            proof = inclusion_proof(index, size, self._subtrees(s, name))
            return InclusionProofPublic(
                node=name,
                index=index,
                tree_size=size,
                data=base64.b64encode(bytes(row.data)).decode("ascii") if row.data else None,
                leaf_hash=bytes(row.leaf).hex(),
                proof=[p.hex() for p in proof],
                head=head,
                head_timestamp_text=head_timestamp_text(head),
                public_key_pem=node.public_key_pem,
            )

    def consent(self, name: str | None = None) -> list[NodeConsentPublic]:
        """Return the consent summary of one node (or of every node), by name.

        Raises:
            NotFound: no such node.
        """
        with self.sessions() as s:
            names = [self._node(s, name).name] if name else list(s.scalars(select(Node.name)))
            states = {st.node: st for st in s.scalars(select(NodeAuditState))}
            out = []
            for n in sorted(names):
                st = states.get(n)
                summary = ConsentSummary.model_validate(st.consent) if st and st.consent else None
                out.append(
                    NodeConsentPublic(
                        node=n,
                        received_at=_aware(st.snapshot_at) if st else None,
                        summary=summary,
                    )
                )
            return out

    def budget(self, name: str | None = None) -> list[NodeBudgetPublic]:
        """Return the budget of one node (or of every node), by name.

        Raises:
            NotFound: no such node.
        """
        with self.sessions() as s:
            names = [self._node(s, name).name] if name else list(s.scalars(select(Node.name)))
            states = {st.node: st for st in s.scalars(select(NodeAuditState))}
            out = []
            for n in sorted(names):
                st = states.get(n)
                rows = [BudgetRow.model_validate(r) for r in (st.budget or [])] if st else []
                out.append(
                    NodeBudgetPublic(
                        node=n,
                        received_at=_aware(st.snapshot_at)
                        if st and st.budget is not None
                        else None,
                        rows=rows,
                    )
                )
            return out
