"""Policy evaluation: whether a job may run on this node, and under which limits.

:func:`evaluate` is a pure function of the job, the policy and the node's state (no I/O,
no clock: the time comes in the state). It checks every rule and reports every failure,
never only the first, so a researcher can fix a job in one go.
"""

from __future__ import annotations

from policies.decision import BudgetRemaining, PolicyDecision, PolicyLimits, PolicyState, Reason
from policies.model import NodePolicy, is_identifier
from policies.request import JobRequest

__all__ = ["evaluate", "job_limits", "manual_approval"]


def _purpose_rules(job: JobRequest, policy: NodePolicy) -> list[Reason]:
    reasons = [
        Reason(
            code="purpose_not_allowed",
            message=f"purpose {code!r} is not among the allowed {list(policy.purposes.allowed)}",
            field="purposes",
        )
        for code in dict.fromkeys(job.purposes)
        if code not in policy.purposes.allowed
    ]
    if not policy.purposes.commercial and (job.commercial or job.requester_type == "commercial"):
        what = (
            "a commercial requester" if job.requester_type == "commercial" else "a commercial use"
        )
        reasons.append(
            Reason(
                code="commercial_not_allowed",
                message=(
                    f"{what} ({job.requester!r}) is not allowed: the policy refuses commercial use"
                ),
                field="requester_type" if job.requester_type == "commercial" else "commercial",
            )
        )
    return reasons


def _linkage_rules(job: JobRequest, policy: NodePolicy) -> list[Reason]:
    if not job.linked:
        return []
    rules = policy.linkage
    if not rules.allowed:
        msg = "this node does not take part in linked jobs (policy linkage.allowed is false)"
        return [Reason(code="linkage_not_allowed", message=msg, field="linked")]
    outside = [c for c in dict.fromkeys(job.purposes) if rules.purposes and c not in rules.purposes]
    if outside:
        msg = f"linked jobs are allowed only for {list(rules.purposes)}, not for {outside}"
        return [Reason(code="linkage_not_allowed", message=msg, field="purposes")]
    return []


def _requester_rules(job: JobRequest, policy: NodePolicy) -> list[Reason]:
    reasons: list[Reason] = []
    allowed = policy.requesters.allowed
    if allowed and job.requester not in allowed:
        reasons.append(
            Reason(
                code="requester_not_allowed",
                message=f"requester {job.requester!r} is not among the allowed {list(allowed)}",
                field="requester",
            )
        )
    if job.requester_type not in policy.requesters.types:
        reasons.append(
            Reason(
                code="requester_not_allowed",
                message=(
                    f"requester type {job.requester_type!r} is not among the allowed "
                    f"{list(policy.requesters.types)}"
                ),
                field="requester_type",
            )
        )
    return reasons


def _job_rules(job: JobRequest, policy: NodePolicy) -> list[Reason]:
    reasons: list[Reason] = []
    if job.kind not in policy.jobs.kinds:
        reasons.append(
            Reason(
                code="kind_not_allowed",
                message=f"job kind {job.kind!r} is not among the allowed {list(policy.jobs.kinds)}",
                field="kind",
            )
        )
    models = policy.jobs.models
    if job.model is not None and models != "*" and job.model not in models:
        reasons.append(
            Reason(
                code="model_not_allowed",
                message=f"model {job.model!r} is not among the allowed {list(models)}",
                field="model",
            )
        )
    if policy.require_secure_aggregation and not job.secure_aggregation:
        reasons.append(
            Reason(
                code="secure_aggregation_required",
                message="the policy requires secure aggregation (SecAgg+); the job turns it off",
                field="secure_aggregation",
            )
        )
    return reasons


def _data_rules(job: JobRequest, policy: NodePolicy) -> list[Reason]:
    reasons: list[Reason] = []
    domain = policy.domains.get(job.domain)
    if domain is None:
        reasons.append(
            Reason(
                code="domain_not_allowed",
                message=f"domain {job.domain!r} is not among the allowed {sorted(policy.domains)}",
                field="domain",
            )
        )
    for column in job.columns():
        field = "label" if column == job.label and column not in job.features else "features"
        if is_identifier(column, policy.identifiers.extra):
            reasons.append(
                Reason(
                    code="identifier_as_feature",
                    message=f"column {column!r} is a direct identifier or free text; never usable",
                    field=field,
                )
            )
        elif domain is not None and domain.features != "*" and column not in domain.features:
            reasons.append(
                Reason(
                    code="feature_not_allowed",
                    message=f"column {column!r} is not allowed in domain {job.domain!r}",
                    field=field,
                )
            )
    return reasons


def _privacy_rules(job: JobRequest, policy: NodePolicy, state: PolicyState) -> list[Reason]:
    reasons: list[Reason] = []
    if job.epsilon is None:
        if policy.require_dp:
            reasons.append(
                Reason(
                    code="dp_required",
                    message="the policy requires differential privacy; the job sets no epsilon",
                    field="epsilon",
                )
            )
        return reasons
    if job.dp_mechanism is None and policy.require_dp:
        # An ε that no mechanism spends protects nothing: only a mechanism that runs counts.
        reasons.append(
            Reason(
                code="dp_required",
                message=(
                    "the policy requires differential privacy; no DP mechanism runs for this "
                    "job, whatever its epsilon"
                ),
                field="epsilon",
            )
        )
    if job.exact_releases and policy.require_dp:
        # A noisy model beside an exact release protects nothing in that release.
        reasons.append(
            Reason(
                code="dp_required",
                message=(
                    "the policy requires differential privacy; the job releases "
                    f"{', '.join(job.exact_releases)} without DP noise"
                ),
                field="epsilon",
            )
        )
    delta = job.delta if job.delta is not None else 0.0
    if job.epsilon > policy.max_epsilon_per_job:
        reasons.append(
            Reason(
                code="epsilon_above_job_cap",
                message=(
                    f"epsilon {job.epsilon} is above the per-job cap {policy.max_epsilon_per_job}"
                ),
                field="epsilon",
            )
        )
    if delta > policy.max_delta_per_job:
        reasons.append(
            Reason(
                code="delta_above_job_cap",
                message=f"delta {delta} is above the per-job cap {policy.max_delta_per_job}",
                field="delta",
            )
        )
    if job.domain not in policy.domains:
        return reasons  # already denied; no budget to speak of
    rule = policy.budget.get(job.domain)
    if rule is None:
        reasons.append(
            Reason(
                code="budget_not_configured",
                message=f"no privacy budget is configured for domain {job.domain!r}",
                field="domain",
            )
        )
        return reasons
    left = state.remaining.get(job.domain) or BudgetRemaining(
        epsilon=rule.epsilon, delta=rule.delta
    )
    if job.epsilon > left.epsilon or delta > left.delta:
        reasons.append(
            Reason(
                code="budget_exhausted",
                message=(
                    f"domain {job.domain!r} has epsilon {max(left.epsilon, 0.0):.6g}, delta "
                    f"{max(left.delta, 0.0):.3g} left this {rule.period}; the job asks for "
                    f"epsilon {job.epsilon:.6g}, delta {delta:.3g}"
                ),
                field="epsilon" if job.epsilon > left.epsilon else "delta",
            )
        )
    return reasons


def _cohort_rules(policy: NodePolicy, state: PolicyState) -> list[Reason]:
    if state.cohort_size is not None and state.cohort_size < policy.min_cohort:
        return [
            Reason(
                code="cohort_too_small",
                message=(
                    f"{state.cohort_size} subjects remain after consent filtering; "
                    f"the policy needs at least {policy.min_cohort}"
                ),
                field=None,
            )
        ]
    return []


def manual_approval(job: JobRequest, policy: NodePolicy) -> bool:
    """Tell whether the approval mode makes this job wait for the node admin.

    Args:
        job: the job.
        policy: the node policy.

    Returns:
        True for ``manual`` mode, and for ``automatic_for`` when the requester is not listed.

    """
    mode = policy.approval.mode
    return mode == "manual" or (
        mode == "automatic_for" and job.requester not in policy.approval.automatic_for
    )


def job_limits(job: JobRequest, policy: NodePolicy) -> PolicyLimits:
    """Return the limits under which the job must run on this node.

    Args:
        job: the job.
        policy: the node policy.

    Returns:
        The job's (ε, δ) target (δ = 0 when a DP job gives none), the policy's minimum
        cohort and cell count, and whether secure aggregation is mandatory.

    """
    delta = None if job.epsilon is None else (job.delta if job.delta is not None else 0.0)
    return PolicyLimits(
        epsilon=job.epsilon,
        delta=delta,
        min_cohort=policy.min_cohort,
        min_cell_count=policy.min_cell_count,
        secure_aggregation=policy.require_secure_aggregation or job.secure_aggregation,
    )


def evaluate(job: JobRequest, policy: NodePolicy, state: PolicyState) -> PolicyDecision:
    """Evaluate a job against a node policy.

    Every rule is checked and every failure reported. A failing hard rule denies the job;
    when all pass, the approval mode decides between ``allow`` and ``needs_approval``. The
    budget check here is advisory (it reads ``state.remaining``); the budget ledger's atomic
    :meth:`~policies.budget_store.BudgetLedger.reserve` is the binding one.

    Args:
        job: the job as the policy sees it.
        policy: the node policy.
        state: the node's clock, budget left per domain and cohort size.

    Returns:
        The :class:`PolicyDecision`: outcome, every reason, and the limits.

    """
    reasons = [
        *_purpose_rules(job, policy),
        *_requester_rules(job, policy),
        *_job_rules(job, policy),
        *_data_rules(job, policy),
        *_privacy_rules(job, policy, state),
        *_cohort_rules(policy, state),
        *_linkage_rules(job, policy),
    ]
    manual = manual_approval(job, policy)
    outcome = PolicyDecision.outcome_for(reasons, manual)
    if outcome == "needs_approval":
        mode = policy.approval.mode
        reasons = [
            Reason(
                code="approval_required",
                message=(
                    f"approval mode {mode!r}: the node admin must approve jobs of {job.requester!r}"
                ),
                field=None,
            )
        ]
    return PolicyDecision(
        job_id=job.job_id,
        outcome=outcome,
        reasons=tuple(reasons),
        limits=job_limits(job, policy),
        evaluated_at=state.now,
    )
