"""Each policy rule, every reason reported together, approval modes and limits."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies import (
    REASON_CODES,
    BudgetRemaining,
    JobRequest,
    PolicyState,
    evaluate,
    load_policy,
)

DATA = Path(__file__).parent / "data"
NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def policy():
    return load_policy(DATA / "city_policy.toml")


def job(**changes):
    base = dict(
        job_id="job-1",
        kind="train",
        domain="births",
        features=("maternal_age", "gestational_weeks", "parity"),
        label="low_birth_weight",
        model="logreg",
        purposes=("HMB",),
        requester="hokkaido-u",
        requester_type="academic",
        epsilon=2.0,
        delta=1e-6,
        dp_mechanism="dp_sgd",
        secure_aggregation=True,
        rounds=5,
    )
    base.update(changes)
    return JobRequest(**base)


def state(**changes):
    return PolicyState(now=NOW, **changes)


def test_good_job_is_allowed_with_limits(policy):
    decision = evaluate(job(), policy, state(cohort_size=400))
    assert decision.outcome == "allow"
    assert decision.allowed
    assert decision.reasons == ()
    assert decision.limits.epsilon == 2.0
    assert decision.limits.delta == 1e-6
    assert decision.limits.min_cohort == 50
    assert decision.limits.min_cell_count == 10
    assert decision.limits.secure_aggregation
    assert decision.evaluated_at == NOW


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"purposes": ("HMB", "POA")}, "purpose_not_allowed", "purposes"),
        ({"commercial": True}, "commercial_not_allowed", "commercial"),
        (
            {"requester_type": "commercial", "commercial": True},
            "commercial_not_allowed",
            "requester_type",
        ),
        ({"requester_type": "commercial"}, "requester_not_allowed", "requester_type"),
        ({"domain": "purchases"}, "domain_not_allowed", "domain"),
        ({"features": ("maternal_age", "income")}, "feature_not_allowed", "features"),
        ({"label": "apgar"}, "feature_not_allowed", "label"),
        ({"features": ("maternal_age", "name")}, "identifier_as_feature", "features"),
        ({"features": ("maternal_age", "mother_code")}, "identifier_as_feature", "features"),
        (
            {"kind": "glm", "model": None, "features": ("subject",)},
            "identifier_as_feature",
            "features",
        ),
        ({"model": "resnet"}, "model_not_allowed", "model"),
        ({"epsilon": 3.5}, "epsilon_above_job_cap", "epsilon"),
        ({"delta": 1e-3}, "delta_above_job_cap", "delta"),
        ({"epsilon": None}, "dp_required", "epsilon"),
        ({"secure_aggregation": False}, "secure_aggregation_required", "secure_aggregation"),
    ],
)
def test_each_rule_denies_with_its_reason(policy, changes, code, field):
    decision = evaluate(job(**changes), policy, state())
    assert decision.outcome == "deny"
    assert code in decision.codes()
    assert any(r.code == code and r.field == field for r in decision.reasons)
    assert all(r.code in REASON_CODES for r in decision.reasons)


def test_kind_not_allowed():
    from policies import parse_policy

    policy = parse_policy({"jobs": {"kinds": ["stats"]}, "require_dp": False})
    decision = evaluate(job(domain="x"), policy, state())
    assert "kind_not_allowed" in decision.codes()


def test_requester_not_in_allow_list():
    from policies import parse_policy

    policy = parse_policy({"requesters": {"allowed": ["hokkaido-u"]}, "require_dp": False})
    assert "requester_not_allowed" in evaluate(job(requester="elsewhere"), policy, state()).codes()
    assert "requester_not_allowed" not in evaluate(job(), policy, state()).codes()


def test_identifiers_refused_even_under_a_wildcard(policy):
    # checkups allows "*": identifiers stay refused whatever the policy says.
    decision = evaluate(
        job(domain="checkups", features=("bmi", "email", "clinical_notes"), label="anaemia"),
        policy,
        state(),
    )
    assert decision.outcome == "deny"
    assert [r.code for r in decision.reasons] == ["identifier_as_feature", "identifier_as_feature"]


def test_budget_exhausted_is_refused(policy):
    left = {"births": BudgetRemaining(epsilon=1.0, delta=1e-4, period="2025")}
    decision = evaluate(job(epsilon=2.0), policy, state(remaining=left))
    assert decision.outcome == "deny"
    assert decision.codes() == ["budget_exhausted"]
    assert "1 left" in decision.reasons[0].message or "epsilon 1" in decision.reasons[0].message


def test_budget_delta_exhausted(policy):
    left = {"births": BudgetRemaining(epsilon=5.0, delta=1e-7)}
    decision = evaluate(job(delta=1e-6), policy, state(remaining=left))
    assert [(r.code, r.field) for r in decision.reasons] == [("budget_exhausted", "delta")]


def test_missing_remaining_uses_the_full_budget(policy):
    assert evaluate(job(epsilon=3.0), policy, state()).outcome == "allow"


def test_cohort_too_small(policy):
    decision = evaluate(job(), policy, state(cohort_size=49))
    assert decision.codes() == ["cohort_too_small"]
    assert evaluate(job(), policy, state(cohort_size=50)).outcome == "allow"


def test_all_reasons_reported_together(policy):
    bad = job(
        purposes=("HMB", "POA", "NRES"),
        commercial=True,
        requester_type="commercial",
        features=("maternal_age", "name", "income", "address"),
        model="resnet",
        epsilon=5.0,
        delta=1e-3,
        secure_aggregation=False,
    )
    left = {"births": BudgetRemaining(epsilon=0.5, delta=1e-4)}
    decision = evaluate(bad, policy, state(remaining=left, cohort_size=10))
    assert decision.outcome == "deny"
    codes = decision.codes()
    expected = {
        "purpose_not_allowed",
        "commercial_not_allowed",
        "requester_not_allowed",
        "identifier_as_feature",
        "feature_not_allowed",
        "model_not_allowed",
        "epsilon_above_job_cap",
        "delta_above_job_cap",
        "budget_exhausted",
        "secure_aggregation_required",
        "cohort_too_small",
    }
    assert expected <= set(codes)
    assert codes.count("purpose_not_allowed") == 2
    assert codes.count("identifier_as_feature") == 2


def test_approval_modes(policy):
    assert evaluate(job(requester="hokkaido-u"), policy, state()).outcome == "allow"
    waiting = evaluate(job(requester="sapporo-med"), policy, state())
    assert waiting.outcome == "needs_approval"
    assert waiting.codes() == ["approval_required"]
    manual = policy.model_copy(
        update={
            "approval": policy.approval.model_copy(update={"mode": "manual", "automatic_for": ()})
        }
    )
    assert evaluate(job(), manual, state()).outcome == "needs_approval"
    # A hard failure denies even when approval would be manual.
    assert evaluate(job(epsilon=9.0), manual, state()).outcome == "deny"


def test_decision_serialises_to_json(policy):
    decision = evaluate(job(epsilon=9.0), policy, state())
    again = type(decision).model_validate_json(decision.model_dump_json())
    assert again == decision


def test_job_request_validation():
    with pytest.raises(ValueError):
        job(epsilon=float("nan"))
    with pytest.raises(ValueError):
        job(kind="mine")
    with pytest.raises(ValueError):
        job(extra_field=1)
    assert job(purposes=("hmb",)).purposes == ("HMB",)


def test_job_spec_adapter_feeds_evaluate(policy):
    from federation.spec import parse_job_spec

    spec = parse_job_spec(
        {
            "kind": "train",
            "domain": "births",
            "features": ["maternal_age", "parity"],
            "label": "low_birth_weight",
            "purpose": {"duo": ["HMB"], "requester": "hokkaido-u"},
            "privacy": {"epsilon": 2.0, "delta": 1e-6},
        }
    )
    request = spec.to_policy_request("job-42")
    decision = evaluate(request, policy, state(cohort_size=120))
    assert decision.outcome == "allow", decision.reasons
    bad = parse_job_spec(
        {
            "kind": "stats",
            "domain": "births",
            "stats": {"variables": ["maternal_age", "email"], "group_by": ["name"]},
            "privacy": {"epsilon": 1.0},
        }
    ).to_policy_request("job-43")
    assert evaluate(bad, policy, state()).codes().count("identifier_as_feature") == 2
