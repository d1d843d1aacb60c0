"""What policy evaluation takes in besides the job and the policy, and what it gives back.

:class:`PolicyState` is the node's situation at evaluation time (the clock, the budget
left per domain, the cohort size); :class:`PolicyDecision` is the outcome with every
reason and the limits under which the job may run. All are frozen pydantic models, so a
node can send a decision over its API as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "HARD_REASON_CODES",
    "REASON_CODES",
    "BudgetRemaining",
    "Outcome",
    "PolicyDecision",
    "PolicyLimits",
    "PolicyState",
    "Reason",
]

#: Every reason code, with the public text an API may show for it.
REASON_CODES: dict[str, str] = {
    "approval_required": "the node admin must approve this job",
    "budget_exhausted": "the domain's privacy budget for the period cannot cover the job",
    "budget_not_configured": "the node has no privacy budget for this domain",
    "cohort_too_small": "too few consenting subjects for this job",
    "commercial_not_allowed": "commercial use is not allowed on this node",
    "delta_above_job_cap": "the job's delta is above the node's per-job cap",
    "domain_not_allowed": "the node does not serve this data domain",
    "dp_required": "the node requires differential privacy (epsilon, delta)",
    "epsilon_above_job_cap": "the job's epsilon is above the node's per-job cap",
    "feature_not_allowed": "a column is not allowed for this domain",
    "identifier_as_feature": "direct identifiers and free text are never usable",
    "kind_not_allowed": "this kind of job is not allowed on this node",
    "linkage_not_allowed": "the node does not take part in linked jobs for this purpose",
    "model_not_allowed": "this model is not allowed on this node",
    "purpose_not_allowed": "a stated purpose is not allowed on this node",
    "requester_not_allowed": "the requester is not allowed on this node",
    "secure_aggregation_required": "the node requires secure aggregation",
}

#: Codes of hard rules: any of them denies the job.
HARD_REASON_CODES = frozenset(REASON_CODES) - {"approval_required"}

Outcome = Literal["allow", "deny", "needs_approval"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reason(_Frozen):
    """One reason a job is refused or waits.

    Attributes:
        code: a machine-readable code from :data:`REASON_CODES`.
        message: a human-readable explanation naming the offending value.
        field: the job-request field concerned (``features``, ``epsilon``), if any.

    """

    code: str
    message: str
    field: str | None = None


class BudgetRemaining(_Frozen):
    """The privacy budget a domain has left in the current period.

    Attributes:
        epsilon: ε still available (budget minus composed spent minus active reservations).
        delta: δ still available.
        period: the period key (``2025``, ``2025-04`` or ``total``).

    """

    epsilon: float
    delta: float
    period: str = ""


class PolicyState(_Frozen):
    """What the node knows at evaluation time.

    Attributes:
        now: the evaluation time (tz-aware).
        remaining: budget left per domain for the current period (from the budget ledger);
            a domain missing here is taken to have its full policy budget left (the ledger's
            atomic reservation is the binding check).
        cohort_size: subjects left after consent filtering, if known.

    """

    now: datetime
    remaining: dict[str, BudgetRemaining] = Field(default_factory=dict)
    cohort_size: int | None = Field(default=None, ge=0)


class PolicyLimits(_Frozen):
    """The limits under which an allowed job must run on this node.

    Attributes:
        epsilon: the job's ε target (``None``: no DP, only when the policy allows it).
        delta: the job's δ target.
        min_cohort: refuse a round with fewer subjects after consent filtering.
        min_cell_count: suppress released cells counting fewer subjects.
        secure_aggregation: whether updates must go through SecAgg+.

    """

    epsilon: float | None
    delta: float | None
    min_cohort: int
    min_cell_count: int
    secure_aggregation: bool


class PolicyDecision(_Frozen):
    """The outcome of evaluating a job against a node policy.

    Attributes:
        job_id: the job evaluated.
        outcome: ``allow``, ``deny`` or ``needs_approval``.
        reasons: every failing rule (``deny``), or ``approval_required`` (``needs_approval``);
            empty for ``allow``.
        limits: the limits under which the job may run.
        evaluated_at: the state's clock.

    """

    job_id: str
    outcome: Outcome
    reasons: tuple[Reason, ...] = ()
    limits: PolicyLimits
    evaluated_at: datetime

    @property
    def allowed(self) -> bool:
        """Whether the job may run now without an admin's approval."""
        return self.outcome == "allow"

    def codes(self) -> list[str]:
        """Return the reason codes, in order.

        Returns:
            The codes.

        """
        return [r.code for r in self.reasons]

    @staticmethod
    def outcome_for(reasons: Iterable[Reason], manual: bool) -> Outcome:
        """Derive the outcome from the failing rules and the approval mode.

        Args:
            reasons: the failing hard rules.
            manual: whether the approval mode requires the admin for this job.

        Returns:
            ``deny`` when any hard rule failed, else ``needs_approval`` when manual, else
            ``allow``.

        """
        if any(r.code in HARD_REASON_CODES for r in reasons):
            return "deny"
        return "needs_approval" if manual else "allow"
