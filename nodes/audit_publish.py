"""The node's audit snapshot: what its service pushes so auditors can see and check its ledger.

Nodes never listen, so every poll the service pushes (outbound, over the node admin's token):

* the ledger entries the coordinator does not hold yet, exactly as stored (canonical bytes,
  index, kind, time), in chunks of at most :data:`federation.audit_models.MAX_CHUNK_ENTRIES`
  and at most ``max_entries`` per poll (a long backlog continues on the next polls);
* the latest signed tree head (a new one is signed when the ledger grew past the last head)
  and an RFC 9162 consistency proof from the head the coordinator last verified;
* the consent summary: per DUO purpose category and data domain, how many subjects' consent
  permits a plain use of that category now (academic, non-commercial, no further obligation
  accepted); counts under the policy's ``min_cell_count`` are suppressed here ("< k"), and so
  is any count that would reveal one by difference from a related count (same domain, same
  purpose, or the number of subjects on record): suppressed numbers never leave the node;
* the privacy budget per domain and period (cap, spent, reserved, remaining).

The coordinator verifies the head and the entries and answers with a receipt; a failed check
is recorded there and shown to auditors, and it is logged here.
"""

from __future__ import annotations

import base64
import itertools
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from consent.errors import LedgerError
from consent.ledger import format_time
from consent.model import UseRequest
from consent.signing import SignedTreeHead
from federation.audit_models import (
    MAX_CHUNK_BYTES,
    MAX_CHUNK_ENTRIES,
    SUMMARY_PURPOSES,
    AuditReceipt,
    AuditSnapshot,
    AuditSyncState,
    BudgetRow,
    ConsentCount,
    ConsentSummary,
    LedgerEntryChunk,
    LedgerEntryWire,
    withheld,
)
from nodes.enforcement import EnforcementPoint

__all__ = [
    "MAX_ENTRIES_PER_POLL",
    "PAST_PERIODS",
    "AuditPublisher",
    "push_audit_snapshot",
    "suppress_counts",
]

log = logging.getLogger("hamanasu.node.audit")

#: Entries uploaded per poll at most (a larger backlog continues on the next polls).
MAX_ENTRIES_PER_POLL = 5_000
#: Past budget periods published per domain, newest first.
PAST_PERIODS = 24

CountKey = tuple[str, str | None]


def suppress_counts(
    counts: dict[CountKey, int], subjects: int, k: int
) -> tuple[dict[CountKey, int | None], dict[CountKey, str], int | None]:
    """Apply the minimum-cell rule to consent counts.

    A count under ``k`` is suppressed (``small``). So is a count whose difference from a
    related shown count (same domain, same purpose, or the number of subjects on record) lies
    between 1 and ``k - 1``, since the difference would be a count under ``k``
    (``difference``); of such a pair the smaller is suppressed, until no pair is left.

    Args:
        counts: (purpose, domain) → subjects whose consent permits it.
        subjects: subjects with a consent on record.
        k: the policy's minimum cell.

    Returns:
        The counts with suppressed ones as None, why each suppressed one is, and the number
        of subjects (None if under ``k``).
    """
    total_key: CountKey = ("*", "*")
    why: dict[CountKey, str] = {key: "small" for key, n in counts.items() if n < k}
    shown: dict[CountKey, int] = {key: n for key, n in counts.items() if n >= k}
    if subjects >= k:
        shown[total_key] = subjects

    def related(a: CountKey, b: CountKey) -> bool:
        return total_key in (a, b) or a[0] == b[0] or a[1] == b[1]

    changed = True
    while changed:
        changed = False
        ordered = sorted(shown.items(), key=lambda kv: (kv[1], str(kv[0])))
        for (ka, va), (kb, vb) in itertools.combinations(ordered, 2):
            if ka in shown and kb in shown and related(ka, kb) and 0 < abs(va - vb) < k:
                smaller = ka if va < vb else kb
                del shown[smaller]
                why[smaller] = "difference"
                changed = True
    out = {key: shown.get(key) for key in counts}
    return out, why, shown.get(total_key)


class AuditPublisher:
    """Builds a node's audit snapshot from its enforcement point's ledger, registry and budget.

    Args:
        point: the node's enforcement point (its state folder).
    """

    def __init__(self, point: EnforcementPoint) -> None:
        self.point = point

    # -- the ledger -----------------------------------------------------------------------------
    def head(self) -> SignedTreeHead | None:
        """Return the latest signed head, signing a new one when the ledger grew past it.

        Without a signing key the last head stands (entries after it wait for one).
        """
        ledger = self.point.ledger()
        head: SignedTreeHead | None = ledger.latest_head()
        size = ledger.size
        if size and (head is None or head.tree_size < size):
            try:
                head = ledger.sign_head(self.point.clock())
            except LedgerError:  # opened without a key
                log.warning("ledger has %d entries but no key to sign a head over them", size)
        return head

    def entries(self, start: int, stop: int) -> list[LedgerEntryWire]:
        """Return entries ``start``..``stop - 1`` as stored (canonical bytes, index, kind, time)."""
        ledger = self.point.ledger()
        out: list[LedgerEntryWire] = []
        for entry in ledger.entries(since=start):
            if entry.index >= stop:
                break
            out.append(
                LedgerEntryWire(
                    index=entry.index,
                    kind=entry.kind,
                    at=format_time(entry.at),
                    leaf=ledger.leaf_hash(entry.index).hex(),
                )
                if withheld(entry.kind)
                else LedgerEntryWire(
                    index=entry.index,
                    kind=entry.kind,
                    at=format_time(entry.at),
                    data=base64.b64encode(ledger.entry_bytes(entry.index)).decode("ascii"),
                )
            )
        return out

    def consistency_proof(self, old_size: int, new_size: int) -> list[str]:
        """Return the RFC 9162 consistency proof (hex) between two sizes ([] if out of range)."""
        try:
            return [h.hex() for h in self.point.ledger().consistency_proof(old_size, new_size)]
        except LedgerError:
            return []

    def check_coordinator_root(self, state: AuditSyncState) -> None:
        """Log loudly when the root the coordinator verified differs from this ledger's."""
        if state.verified_root is None:
            return
        ledger = self.point.ledger()
        if state.verified_size > ledger.size:
            log.error(
                "the coordinator verified %d ledger entries but this ledger holds %d",
                state.verified_size,
                ledger.size,
            )
        elif ledger.root(state.verified_size).hex() != state.verified_root:
            log.error(
                "this ledger's first %d entries differ from those the coordinator verified",
                state.verified_size,
            )

    # -- consent and budget ----------------------------------------------------------------------
    def consent_summary(self, at: datetime | None = None) -> ConsentSummary:
        """Count, per purpose category and domain, the subjects whose consent permits it at ``at``.

        Each count is for a plain use of the category (academic, non-commercial, accepting no
        further DUO obligation) in the domain; small counts are suppressed (see
        :func:`suppress_counts`).
        """
        at = at or self.point.clock()
        policy = self.point.policy()
        k = int(policy.min_cell_count)
        registry = self.point.registry()
        subjects = registry.subjects()
        domains: list[str | None] = list(sorted(policy.domains)) or [None]
        counts: dict[CountKey, int] = {}
        for domain in domains:
            for purpose in SUMMARY_PURPOSES:
                request = UseRequest(
                    codes=(purpose,),
                    commercial=False,
                    requester_type="academic",
                    domain=domain,
                    time=at,
                )
                if subjects:
                    permitted = registry.permitted(subjects, request, at)
                    counts[(purpose, domain)] = int(np.count_nonzero(permitted))
                else:
                    counts[(purpose, domain)] = 0
        shown, why, total = suppress_counts(counts, len(subjects), k)
        rows = [
            ConsentCount(
                purpose=p,
                domain=d,
                count=shown[(p, d)],
                suppressed=shown[(p, d)] is None,
                suppression=why.get((p, d)),  # type: ignore[arg-type]
            )
            for (p, d) in counts
        ]
        return ConsentSummary(at=at, min_cell_count=k, subjects=total, counts=rows)

    def _past_periods(self) -> list[tuple[str, str]]:
        path = self.point.state.budget_path
        if not path.exists():
            return []
        try:
            db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
            try:
                rows = db.execute(
                    "SELECT domain, period FROM reservations UNION "
                    "SELECT domain, period FROM closed ORDER BY 1, 2 DESC"
                ).fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            return []
        return [(str(d), str(p)) for d, p in rows]

    def budget_rows(self, at: datetime | None = None) -> list[BudgetRow]:
        """Return the budget per domain: the period in force at ``at`` and past ones with use."""
        at = at or self.point.clock()
        budget = self.point.budget()
        rows: list[BudgetRow] = []
        current: dict[str, str] = {}
        for status in budget.show(at):
            current[status.domain] = status.period
            rows.append(BudgetRow.from_status(status, True))
        per_domain: dict[str, int] = {}
        for domain, period in self._past_periods():
            if domain not in current or period == current[domain] or period == "total":
                continue
            if per_domain.get(domain, 0) >= PAST_PERIODS:
                continue
            when = _inside(period)
            if when is None:
                continue
            status = budget.status(domain, when)
            if status.period == period:
                rows.append(BudgetRow.from_status(status, False))
                per_domain[domain] = per_domain.get(domain, 0) + 1
        return rows

    def snapshot(self, head: SignedTreeHead | None, since_size: int) -> AuditSnapshot:
        """Return the snapshot: head, consistency proof from ``since_size``, counts, budget."""
        proof: list[str] = []
        if head is not None and 0 < since_size < head.tree_size:
            proof = self.consistency_proof(since_size, head.tree_size)
        consent: ConsentSummary | None = None
        if self.point.state.consents_path.exists():
            consent = self.consent_summary()
        return AuditSnapshot(
            head=head,
            since_size=since_size,
            consistency_proof=proof,
            consent=consent,
            budget=self.budget_rows(),
        )


def _inside(period: str) -> datetime | None:
    """Return a time inside a period key (``2025`` → mid-year, ``2025-04`` → mid-month)."""
    try:
        if len(period) == 4:
            return datetime(int(period), 7, 1, tzinfo=UTC)
        if len(period) == 7:
            return datetime(int(period[:4]), int(period[5:]), 15, tzinfo=UTC)
    except ValueError:
        return None
    return None


def _within_bytes(entries: list[LedgerEntryWire]) -> list[LedgerEntryWire]:
    """Keep the leading entries whose data fit one upload call (at least one)."""
    total = 0
    for i, entry in enumerate(entries):
        total += len(entry.data or entry.leaf or "")
        if total > MAX_CHUNK_BYTES and i > 0:
            return entries[:i]
    return entries


def push_audit_snapshot(
    client: httpx.Client,
    node: str,
    point: EnforcementPoint,
    check: Callable[[httpx.Response], Any],
    *,
    max_entries: int = MAX_ENTRIES_PER_POLL,
) -> AuditReceipt:
    """Push the node's audit snapshot to the coordinator (see the module docstring).

    Args:
        client: the node's HTTP client (base URL and the node admin's token set).
        node: the node's name.
        point: the node's enforcement point.
        check: turns an error response into an exception and returns the JSON body.
        max_entries: entries uploaded in this call at most.

    Returns:
        The coordinator's receipt (``verified``, ``failed``, ``incomplete``, ``no_head``).

    Raises:
        NodeServiceError, httpx.HTTPError: the coordinator refused a call or cannot be reached.
    """
    publisher = AuditPublisher(point)
    base = f"/nodes/{node}/audit"
    state = AuditSyncState.model_validate(check(client.get(f"{base}/state")))
    publisher.check_coordinator_root(state)
    head = publisher.head()
    target = head.tree_size if head is not None else 0
    pos, sent = state.staged_size, 0
    chunk = max(1, min(state.max_chunk_entries, MAX_CHUNK_ENTRIES))
    while pos < target and sent < max_entries:
        stop = min(target, pos + chunk, pos + max_entries - sent)
        entries = _within_bytes(publisher.entries(pos, stop))
        if not entries:
            break
        body = LedgerEntryChunk(start=pos, entries=entries).model_dump(mode="json")
        state = AuditSyncState.model_validate(check(client.post(f"{base}/entries", json=body)))
        sent += len(entries)
        if state.staged_size <= pos:
            break
        pos = state.staged_size
    snapshot = publisher.snapshot(head, state.verified_size)
    receipt = AuditReceipt.model_validate(
        check(client.put(f"{base}/snapshot", json=snapshot.model_dump(mode="json")))
    )
    if receipt.status == "failed":
        log.error("the coordinator could not verify this node's ledger: %s", receipt.reason)
    elif receipt.status == "incomplete":
        log.info("ledger upload continues next poll (%d entries staged)", receipt.staged_size)
    return receipt
