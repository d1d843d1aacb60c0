"""The node audit snapshot's wire models: what a node pushes, what auditors read.

Nodes never listen, so what an auditor sees of a node's ledger is pushed by the node's
service on every poll, in three calls (see :mod:`nodes.audit_publish`):

1. ``GET /nodes/{name}/audit/state`` → :class:`AuditSyncState`: how many ledger entries the
   coordinator holds verified (and the root it holds for them) and how many it holds staged.
2. ``POST /nodes/{name}/audit/entries`` with :class:`LedgerEntryChunk` (at most
   :data:`MAX_CHUNK_ENTRIES` entries each): the entries it lacks, as the ledger stores them
   (canonical RFC 8785 bytes, base64), with their index, kind and time.
3. ``PUT /nodes/{name}/audit/snapshot`` with :class:`AuditSnapshot`: the node's latest signed
   tree head, an RFC 9162 consistency proof from the head the coordinator holds, the consent
   summary per DUO purpose category (counts under the policy's minimum cell are suppressed on
   the node: the number never leaves it) and the privacy budget per domain and period.
   The coordinator answers with an :class:`AuditReceipt` (verified, failed, incomplete).

The checks the coordinator runs on them (signature, hash chain, recomputed root,
consistency) are in :mod:`federation.audit_checks`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from consent.duo import USE_CATEGORIES
from consent.entries import KIND_PATTERN
from consent.signing import SignedTreeHead
from federation.errors import AuditCheckError

if TYPE_CHECKING:
    from policies.budget_records import BudgetStatus

__all__ = [
    "LEDGER_TIME_FORMAT",
    "MAX_CHUNK_BYTES",
    "MAX_CHUNK_ENTRIES",
    "MAX_ENTRY_BYTES",
    "MAX_LEDGER_SIZE",
    "SUMMARY_PURPOSES",
    "AuditReceipt",
    "AuditSnapshot",
    "AuditSyncState",
    "BudgetRow",
    "CheckResult",
    "ConsentCount",
    "ConsentSummary",
    "InclusionProofPublic",
    "LedgerEntryChunk",
    "LedgerEntryPublic",
    "LedgerEntryWire",
    "LedgerPage",
    "NodeBudgetPublic",
    "NodeConsentPublic",
    "NodeLedgerStatus",
    "SignedTreeHead",
    "VerificationPublic",
    "WITHHELD_KINDS",
    "withheld",
]

#: Entries per upload call (a node sends as many calls as it needs, a bounded number per poll).
MAX_CHUNK_ENTRIES = 500
#: Bytes of entry data (base64) per upload call at most.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
#: Largest ledger the coordinator mirrors (its tables index entries with 32-bit integers).
MAX_LEDGER_SIZE = 2**31 - 1
#: Largest canonical entry the coordinator mirrors (ledger entries are a few hundred bytes).
MAX_ENTRY_BYTES = 64 * 1024

#: Entry kinds whose content never leaves the node: a consent event names a resident's
#: pseudonym (shared across holders, so it would tell the coordinator who is on whose
#: books and when they changed their mind). Their leaf hashes are enough to verify the
#: signed roots; the entry after one checks its hash-chain link.
WITHHELD_KINDS: tuple[str, ...] = ("consent.",)


def withheld(kind: str) -> bool:
    """Return True if entries of ``kind`` are mirrored without their content."""
    return kind.startswith(WITHHELD_KINDS)


#: The ledger's timestamp text: UTC, microseconds, ``Z`` (``consent.ledger.format_time``).
LEDGER_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_LEDGER_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
#: The DUO use categories a consent summary counts (``DS`` needs a disease, so it is left out).
SUMMARY_PURPOSES: tuple[str, ...] = ("NRES", "GRU", "HMB", "POA", "CC")

_Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_Domain = Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
_Period = Annotated[str, Field(pattern=r"^(\d{4}|\d{4}-\d{2}|total)$")]
_Eps = Annotated[float, Field(allow_inf_nan=False)]

#: What a verification concluded.
CheckResult = Literal["verified", "failed"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- node → coordinator ------------------------------------------------------------------------
class LedgerEntryWire(_Wire):
    """One ledger entry as the node stores it.

    Attributes:
        index: its position in the ledger (0-based).
        kind: its kind (``consent.granted``, ``job.usage``, ...).
        at: its time, exactly as the ledger wrote it (``2026-01-02T03:04:05.000006Z``).
        data: its canonical (RFC 8785) bytes, base64; the leaf hash is SHA-256(0x00 || bytes).
            None for an entry whose content stays at the node (:data:`WITHHELD_KINDS`).
        leaf: the leaf hash (hex) of an entry sent without its content.
    """

    index: int = Field(ge=0, le=MAX_LEDGER_SIZE - 1)
    kind: str = Field(min_length=3, max_length=64, pattern=KIND_PATTERN.pattern)
    at: str = Field(pattern=_LEDGER_TIME)
    data: str | None = Field(default=None, min_length=4, max_length=(MAX_ENTRY_BYTES * 4) // 3 + 4)
    leaf: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _content_or_leaf(self) -> LedgerEntryWire:
        if (self.data is None) == (self.leaf is None):
            raise ValueError("data: send an entry's bytes, or (withheld) only its leaf hash")
        if self.data is None and not withheld(self.kind):
            raise ValueError(f"data: a {self.kind} entry is sent with its content")
        return self

    def raw(self) -> bytes:
        """Return the entry's bytes (empty for a withheld entry).

        Raises:
            AuditCheckError: ``data`` is not base64.
        """
        if self.data is None:
            return b""
        try:
            return base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            raise AuditCheckError(
                f"entry {self.index}: data is not base64", index=self.index
            ) from None


class LedgerEntryChunk(_Wire):
    """A run of consecutive ledger entries, starting at ``start``."""

    start: int = Field(ge=0, le=MAX_LEDGER_SIZE - 1)
    entries: list[LedgerEntryWire] = Field(min_length=1, max_length=MAX_CHUNK_ENTRIES)

    @model_validator(mode="after")
    def _consecutive(self) -> LedgerEntryChunk:
        if sum(len(e.data or e.leaf or "") for e in self.entries) > MAX_CHUNK_BYTES:
            raise ValueError(f"entries: more than {MAX_CHUNK_BYTES} bytes of data in one call")
        for offset, entry in enumerate(self.entries):
            if entry.index != self.start + offset:
                raise ValueError(
                    f"entries[{offset}].index: expected {self.start + offset}, got {entry.index}"
                )
        return self


class ConsentCount(_Wire):
    """How many subjects' consent permits one purpose category in one domain, now.

    ``count`` is None when the number is suppressed: ``suppression`` says why (``small``: under
    the node policy's minimum cell; ``difference``: it would reveal such a count by difference
    from a related count). The node never sends a suppressed number.
    """

    purpose: str = Field(pattern=r"^[A-Z]{2,6}$")
    domain: _Domain | None = None
    count: int | None = Field(default=None, ge=0)
    suppressed: bool
    suppression: Literal["small", "difference"] | None = None

    @model_validator(mode="after")
    def _suppressed_has_no_count(self) -> ConsentCount:
        if self.suppressed != (self.count is None):
            raise ValueError("count: a suppressed count carries no number, a shown one does")
        if self.suppressed != (self.suppression is not None):
            raise ValueError("suppression: says why a count is suppressed, and only then")
        if self.purpose not in USE_CATEGORIES:
            raise ValueError(f"purpose: {self.purpose!r} is not a DUO use category")
        return self


class ConsentSummary(_Wire):
    """A node's consent counts per DUO purpose category (and domain), at one moment.

    Attributes:
        at: when the counts were taken (consents in force then).
        min_cell_count: the node policy's minimum cell; no shown count is below it.
        subjects: subjects with a consent on record (None: suppressed).
        counts: one row per purpose category and domain.
    """

    at: datetime
    min_cell_count: int = Field(ge=1, le=1_000_000)
    subjects: int | None = Field(default=None, ge=0)
    counts: list[ConsentCount] = Field(default_factory=list, max_length=2000)

    @model_validator(mode="after")
    def _min_cell(self) -> ConsentSummary:
        k = self.min_cell_count
        if self.subjects is not None and self.subjects < k:
            raise ValueError(f"subjects: {self.subjects} is under the minimum cell {k}")
        for i, row in enumerate(self.counts):
            if row.count is not None and row.count < k:
                raise ValueError(f"counts[{i}].count: under the minimum cell {k}; suppress it")
        return self


class BudgetRow(_Wire):
    """One domain's privacy budget in one period, as the node's budget ledger holds it.

    Attributes:
        domain: the data domain.
        period: ``2026``, ``2026-04`` or ``total``.
        current: whether this is the period in force now.
        epsilon_cap: the policy's ε for the period; ``delta_cap`` its δ.
        spent_epsilon: ε actually spent by charges (composed).
        reserved_epsilon: ε held by active reservations.
        committed_epsilon: closed spending plus active reservations.
        remaining_epsilon: what a new reservation may still take.
        active_jobs: active reservations; ``closed_jobs`` released jobs that charged.
    """

    domain: _Domain
    period: _Period
    current: bool = True
    epsilon_cap: float = Field(ge=0, le=1e6, allow_inf_nan=False)
    delta_cap: float = Field(ge=0, lt=1, allow_inf_nan=False)
    spent_epsilon: _Eps = Field(ge=0)
    reserved_epsilon: _Eps = Field(ge=0)
    committed_epsilon: _Eps = Field(ge=0)
    remaining_epsilon: _Eps
    active_jobs: int = Field(ge=0)
    closed_jobs: int = Field(ge=0)

    @classmethod
    def from_status(cls, status: BudgetStatus, current: bool) -> BudgetRow:
        """Return the published row of a node's budget ledger row.

        Raises:
            pydantic.ValidationError: the row does not fit the wire limits.
        """
        return cls(
            domain=status.domain,
            period=status.period,
            current=current,
            epsilon_cap=status.budget_epsilon,
            delta_cap=status.budget_delta,
            spent_epsilon=max(status.spent_epsilon, 0.0),
            reserved_epsilon=max(status.reserved_epsilon, 0.0),
            committed_epsilon=max(status.committed_epsilon, 0.0),
            remaining_epsilon=status.remaining_epsilon,
            active_jobs=status.active_jobs,
            closed_jobs=status.closed_jobs,
        )


class AuditSnapshot(_Wire):
    """What a node's service pushes every poll (after the entries the coordinator lacks).

    Attributes:
        head: the ledger's latest signed tree head (None: the ledger has none yet).
        since_size: the verified size the coordinator announced; the proof starts there.
        consistency_proof: RFC 9162 proof (hex) from ``since_size`` to ``head.tree_size``.
        consent: consent counts per purpose category (None: no registry).
        budget: the budget per domain and period.
    """

    head: SignedTreeHead | None = None
    since_size: int = Field(default=0, ge=0)
    consistency_proof: list[_Hex64] = Field(default_factory=list, max_length=128)
    consent: ConsentSummary | None = None
    budget: list[BudgetRow] = Field(default_factory=list, max_length=2000)


# -- coordinator → node --------------------------------------------------------------------------
class AuditSyncState(_Wire):
    """What the coordinator holds of a node's ledger.

    Attributes:
        verified_size: entries verified against a signed head (send entries from here on).
        verified_root: the root of that head (hex; None before any head).
        staged_size: entries received but not yet verified (uploads resume here).
        max_chunk_entries: entries per upload call.
    """

    verified_size: int = Field(ge=0)
    verified_root: str | None = None
    staged_size: int = Field(ge=0)
    max_chunk_entries: int = MAX_CHUNK_ENTRIES


class AuditReceipt(_Wire):
    """The coordinator's answer to a snapshot.

    ``verified``: the head checked out and the entries it covers are mirrored; ``failed``: a
    check failed (recorded, shown to auditors; ``flagged`` when history was rewritten);
    ``incomplete``: entries the head covers are still missing (upload continues next poll);
    ``no_head``: the node has no signed head yet.
    """

    status: Literal["verified", "failed", "incomplete", "no_head"]
    verified_size: int
    staged_size: int
    reason: str | None = None
    flagged: bool = False
    checked_at: datetime


# -- what auditors and node admins read ------------------------------------------------------------
class VerificationPublic(_Wire):
    """One check of a node's signed head by the coordinator (repeats of one outcome are merged)."""

    id: int
    node: str
    tree_size: int
    root_hash: str
    head_timestamp: datetime
    key_id: str
    result: CheckResult
    reason: str | None
    flagged: bool
    first_checked_at: datetime
    last_checked_at: datetime
    checks: int


class NodeLedgerStatus(_Wire):
    """A node's mirrored ledger as auditors see it.

    Attributes:
        node: the node.
        public_key_id: SHA-256 of the node's registered ledger key (None: none registered).
        head: the latest signed head that verified (None: none yet).
        verified_size: entries mirrored and verified.
        last_check: the latest verification, whatever its result.
        flagged: whether any check ever showed the node rewriting signed history.
        snapshot_at: when the node last pushed a snapshot.
    """

    node: str
    public_key_id: str | None
    head: SignedTreeHead | None
    verified_size: int
    last_check: VerificationPublic | None
    flagged: bool
    snapshot_at: datetime | None


class LedgerEntryPublic(_Wire):
    """One mirrored (verified) ledger entry."""

    index: int
    kind: str
    at: datetime
    leaf_hash: str
    payload: dict[str, Any]
    withheld: bool = False


class LedgerPage(_Wire):
    """A page of a node's mirrored ledger, filtered by kind and time."""

    node: str
    tree_size: int
    total: int
    offset: int
    limit: int
    kinds: list[str]
    entries: list[LedgerEntryPublic]


class InclusionProofPublic(_Wire):
    """What an auditor needs to check one entry against the node's signed head, in place.

    Attributes:
        node: the node.
        index: the entry's index.
        tree_size: the size of the verified head the proof is for.
        data: the entry's canonical bytes (base64); its leaf is SHA-256(0x00 || bytes).
            None when the content stays at the node (a consent event): the check then
            starts from ``leaf_hash``.
        leaf_hash: the leaf hash (hex).
        proof: the RFC 9162 audit path (hex), leaf to root.
        head: the signed tree head.
        head_timestamp_text: the head's timestamp exactly as signed.
        public_key_pem: the node's registered Ed25519 ledger key.
    """

    node: str
    index: int
    tree_size: int
    data: str | None
    leaf_hash: str
    proof: list[str]
    head: SignedTreeHead
    head_timestamp_text: str
    public_key_pem: str | None


class NodeConsentPublic(_Wire):
    """A node's latest consent summary (counts only; small counts suppressed by the node)."""

    node: str
    received_at: datetime | None
    summary: ConsentSummary | None


class NodeBudgetPublic(_Wire):
    """A node's privacy budget per domain and period, as it last pushed it."""

    node: str
    received_at: datetime | None
    rows: list[BudgetRow]
