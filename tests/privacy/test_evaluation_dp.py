"""A training job's evaluation is released with DP noise, charged, and only when it should be.

Each node adds its share of distributed discrete Gaussian noise to its held-out histograms
before the secure sum; the sum's noise has the calibrated scale. The release is charged at
every node, its ε composed with DP-SGD's by the PLD accountant within the job's ε (and
within 1 % of a ten times finer PLD). Per-round evaluation is sent and released only when
the spec asks. A policy requiring DP accepts a job only when the release is noised.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from federation.dp_training import predict_proba, set_parameters
from federation.evaluation import histograms
from federation.models import build_model
from federation.plans import PlanInputs, plan_for
from federation.plans.train import held_out_mask, prepare_features, public_scaling
from federation.spec import JobSpec, parse_job_spec
from federation.training_round import EVAL_SCALE
from hamanasu.training_run import run_training_job
from nodes.sources import NodeSource
from policies import BudgetLedger, BudgetRule, compose_epsilon
from policies.decision import PolicyState
from policies.evaluate import evaluate
from policies.model import load_policy
from policies.request import JobRequest
from tests.noise_scale import assert_unit_normal

NOW = datetime(2026, 6, 1, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "iwamizawa"
FINE = 1e-4
SPEC = {
    "kind": "train",
    "features": ["bmi_pre", "maternal_age"],
    "label": "lbw",
    "rounds": 2,
    "privacy": {"epsilon": 3.0, "delta": 1e-5},
    "training": {"batch_size": 256, "learning_rate": 2.0},
}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    bmi = rng.normal(21, 3, n).clip(14, 40)
    age = rng.integers(17, 47, n)
    eta = -2.2 + 0.25 * (bmi - 21) + 0.05 * (age - 31)
    return pd.DataFrame(
        {
            "subject": [f"{seed:02x}{i:030x}" for i in range(n)],
            "bmi_pre": bmi,
            "maternal_age": age,
            "lbw": rng.binomial(1, 1 / (1 + np.exp(-eta))),
        }
    )


FRAMES = [_frame(1500, 1), _frame(1100, 2)]


def _plan(doc: dict | None = None):
    return plan_for(parse_job_spec(doc or SPEC), PlanInputs(n_nodes=2, max_records=1500))


def _step(plan, frame, params, round_no, phase, spends):
    arrays, n_train, eps = plan.local_step(
        frame,
        params,
        round_no,
        phase,
        node_name="n",
        fixed_dp=plan.dp_plan,
        commit=spends.append,
    )
    return arrays[-1] * n_train * EVAL_SCALE, eps


def _exact_histograms(plan, frame: pd.DataFrame, params) -> np.ndarray:
    """The held-out histograms a node would release without noise (the same rows and model)."""
    job = plan.spec
    test = held_out_mask(frame, job.training.test_fraction, job.seed)
    x = prepare_features(frame, job.features, public_scaling(job))[test]
    model = build_model(job.model, len(job.features), job.training.hidden_units)
    set_parameters(model, params)
    y = frame[job.label].to_numpy(dtype=np.float64)[test]
    return histograms(predict_proba(model, x), y, job.evaluation.bins)


def test_released_histograms_carry_noise_of_the_calibrated_scale():
    plan = _plan()
    release = plan.evaluation
    assert release.noise is not None and release.length == 2 * 20
    params = plan.initial_parameters()
    exact = sum(_exact_histograms(plan, f, params) for f in FRAMES)
    z = []
    for _ in range(150):  # the final evaluation round, at both nodes, summed as SecAgg+ does
        summed = sum(_step(plan, f, params, 3, "evaluate", [])[0] for f in FRAMES)
        z.append((summed - exact) / release.noise.sigma)
    z = np.concatenate(z)
    # Both shares together: N(0, σ²) in every bin; 10 % more or less noise is rejected.
    assert_unit_normal(z, off=1.1)
    # Without the noise the metrics would be read from the exact counts; with it, never.
    assert not np.allclose(summed, exact)


@pytest.mark.parametrize("per_round", [False, True])
def test_the_budget_is_charged_by_the_reported_epsilon_within_the_jobs(tmp_path, per_round):
    doc = {**SPEC, "evaluation": {"per_round": per_round}}
    plan = _plan(doc)
    params = plan.initial_parameters()
    spends, reported = [], []
    for round_no, phase in ((1, "train"), (2, "train"), (3, "evaluate")):
        _, eps = _step(plan, FRAMES[0], params, round_no, phase, spends)
        reported.append(eps)
    # Every round is charged, the final evaluation too (a Gaussian release).
    final = spends[-1].mechanism
    assert final["type"] == "gaussian" and final["sensitivity"] == 1.0
    assert final["sigma"] == pytest.approx(plan.evaluation.noise.sigma)
    kinds = {s.mechanism["type"] for s in spends[:2]}
    assert kinds == ({"composed"} if per_round else {"subsampled_gaussian"})
    # The ledger composes the charges (PLD) to exactly what the node reports.
    with BudgetLedger(
        tmp_path / "budget.db", None, budgets={"births": BudgetRule(epsilon=5.0, delta=1e-4)}
    ) as ledger:
        ledger.reserve("j", "births", 3.0, 1e-5, NOW)
        charges = [ledger.charge("j", r, s.mechanism, s.epsilon, NOW) for r, s in enumerate(spends)]
    for charge, eps in zip(charges, reported, strict=True):
        assert charge.job_epsilon_spent == pytest.approx(eps, rel=1e-9)
    assert math.fsum(s.epsilon for s in spends) == pytest.approx(reported[-1], rel=1e-9)
    # Training and evaluation together use the job's ε, never more.
    assert 0.99 * 3.0 <= reported[-1] <= 3.0
    # The evaluation's own share: 30 % of the job's ε alone.
    alone = compose_epsilon([{**final, "count": 3 if per_round else 1}], 1e-5)
    assert 0.99 * 0.9 <= alone <= 0.9
    # Tight: never below a ten times finer PLD of the same mechanisms, at most 1 % above.
    dp = plan.dp_plan(int((~held_out_mask(FRAMES[0], 0.2, 0)).sum()))
    sgd = pld_lib.from_gaussian_mechanism(
        dp.noise_multiplier, sampling_prob=dp.sample_rate, value_discretization_interval=FINE
    ).self_compose(dp.steps_per_round * 2)
    releases = 3 if per_round else 1
    gauss = pld_lib.from_gaussian_mechanism(
        final["sigma"] / math.sqrt(releases), value_discretization_interval=FINE
    )
    fine = float(sgd.compose(gauss).get_epsilon_for_delta(1e-5))
    assert fine * (1 - 1e-4) <= reported[-1] <= fine * 1.01


def test_training_rounds_send_and_release_no_evaluation_unless_asked(tmp_path):
    plan = _plan()
    params = plan.initial_parameters()
    sent, _ = _step(plan, FRAMES[0], params, 1, "train", [])
    assert not sent.any()  # a training round's evaluation slot is all zeros
    asked = _plan({**SPEC, "evaluation": {"per_round": True}})
    sent, _ = _step(asked, FRAMES[0], params, 1, "train", [])
    assert sent.sum() > 0.5 * 0.2 * len(FRAMES[0])

    nodes = []
    for name, frame in zip(("north", "south"), FRAMES, strict=True):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        nodes.append(NodeSource(name, tmp_path / f"{name}.csv"))
    run = run_training_job(parse_job_spec(SPEC), nodes, job_id="t", max_records=1500)
    assert run.outcome.status == "succeeded", run.outcome.reason
    report = run.report()
    assert [bool(r["metrics"]) for r in report["rounds"]] == [False, False, True]
    final = report["rounds"][-1]["metrics"]
    assert 0.0 <= final["auc"] <= 1.0 and final["n"] > 0
    evaluation = report["evaluation"]
    assert evaluation["released"] == "final model" and evaluation["releases"] == 1
    dp = evaluation["dp"]
    assert dp["mechanism"] == "discrete_gaussian" and dp["mode"] == "distributed"
    assert dp["noise_scale"] == pytest.approx(plan.evaluation.noise.sigma)
    assert dp["nodes_contributing"] == 2 and dp["privacy_unit"] == "resident"
    spent = report["privacy"]["epsilon_spent_by_node"]
    assert all(0.99 * 3.0 <= e <= 3.0 for e in spent.values())  # training + evaluation


def test_require_dp_is_met_only_when_the_evaluation_noise_runs():
    # The demo hospital's policy, made to require DP.
    policy = load_policy(EXAMPLES / "policies" / "city-hospital.toml").model_copy(
        update={"require_dp": True}
    )

    def codes(request: JobRequest) -> set[str]:
        return {r.code for r in evaluate(request, policy, PolicyState(now=NOW)).reasons}

    spec = parse_job_spec(SPEC)
    request = spec.to_policy_request("j1")
    assert request.dp_mechanism == "dp_sgd" and request.exact_releases == ()
    assert "dp_required" not in codes(request)
    # DP-SGD with an exact evaluation beside it does not meet the policy.
    exact = request.model_copy(update={"exact_releases": ("evaluation",)})
    assert "dp_required" in codes(exact)
    # A spec whose evaluation would run without noise says so, from the plan's own rule.
    bare = JobSpec.model_construct(**{**dict(spec), "privacy": None})
    assert bare.exact_releases() == ("evaluation",)
    bare_plan = plan_for(bare, PlanInputs(n_nodes=2, max_records=1500))
    assert bare_plan.evaluation.noise is None
    # ... and the noisy plan's node half indeed adds noise: the same rows, two replies differ.
    plan = _plan()
    params = plan.initial_parameters()
    a, _ = _step(plan, FRAMES[0], params, 3, "evaluate", [])
    b, _ = _step(plan, FRAMES[0], params, 3, "evaluate", [])
    assert not np.array_equal(a, b)
