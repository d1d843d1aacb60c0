"""Wire models the coordinator and the node service both speak (JSON over HTTPS).

Only what crosses the network between ``coordinator/`` and ``nodes/`` lives here, so the
two never import each other: a node's registration (its published caps), the view of a
job a node pulls, the decision it posts back, and the public job and approval records.
Every model forbids unknown fields and bounds its strings and numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from federation.errors import MAX_REASON

__all__ = [
    "JOB_STATES",
    "TERMINAL_STATES",
    "ApprovalPublic",
    "ApprovalStatus",
    "DecisionCreate",
    "DecisionOutcome",
    "DecisionReason",
    "DecisionSource",
    "JobEventPublic",
    "JobPublic",
    "JobState",
    "NodeJobView",
    "NodeName",
    "NodeRegistration",
    "ReleaseDecision",
    "ReleaseDecisionCreate",
    "ReleaseDecisionPublic",
    "ReleaseReviewMode",
    "ReleaseStatus",
    "ReleaseView",
]

JobState = Literal[
    "submitted", "awaiting_approval", "approved", "running", "succeeded", "failed", "cancelled"
]
#: Every job state, in lifecycle order.
JOB_STATES: tuple[JobState, ...] = (
    "submitted",
    "awaiting_approval",
    "approved",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
#: States a job never leaves.
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

#: A node's approval of one job: ``pending`` until the node service has evaluated it,
#: ``needs_approval`` while it waits for the node admin.
ApprovalStatus = Literal["pending", "needs_approval", "approved", "rejected"]
DecisionOutcome = Literal["approve", "reject", "needs_approval"]
DecisionSource = Literal["policy", "admin"]

#: A node policy's ``[release] review``: results wait for none, one or two of its admins.
ReleaseReviewMode = Literal["none", "admin", "two_reviewers"]
#: Where one node's review of one job's result stands.
ReleaseStatus = Literal["held", "released", "withheld"]
ReleaseDecision = Literal["release", "withhold"]

NodeName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
_Text = Annotated[str, Field(min_length=1, max_length=MAX_REASON)]
_Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
_Column = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionReason(_Wire):
    """One reason of a decision: a machine code and a message for people."""

    code: _Code
    message: _Text


class NodeRegistration(_Wire):
    """What a node publishes about itself when it registers or polls (no data, only caps).

    Attributes:
        max_epsilon_per_job: the policy's per-job ε cap; the coordinator refuses a job that
            asks for more at submission.
        domains: per served data domain, the allowed columns or ``"*"`` (any non-identifier).
        approval_mode: how the node's policy approves jobs (``automatic``, ``manual``,
            ``automatic_for``), shown to researchers.
        public_key_pem: the node's Ed25519 public key, for auditors.
        release_review: the policy's ``[release] review``; results of jobs the node took part
            in are held at the coordinator until its admin (or two) release them.
    """

    max_epsilon_per_job: float | None = Field(default=None, gt=0, le=1000, allow_inf_nan=False)
    domains: dict[
        Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")], list[_Column] | Literal["*"]
    ] = Field(default_factory=dict, max_length=64)
    approval_mode: Literal["automatic", "manual", "automatic_for"] | None = None
    public_key_pem: str | None = Field(default=None, max_length=4000)
    release_review: ReleaseReviewMode | None = None


class DecisionCreate(_Wire):
    """A node's decision about a job: the policy's outcome, or its admin's.

    A ``reject`` needs at least one reason; an admin's ``approve`` may carry one.
    """

    outcome: DecisionOutcome
    source: DecisionSource = "policy"
    reasons: list[DecisionReason] = Field(default_factory=list, max_length=50)


class ApprovalPublic(_Wire):
    """One targeted node's approval of one job."""

    job_id: str
    node: str
    status: ApprovalStatus
    source: DecisionSource | None = None
    reasons: list[DecisionReason] = Field(default_factory=list)
    decided_by: str | None = None
    decided_at: datetime | None = None
    updated_at: datetime


class JobEventPublic(_Wire):
    """One step of a job's history: the state entered, when, and why."""

    at: datetime
    state: JobState
    reason: str
    round: int | None = None


class JobPublic(_Wire):
    """A job's status as the coordinator shows it (to its owner, auditors, the operator)."""

    id: str
    name: str
    kind: str
    owner: str
    state: JobState
    reason: str
    nodes: list[str]
    min_nodes: int
    round: int = 0
    rounds_total: int
    metrics: dict[str, Any] = Field(default_factory=dict)
    submitted_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    approvals: list[ApprovalPublic] = Field(default_factory=list)
    has_result: bool = False
    held: bool = Field(default=False, description="The result waits for the nodes' release review.")


class NodeJobView(_Wire):
    """A job as a targeted node sees it: the spec to evaluate and this node's approval."""

    id: str
    name: str
    owner: str
    state: JobState
    reason: str
    spec: dict[str, Any]
    submitted_at: datetime
    approval: ApprovalPublic


class ReleaseDecisionCreate(_Wire):
    """A node admin's output-checking decision on a held result.

    ``withhold`` needs a reason (shown to the researcher); ``release`` may carry one.
    """

    decision: ReleaseDecision
    reason: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _withhold_has_reason(self) -> ReleaseDecisionCreate:
        if self.decision == "withhold" and not (self.reason or "").strip():
            raise ValueError("reason: a withheld result needs a reason")
        return self


class ReleaseDecisionPublic(_Wire):
    """One reviewer's decision on one job's result for one node (who, when, what, why)."""

    job_id: str
    node: str
    decision: ReleaseDecision
    reason: str | None = None
    reviewer_id: str
    reviewer: str
    result_hash: str | None = None
    at: datetime


class ReleaseView(_Wire):
    """A result held for one node's review, as that node's admins see it.

    A summary only, never the result's data (report, model, plot).
    """

    job_id: str
    name: str
    owner: str
    kind: str
    state: JobState
    node: str
    review: ReleaseReviewMode
    status: ReleaseStatus
    reviews_needed: int
    result_status: str
    result_hash: str
    result_created_at: datetime
    has_model: bool
    has_plot: bool
    report_keys: list[str] = Field(default_factory=list)
    epsilon: float | None = Field(default=None, description="The ε this node spent on the job.")
    decisions: list[ReleaseDecisionPublic] = Field(default_factory=list)
