"""The node's enforcement point: policy → consent now → cohort → budget + ledger, per round."""

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.spec import parse_job_spec
from nodes.cli import import_consents, init_node
from nodes.client_app import RoundUse
from nodes.enforcement import EnforcementPoint, JobRefused

POLICY = """
min_cohort = 20
min_cell_count = 10
max_epsilon_per_job = 3.0
max_delta_per_job = 1e-05
require_secure_aggregation = true
require_dp = false
[purposes]
allowed = ["GRU", "HMB", "DS"]
commercial = false
[requesters]
allowed = []
types = ["academic", "public", "commercial", "clinical"]
[jobs]
kinds = ["train", "stats", "glm"]
models = "*"
[domains.births]
features = "*"
[budget.births]
epsilon = 4.0
delta = 0.0001
period = "year"
[approval]
mode = "automatic"
"""

SUBJECTS = [f"{i:032x}" for i in range(1, 41)]
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def _consents(path: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    lines = [
        "subject,recorded_at,status,decision,purposes,commercial,domains,period_start,period_end"
    ]
    for subject, at, status, decision, purposes in rows:
        lines.append(f"{subject},{at},{status},{decision},{purposes},no,,,")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def node(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    init_node(tmp_path / "node", "clinic", policy)
    clock = Clock()
    point = EnforcementPoint("clinic", tmp_path / "node", clock=clock)
    rows = [(s, "2025-01-01T00:00:00+00:00", "active", "permit", "HMB") for s in SUBJECTS]
    import_consents(point, _consents(tmp_path / "consents.csv", rows))
    return point, clock, tmp_path


def _frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "subject": SUBJECTS,
            "maternal_age": rng.integers(20, 40, 40),
            "lbw": rng.integers(0, 2, 40),
        }
    )


def _job(**changes):
    spec = {
        "kind": "train",
        "features": ["maternal_age"],
        "label": "lbw",
        "rounds": 3,
        "privacy": {"epsilon": 3.0, "delta": 1e-5},
        "purpose": {"duo": ["HMB"], "requester": "uni"},
    }
    spec.update(changes)
    return parse_job_spec(spec)


MECH = {"type": "subsampled_gaussian", "noise_multiplier": 2.0, "sample_rate": 0.1, "steps": 10}


def _usage(point, job_id):
    return [
        e.payload for e in point.ledger().entries(kind="job.usage") if e.payload["job_id"] == job_id
    ]


def test_withdrawal_between_rounds_two_and_three_counts_from_round_three(node):
    point, clock, tmp = node
    job = _job()
    point.accept(job, "j1")
    for round_no in (1, 2, 3):
        if round_no == 3:
            withdrawn = SUBJECTS[0]
            import_consents(
                point,
                _consents(
                    tmp / "withdraw.csv",
                    [
                        (
                            withdrawn,
                            (clock.now - timedelta(minutes=1)).isoformat(),
                            "inactive",
                            "deny",
                            "",
                        )
                    ],
                ),
            )
        rows = point.select(job, "j1", round_no, _frame())
        point.commit(
            job, RoundUse("j1", round_no, "train", rows["subject"].tolist(), 0.5, 1e-5, MECH)
        )
        clock.now += timedelta(hours=1)
    usage = _usage(point, "j1")
    assert [u["n_subjects"] for u in usage] == [40, 40, 39]
    assert usage[0]["subject_commitment"] == usage[1]["subject_commitment"]
    assert usage[2]["subject_commitment"] != usage[1]["subject_commitment"]
    disclosure = point.state.disclosure("j1")
    assert SUBJECTS[0] in disclosure["rounds"]["2"] and SUBJECTS[0] not in disclosure["rounds"]["3"]
    salt_file = point.state.root / "salts" / "j1.json"
    assert stat.S_IMODE(os.stat(salt_file).st_mode) == 0o600


def test_over_budget_job_refused_with_reason_and_charges_nothing(node):
    point, _, _ = node
    point.accept(_job(), "first")  # 3.0 of the year's 4.0
    before = point.ledger().size
    with pytest.raises(JobRefused) as err:
        point.accept(_job(), "second")
    assert err.value.reasons[0][0] == "budget_exhausted"
    assert point.budget().reservation("second") is None
    assert point.ledger().size == before


def test_commercial_job_refused_by_policy_and_not_permitted_purpose(node):
    point, _, _ = node
    commercial = _job(
        purpose={
            "duo": ["HMB"],
            "requester": "dairy",
            "requester_type": "commercial",
            "commercial": True,
        }
    )
    with pytest.raises(JobRefused) as err:
        point.accept(commercial, "c1")
    assert "commercial_not_allowed" in [code for code, _ in err.value.reasons]
    population = _job(purpose={"duo": ["POA"], "requester": "uni"})
    with pytest.raises(JobRefused) as err:
        point.accept(population, "p1")
    assert "purpose_not_allowed" in [code for code, _ in err.value.reasons]


def test_identifier_as_feature_refused_whatever_the_policy(node):
    point, _, _ = node
    job = _job(features=["maternal_age", "subject"])
    decision = point.review(job, "i1")
    assert decision.outcome == "deny"
    assert "identifier_as_feature" in [r.code for r in decision.reasons]


def test_consent_filter_and_minimum_cohort(node):
    point, _, tmp = node
    # Half the subjects withdraw: 20 remain, the minimum; one more and the round is refused.
    rows = [(s, "2025-06-01T00:00:00+00:00", "inactive", "deny", "") for s in SUBJECTS[:21]]
    import_consents(point, _consents(tmp / "w.csv", rows))
    job = _job()
    point.accept(job, "small")
    with pytest.raises(JobRefused) as err:
        point.select(job, "small", 1, _frame())
    assert err.value.reasons[0][0] == "cohort_too_small"
    assert _usage(point, "small") == []


def test_round_of_a_job_never_accepted_is_refused(node):
    point, _, _ = node
    with pytest.raises(JobRefused, match="not_accepted"):
        point.select(_job(), "never", 1, _frame())


def test_node_key_is_private(node):
    point, _, _ = node
    assert stat.S_IMODE(os.stat(point.state.key_path).st_mode) == 0o600


def _attempt_round_one_twice(point, clock, job_id, between=None):
    """Run round 1 of a job twice through the gate, as a retried round does."""
    job = _job()
    point.accept(job, job_id)
    for attempt in range(2):
        if attempt == 1 and between is not None:
            between()
        rows = point.select(job, job_id, 1, _frame())
        point.commit(job, RoundUse(job_id, 1, "train", rows["subject"].tolist(), 0.5, 1e-5, MECH))
        clock.now += timedelta(minutes=1)


def test_a_retried_round_logs_its_second_read_without_a_second_charge(node):
    point, clock, _ = node
    _attempt_round_one_twice(point, clock, "j-retry")  # secure aggregation halted: run again
    usage = _usage(point, "j-retry")
    assert [u["round"] for u in usage] == [1, 1]
    assert usage[0]["subject_commitment"] == usage[1]["subject_commitment"]
    assert usage[0]["epsilon"] == 0.5 and usage[1]["epsilon"] == 0.0 and usage[1]["delta"] == 0.0
    assert len(point.budget().charges("j-retry")) == 1


def test_a_round_reread_after_a_withdrawal_discloses_both_reads_and_audits(node):
    from consent.errors import UsageAuditError
    from consent.usage import Disclosure, audit_usage

    point, clock, tmp = node

    def withdraw() -> None:  # lands between the two attempts of round 1
        withdrawal = [(SUBJECTS[0], clock.now.isoformat(), "inactive", "deny", "")]
        import_consents(point, _consents(tmp / "w1.csv", withdrawal))
        clock.now += timedelta(seconds=1)

    _attempt_round_one_twice(point, clock, "j-reread", between=withdraw)
    usage = _usage(point, "j-reread")
    assert [u["n_subjects"] for u in usage] == [40, 39]
    disclosed = point.state.disclosure("j-reread")
    assert disclosed["rounds"]["1"] == sorted(SUBJECTS[1:])
    assert disclosed["rereads"] == {"1": [sorted(SUBJECTS)]}
    report = audit_usage(
        point.state.ledger_path, "j-reread", Disclosure.model_validate(disclosed), point.registry()
    )
    assert report.ok and [r.n_disclosed for r in report.rounds] == [40, 39]
    hidden = Disclosure.model_validate({**disclosed, "rereads": {}})  # the first read hidden
    with pytest.raises(UsageAuditError, match="round 1: commitment does not match"):
        audit_usage(point.state.ledger_path, "j-reread", hidden, point.registry())


def test_accepting_again_counts_the_jobs_own_reservation_as_its_own(node):
    # The embedded engine accepts a job once when the node service approves it and again
    # when the run starts; two jobs reserved side by side used to refuse each other then.
    point, _, _ = node
    first = point.accept(_job(privacy={"epsilon": 2.0, "delta": 1e-5}), "first")
    second = point.accept(_job(privacy={"epsilon": 1.5, "delta": 1e-5}), "second")
    assert second.remaining_epsilon == pytest.approx(0.5)
    again = point.accept(_job(privacy={"epsilon": 2.0, "delta": 1e-5}), "first", approved=True)
    assert again.job_id == "first" and again.epsilon == first.epsilon
    assert point.review(_job(privacy={"epsilon": 1.5, "delta": 1e-5}), "second").outcome == "allow"
    with pytest.raises(JobRefused) as err:  # another job still sees only what is left
        point.accept(_job(privacy={"epsilon": 1.0, "delta": 1e-5}), "third")
    assert err.value.reasons[0][0] == "budget_exhausted"
    assert point.budget().reservation("third") is None
