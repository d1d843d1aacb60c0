"""Request and response models of the node's own admin API (:mod:`nodes.admin_api`).

The admin API serves the node's staff on loopback; its models carry job summaries, the
node's budget, policy and ledger heads, never a token or a record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from consent.signing import SignedTreeHead
from federation.api_models import DecisionReason
from policies.budget_records import Reservation

__all__ = [
    "ApproveBody",
    "DecisionPublic",
    "ErrorBody",
    "Health",
    "JobReservation",
    "LedgerHead",
    "LedgerVerification",
    "PolicyPublic",
    "PurposePublic",
    "RejectBody",
    "ReleaseBody",
    "Status",
    "WaitingJob",
    "WithholdBody",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _stripped(value: str | None) -> str | None:
    return None if value is None else value.strip()


class ErrorBody(_Model):
    """Every error answer: a message for people, a machine code, and the field concerned."""

    detail: str
    code: str
    field: str | None = None


class Health(_Model):
    """The service answers (no secret, no coordinator call)."""

    status: Literal["ok"] = "ok"
    node: str


class Status(_Model):
    """The node service's state: its last poll of the coordinator and its SuperNode.

    Attributes:
        node: the node's name.
        coordinator_url: where the service polls.
        poll_interval: seconds between polls.
        last_poll_at: when the last poll finished (None: no poll yet).
        last_poll_error: why the last poll failed (None: it succeeded).
        supernode: the SuperNode supervisor's status, if the node runs one.
    """

    node: str
    coordinator_url: str
    poll_interval: float
    last_poll_at: datetime | None = None
    last_poll_error: str | None = None
    supernode: dict[str, Any] | None = None


class PurposePublic(_Model):
    """A job's declared purpose (DUO codes, project, requester)."""

    duo: list[str] = Field(default_factory=list)
    disease: str | None = None
    project: str | None = None
    requester: str | None = None
    requester_type: str | None = None
    commercial: bool | None = None


class WaitingJob(_Model):
    """A job waiting for this node's decision, with what it would use here.

    Attributes:
        id: the job id at the coordinator.
        name: the job's name.
        owner: the researcher who submitted it.
        kind: ``train``, ``stats`` or ``glm``.
        state: the job's state at the coordinator.
        approval_status: ``pending`` (the policy has not run yet) or ``needs_approval``.
        submitted_at: when it was submitted.
        purpose: its declared purpose.
        domain: the data domain it reads.
        features: the columns it reads.
        label: the outcome column, if any.
        epsilon: the ε it asks this node to spend (None: no DP).
        delta: the δ it asks for.
        rounds: federated rounds.
        subjects_after_consent: subjects whose consent permits this purpose now (None: the
            node has no data folder or no such table).
        policy_outcome: the node policy's verdict (``allow``, ``deny``, ``needs_approval``,
            or ``invalid`` for a spec the node cannot read).
        reasons: every reason of that verdict.
        link_key: for a linked job, its linkage column (None otherwise).
        linkage: for a linked job, what the linkage reveals to this node (None otherwise).
    """

    id: str
    name: str
    owner: str
    kind: str | None = None
    state: str
    approval_status: str
    submitted_at: datetime
    purpose: PurposePublic
    domain: str | None = None
    features: list[str] = Field(default_factory=list)
    label: str | None = None
    epsilon: float | None = None
    delta: float | None = None
    rounds: int | None = None
    subjects_after_consent: int | None = None
    policy_outcome: Literal["allow", "deny", "needs_approval", "invalid"]
    reasons: list[DecisionReason] = Field(default_factory=list)
    link_key: str | None = None
    linkage: str | None = None


class ApproveBody(_Model):
    """An admin's approval; the reason is optional (kept with the approval)."""

    reason: str | None = Field(default=None, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return _stripped(value) or None


class RejectBody(_Model):
    """An admin's rejection; the reason is required (shown to the researcher)."""

    reason: str = Field(min_length=1, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a rejection needs a reason")
        return value.strip()


class ReleaseBody(_Model):
    """An admin's release of a held result; the reason is optional."""

    reason: str | None = Field(default=None, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return _stripped(value) or None


class WithholdBody(_Model):
    """An admin's withholding of a held result; the reason is required."""

    reason: str = Field(min_length=1, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a withheld result needs a reason")
        return value.strip()


class DecisionPublic(_Model):
    """The decision the node posted to the coordinator."""

    job_id: str
    outcome: Literal["approve", "reject", "needs_approval"]
    source: Literal["policy", "admin"]
    reasons: list[DecisionReason] = Field(default_factory=list)


class PolicyPublic(_Model):
    """The node policy in force: its TOML text and the parsed model."""

    toml: str
    policy: dict[str, Any]


class LedgerHead(_Model):
    """The ledger's size now and its latest signed head.

    Attributes:
        size: entries in the ledger now.
        latest_head: the newest signed head (None: never signed).
        covers_all: the latest head covers every entry.
    """

    size: int
    latest_head: SignedTreeHead | None = None
    covers_all: bool


class LedgerVerification(_Model):
    """The outcome of verifying the node's ledger against its own public key.

    Attributes:
        ok: every entry, node and signed head checked out.
        tree_size: entries verified (when ok).
        root_hash: the recomputed root (when ok).
        heads_checked: signed heads checked (when ok).
        entries_by_kind: entry counts per kind (when ok).
        bad_index: the first entry proven bad (when not ok, if known).
        reason: what did not hold (when not ok).
    """

    ok: bool
    tree_size: int | None = None
    root_hash: str | None = None
    heads_checked: int | None = None
    entries_by_kind: dict[str, int] = Field(default_factory=dict)
    bad_index: int | None = None
    reason: str | None = None


class JobReservation(_Model):
    """One job's budget reservation at this node, and when and why it was released.

    Attributes:
        job_id: the job.
        domain: the domain whose budget it holds.
        period: the budget period.
        status: ``active`` or ``released``.
        reserved_epsilon: ε reserved (the job's target).
        used_epsilon: the job's composed ε over the rounds charged here.
        rounds_charged: rounds charged here.
        released_at: when it was released (None while active).
        release_reason: why; for a failed job, which rounds stay charged and why.
    """

    job_id: str
    domain: str
    period: str
    status: str
    reserved_epsilon: float
    used_epsilon: float
    rounds_charged: int
    released_at: datetime | None = None
    release_reason: str | None = None

    @classmethod
    def of(cls, r: Reservation) -> JobReservation:
        """Return the public view of a budget ledger reservation."""
        return cls(
            job_id=r.job_id,
            domain=r.domain,
            period=r.period,
            status=r.status,
            reserved_epsilon=r.epsilon,
            used_epsilon=r.used_epsilon,
            rounds_charged=r.charges,
            released_at=r.released_at,
            release_reason=r.release_reason,
        )
