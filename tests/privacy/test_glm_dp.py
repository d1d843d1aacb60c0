"""A GLM job with ``[privacy]`` runs a real mechanism: distributed noise, charged every round.

Each node adds its discrete Gaussian share to its statistics before SecAgg+, so the secure
sum of every Newton iteration carries the calibrated noise; every node is charged per
round (PLD-composed, never above the job's ε), the result reports the ε spent, and a node
policy's ``require_dp`` is satisfied only by a job whose mechanism actually runs.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from federation.plans import PlanInputs, plan_for
from federation.spec import parse_job_spec
from policies import compose_epsilon
from policies.decision import PolicyState
from policies.evaluate import evaluate
from policies.model import parse_policy
from policies.request import JobRequest
from tests.noise_scale import assert_unit_normal

NOW = datetime(2026, 6, 1, tzinfo=UTC)

SPEC = {
    "kind": "glm",
    "features": ["maternal_age", "smoking"],
    "label": "lbw",
    "glm": {"family": "binomial", "max_iterations": 6, "bounds": {"maternal_age": [15, 50]}},
    "privacy": {"epsilon": 4.0, "delta": 1e-6},
}


def _cohort(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 45, n).astype(float)
    smoking = rng.binomial(1, 0.2, n).astype(float)
    eta = -2.0 + 0.03 * (age - 30) + 0.8 * smoking
    return pd.DataFrame(
        {
            "subject": [f"{seed:02x}{i:030x}" for i in range(n)],
            "maternal_age": age,
            "smoking": smoking,
            "lbw": rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float),
        }
    )


def _run(spec_doc: dict, frames: list[pd.DataFrame]) -> tuple[dict, list[dict], list]:
    """Run the plan's rounds as both engines do: node halves, a plain sum, the server half."""
    spec = parse_job_spec(spec_doc)
    inputs = PlanInputs(n_nodes=len(frames), max_records=max(len(f) for f in frames))
    server = plan_for(spec, inputs)
    nodes = [plan_for(spec, inputs) for _ in frames]
    charges: list[list] = [[] for _ in frames]
    params, round_no = server.initial, 0
    while params is not None:
        round_no += 1
        vectors = []
        for k, (node, frame) in enumerate(zip(nodes, frames, strict=True)):
            if node.round_charge is not None:
                charges[k].append(node.round_charge(round_no))
            vectors.append(node.local(frame, params, {}))
        params = server.step(round_no, np.sum(vectors, axis=0))
    return server.report("succeeded", "", _Recorder(len(frames), round_no)), charges, nodes


class _Recorder:
    def __init__(self, n_nodes: int, rounds: int) -> None:
        self.sums = [None] * rounds
        self.nodes = [list(range(n_nodes))]
        self.rows_dropped: dict[str, int] = {}
        self.complete_case: dict[str, dict] = {}


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    return [_cohort(n, seed) for n, seed in ((2500, 1), (3000, 2), (2000, 3))]


def test_every_round_is_charged_and_the_result_reports_the_epsilon(frames):
    report, charges, nodes = _run(SPEC, frames)
    assert report["status"] == "succeeded", report
    dp = report["dp"]
    rounds = report["rounds"]
    # Under DP every planned round is taken (max_iterations + 1), so the whole ε is spent.
    assert rounds == 7 and report["convergence"]["stopped_at"] == "planned_rounds"
    assert report["convergence"]["averaged_rounds"] == 3
    assert dp["mechanism"] == "discrete_gaussian" and dp["mode"] == "distributed"
    assert dp["privacy_unit"] == "resident" and dp["rounds_charged"] == rounds
    for node_charges in charges:
        assert len(node_charges) == rounds  # charged every round it contributed to
        mechs = [m for _, m in node_charges]
        spent = compose_epsilon(mechs, 1e-6)
        assert math.fsum(e for e, _ in node_charges) == pytest.approx(spent, rel=1e-6)
        assert spent == pytest.approx(dp["epsilon_charged_per_node"], rel=1e-9)
        assert 0.99 * 4.0 <= spent <= 4.0
    # Calibrated for every allowed iteration: all of them would use (nearly) the whole ε.
    noise = nodes[0].noise
    assert 0.99 * 4.0 <= noise.epsilon_after(noise.rounds) <= 4.0
    est = report["coefficients"]["smoking"]["estimate"]
    assert math.isfinite(est)


def test_nodes_add_noise_with_the_calibrated_scale(frames):
    spec = parse_job_spec(SPEC)
    plan = plan_for(spec, PlanInputs(n_nodes=3, max_records=3000))
    noise = plan.noise
    assert noise is not None
    per_row = np.linspace(0.5, 40.0, noise.entries)
    draws = np.array([noise.node_share(per_row) for _ in range(600)])
    # Each entry's share, in units of its per-row bound, is N(0, (σ/√K)²) on a fine grid.
    z = (draws / per_row).ravel() / noise.share
    assert_unit_normal(z, off=1.1)
    # The same rows, the same coefficients: two replies differ (noise), an exact one does not.
    beta = plan.initial
    a, b = plan.local(frames[0], beta, {}), plan.local(frames[0], beta, {})
    assert not np.array_equal(a, b)
    exact_spec = parse_job_spec({k: v for k, v in SPEC.items() if k != "privacy"})
    exact = plan_for(exact_spec, PlanInputs(n_nodes=3, max_records=3000))
    assert np.array_equal(exact.local(frames[0], beta, {}), exact.local(frames[0], beta, {}))
    assert exact.round_charge is None


def test_require_dp_is_met_only_by_a_mechanism_that_runs():
    policy = parse_policy(
        {
            "require_dp": True,
            "max_epsilon_per_job": 5.0,
            "max_delta_per_job": 1e-5,
            "domains": {"births": {"features": "*"}},
            "budget": {"births": {"epsilon": 10.0, "delta": 1e-4}},
        }
    )
    glm = parse_job_spec(SPEC).to_policy_request("j1")
    assert glm.dp_mechanism == "discrete_gaussian"
    assert "dp_required" not in {
        r.code for r in evaluate(glm, policy, PolicyState(now=NOW)).reasons
    }
    no_mechanism = JobRequest(job_id="j2", kind="glm", domain="births", epsilon=1.0, delta=1e-6)
    reasons = {r.code for r in evaluate(no_mechanism, policy, PolicyState(now=NOW)).reasons}
    assert "dp_required" in reasons


def test_a_dp_glm_refuses_the_unbounded_poisson_family():
    with pytest.raises(ValueError, match="poisson"):
        parse_job_spec({**SPEC, "glm": {**SPEC["glm"], "family": "poisson"}})


def test_a_dp_fit_takes_its_planned_rounds_where_the_noise_floor_would_stop_it_at_the_start(
    frames,
):
    """The floor rule under DP noise released the start, shrunk toward it; DP takes its steps.

    With exact sums and a noise floor claimed far above the start's distance from the
    optimum, the floor rule stops before the first step; the DP rule takes every planned
    step and releases the mean of the last broadcasts, which are all at the optimum.
    """
    from federation.analytics.glm import glm_layout, glm_local_statistics
    from federation.analytics.glm_newton import glm_fit

    rows = [(np.c_[np.ones(len(f)), f["maternal_age"], f["smoking"]], f["lbw"]) for f in frames]

    def exact(beta: np.ndarray) -> np.ndarray:
        return sum(glm_local_statistics(x, y.to_numpy(), beta, "binomial") for x, y in rows)

    names = ["Intercept", "maternal_age", "smoking"]
    ref = glm_fit(exact, 3, "binomial", names)
    loud = np.full(glm_layout(3).size, 1e3)  # a floor of thousands of SEs
    floor_rule = glm_fit(exact, 3, "binomial", names, noise_sd=lambda b: loud)
    dp_rule = glm_fit(exact, 3, "binomial", names, noise_sd=lambda b: loud, dp=True)
    exact_est, floor_est, dp_est = (
        np.array([fit.coefficients[n].estimate for n in names])
        for fit in (ref, floor_rule, dp_rule)
    )
    # The floor rule released the intercept-only start: smoking 0, not the fitted 0.8.
    assert floor_rule.iterations == 0 and floor_est[2] == 0.0
    assert abs(exact_est[2]) > 0.5
    assert dp_rule.iterations == 25 and dp_rule.convergence["averaged_rounds"] == 13
    np.testing.assert_allclose(dp_est, exact_est, rtol=0, atol=1e-9)
