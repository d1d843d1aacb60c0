"""Hypothesis properties of policy evaluation."""

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import (
    BudgetRemaining,
    JobRequest,
    NodePolicy,
    PolicyState,
    evaluate,
    is_identifier,
    parse_policy,
)
from policies.decision import HARD_REASON_CODES

PURPOSES = ["GRU", "HMB", "DS", "POA", "NCU", "IRB"]
COLUMNS = [
    "maternal_age",
    "parity",
    "smoking",
    "bmi",
    "income",
    "apgar",
    "name",
    "email",
    "subject",
    "mother_name",
    "birth_date",
    "notes",
]
SAFE = [c for c in COLUMNS if not is_identifier(c)]
DOMAINS = ["births", "checkups", "purchases"]
REQUESTERS = ["hokkaido-u", "sapporo-med", "dairy-co"]
KINDS = ["train", "stats", "glm"]
MODELS = ["logreg", "mlp", "resnet"]

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def policies(draw) -> NodePolicy:
    domains = draw(st.lists(st.sampled_from(DOMAINS), unique=True, max_size=3))
    features = {
        d: draw(st.one_of(st.just("*"), st.lists(st.sampled_from(SAFE), unique=True)))
        for d in domains
    }
    mode = draw(st.sampled_from(["automatic", "manual", "automatic_for"]))
    require_dp = draw(st.booleans())
    # Without require_dp a domain may lack a budget (budget_not_configured).
    budgeted = domains if require_dp else [d for d in domains if draw(st.booleans())]
    data = {
        "min_cohort": draw(st.integers(1, 200)),
        "max_epsilon_per_job": draw(st.floats(0.1, 10)),
        "max_delta_per_job": draw(st.sampled_from([0.0, 1e-6, 1e-5, 1e-4])),
        "require_secure_aggregation": draw(st.booleans()),
        "require_dp": require_dp,
        "purposes": {
            "allowed": draw(st.lists(st.sampled_from(PURPOSES), unique=True)),
            "commercial": draw(st.booleans()),
        },
        "requesters": {
            "allowed": draw(st.lists(st.sampled_from(REQUESTERS), unique=True)),
            "types": draw(
                st.lists(
                    st.sampled_from(["academic", "public", "commercial", "clinical"]), unique=True
                )
            ),
        },
        "jobs": {
            "kinds": draw(st.lists(st.sampled_from(KINDS), unique=True)),
            "models": draw(st.one_of(st.just("*"), st.lists(st.sampled_from(MODELS), unique=True))),
        },
        "domains": {d: {"features": f} for d, f in features.items()},
        "budget": {d: {"epsilon": draw(st.floats(0.5, 20)), "delta": 1e-4} for d in budgeted},
        "approval": {
            "mode": mode,
            "automatic_for": ["hokkaido-u"] if mode == "automatic_for" else [],
        },
    }
    return parse_policy(data)


@st.composite
def jobs(draw) -> JobRequest:
    features = draw(st.lists(st.sampled_from(COLUMNS), unique=True, max_size=5))
    label = draw(st.one_of(st.none(), st.sampled_from(COLUMNS)))
    return JobRequest(
        job_id="j",
        kind=draw(st.sampled_from(KINDS)),
        domain=draw(st.sampled_from(DOMAINS)),
        features=tuple(features),
        label=label,
        model=draw(st.one_of(st.none(), st.sampled_from(MODELS))),
        purposes=tuple(draw(st.lists(st.sampled_from(PURPOSES), unique=True, min_size=1))),
        commercial=draw(st.booleans()),
        requester=draw(st.sampled_from(REQUESTERS)),
        requester_type=draw(st.sampled_from(["academic", "public", "commercial", "clinical"])),
        epsilon=(epsilon := draw(st.one_of(st.none(), st.floats(0.01, 15)))),
        dp_mechanism=None
        if epsilon is None
        else draw(st.sampled_from([None, "dp_sgd", "gaussian", "discrete_gaussian"])),
        delta=draw(st.one_of(st.none(), st.sampled_from([0.0, 1e-7, 1e-6, 1e-5, 1e-3]))),
        secure_aggregation=draw(st.booleans()),
        rounds=draw(st.integers(1, 20)),
    )


@st.composite
def states(draw) -> PolicyState:
    remaining = {
        d: BudgetRemaining(
            epsilon=draw(st.floats(0, 20)), delta=draw(st.sampled_from([0.0, 1e-6, 1e-4]))
        )
        for d in draw(st.lists(st.sampled_from(DOMAINS), unique=True))
    }
    return PolicyState(
        now=datetime(2025, 1, 1, tzinfo=UTC),
        remaining=remaining,
        cohort_size=draw(st.one_of(st.none(), st.integers(0, 300))),
    )


def hard(decision) -> set[str]:
    return {r.code for r in decision.reasons if r.code in HARD_REASON_CODES}


def expected_codes(job: JobRequest, policy: NodePolicy, state: PolicyState) -> set[str]:
    """An independent oracle: which rules fail."""
    codes = set()
    if any(p not in policy.purposes.allowed for p in job.purposes):
        codes.add("purpose_not_allowed")
    if not policy.purposes.commercial and (job.commercial or job.requester_type == "commercial"):
        codes.add("commercial_not_allowed")
    if (policy.requesters.allowed and job.requester not in policy.requesters.allowed) or (
        job.requester_type not in policy.requesters.types
    ):
        codes.add("requester_not_allowed")
    if job.kind not in policy.jobs.kinds:
        codes.add("kind_not_allowed")
    if job.model is not None and policy.jobs.models != "*" and job.model not in policy.jobs.models:
        codes.add("model_not_allowed")
    if policy.require_secure_aggregation and not job.secure_aggregation:
        codes.add("secure_aggregation_required")
    domain = policy.domains.get(job.domain)
    if domain is None:
        codes.add("domain_not_allowed")
    for col in job.columns():
        if is_identifier(col):
            codes.add("identifier_as_feature")
        elif domain is not None and domain.features != "*" and col not in domain.features:
            codes.add("feature_not_allowed")
    if job.epsilon is None:
        if policy.require_dp:
            codes.add("dp_required")
    else:
        if policy.require_dp and job.dp_mechanism is None:
            codes.add("dp_required")
        delta = job.delta or 0.0
        if job.epsilon > policy.max_epsilon_per_job:
            codes.add("epsilon_above_job_cap")
        if delta > policy.max_delta_per_job:
            codes.add("delta_above_job_cap")
        if domain is not None:
            rule = policy.budget.get(job.domain)
            if rule is None:
                codes.add("budget_not_configured")
            else:
                left = state.remaining.get(job.domain)
                eps_left = left.epsilon if left else rule.epsilon
                delta_left = left.delta if left else rule.delta
                if job.epsilon > eps_left or delta > delta_left:
                    codes.add("budget_exhausted")
    if state.cohort_size is not None and state.cohort_size < policy.min_cohort:
        codes.add("cohort_too_small")
    return codes


@SETTINGS
@given(jobs(), policies(), states())
def test_every_failing_rule_appears(job, policy, state):
    decision = evaluate(job, policy, state)
    assert hard(decision) == expected_codes(job, policy, state)


@SETTINGS
@given(jobs(), policies(), states())
def test_outcome_matches_reasons(job, policy, state):
    decision = evaluate(job, policy, state)
    if decision.outcome == "allow":
        assert decision.reasons == ()
    elif decision.outcome == "deny":
        assert decision.reasons and all(r.code in HARD_REASON_CODES for r in decision.reasons)
    else:
        assert [r.code for r in decision.reasons] == ["approval_required"]
    assert evaluate(job, policy, state) == decision  # pure: same inputs, same answer


@st.composite
def loosened(draw, job: JobRequest) -> JobRequest:
    """The same job asking for more: more columns, purposes, privacy loss; fewer safeguards."""
    extra_features = draw(st.lists(st.sampled_from(COLUMNS), max_size=3))
    extra_purposes = draw(st.lists(st.sampled_from(PURPOSES), max_size=2))
    eps = job.epsilon
    if eps is not None:
        # (Dropping DP altogether is another axis: require_dp decides it, not the caps.)
        eps = draw(st.floats(eps, 30)) if draw(st.booleans()) else eps
    delta = job.delta
    if delta is not None:
        delta = draw(
            st.sampled_from([d for d in (1e-7, 1e-6, 1e-5, 1e-3, 0.5) if d >= delta] or [delta])
        )
    return job.model_copy(
        update={
            "features": tuple(dict.fromkeys((*job.features, *extra_features))),
            "purposes": tuple(dict.fromkeys((*job.purposes, *extra_purposes))),
            "epsilon": eps,
            "delta": delta,
            "commercial": job.commercial or draw(st.booleans()),
            "secure_aggregation": job.secure_aggregation and draw(st.booleans()),
        }
    )


@SETTINGS
@given(st.data(), jobs(), policies(), states())
def test_asking_for_more_never_removes_a_reason(data, job, policy, state):
    """Adding a reason never turns deny into allow; a passing job stays passing when tightened."""
    loose = data.draw(loosened(job))
    tight_decision = evaluate(job, policy, state)
    loose_decision = evaluate(loose, policy, state)
    assert hard(tight_decision) <= hard(loose_decision)
    if tight_decision.outcome == "deny":
        assert loose_decision.outcome == "deny"
    if loose_decision.outcome != "deny":
        assert tight_decision.outcome == loose_decision.outcome


@SETTINGS
@given(jobs(), policies(), states(), st.sampled_from(["name", "email", "subject", "mother_name"]))
def test_an_identifier_always_denies(job, policy, state, identifier):
    bad = job.model_copy(update={"features": (*job.features, identifier)})
    decision = evaluate(bad, policy, state)
    assert decision.outcome == "deny"
    assert "identifier_as_feature" in decision.codes()


@SETTINGS
@given(jobs(), policies(), states(), st.integers(0, 300))
def test_smaller_cohort_never_helps(job, policy, state, smaller):
    if state.cohort_size is None:
        return
    fewer = state.model_copy(update={"cohort_size": min(smaller, state.cohort_size)})
    assert hard(evaluate(job, policy, state)) <= hard(evaluate(job, policy, fewer))
