"""Linked jobs with [privacy]: noise shared inside the computation, every holder charged."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from federation.analytics.dp_noise import calibrate_gaussian
from federation.analytics.stats import stats_layout, stats_local
from federation.linkage.linked_run import HolderTable, linked_stats
from federation.plans.stats import CALIBRATION_MARGIN
from federation.spec import parse_job_spec
from hamanasu.local_runner import EmbeddedRunner
from nodes.enforcement import EnforcementPoint
from tests.federation.linkage.linked_nodes import make_node, usage_entries
from tests.noise_scale import assert_unit_normal

POLICY = """
min_cohort = 20
min_cell_count = 5
max_epsilon_per_job = 100
max_delta_per_job = 1e-4
require_secure_aggregation = true
require_dp = true
[purposes]
allowed = ["HMB"]
[jobs]
kinds = ["stats", "glm"]
[domains.births]
features = "*"
[budget.births]
epsilon = 200
delta = 1e-3
[approval]
mode = "automatic"
[linkage]
allowed = true
"""

LEVELS = [f"g{i:02d}" for i in range(40)]
BOUNDS = {"a": (0.0, 10.0), "b": (-5.0, 5.0), "c": (0.0, 1.0)}


def test_linked_statistics_carry_secret_shared_noise_of_the_calibrated_scale() -> None:
    rng = np.random.default_rng(11)
    n = 300
    ids = [f"s{i:04d}" for i in range(n)]
    grp = pd.DataFrame({"subject": ids, "g": rng.choice(LEVELS, n)})
    vals = pd.DataFrame({"subject": ids, "a": rng.uniform(0, 10, n), "b": rng.uniform(-5, 5, n),
                         "c": (rng.random(n) < 0.3).astype(float)})
    charged: list[tuple] = []
    priv = SimpleNamespace(epsilon=2.0, delta=1e-5, max_rows_per_subject=1)
    vec, linked_n, _ = linked_stats(
        [HolderTable("city", grp), HolderTable("dairy", vals)], key="subject",
        group_by=["g"], levels={"g": LEVELS}, variables=["a", "b", "c"], privacy=priv,
        bounds=BOUNDS, on_charge=lambda *a: charged.append(a))
    spec = parse_job_spec({"kind": "stats", "stats": {
        "measures": ["count", "mean"], "group_by": ["g"], "levels": {"g": LEVELS},
        "variables": ["a", "b", "c"], "bounds": {k: list(v) for k, v in BOUNDS.items()}}})
    layout = stats_layout(spec)
    exact, _ = stats_local(grp.merge(vals, on="subject"), spec)
    z = (vec - exact) / layout.block_scales()  # noise per unit of each entry's bound
    blocks = len(layout.blocks)
    sigma = calibrate_gaussian(math.sqrt(blocks), 2.0 * (1 - CALIBRATION_MARGIN), 1e-5)
    # Three parties (two holders, the helper), any one may be corrupt: each of the three
    # shares has scale sigma / sqrt(2), so the noise no single party knows is sigma.
    total = sigma * math.sqrt(3 / 2)
    assert z.size == 40 + 3 * 3 * 40 + 1
    # 401 draws tell the calibrated scale from 1.5x off (one share alone would be 0.58x).
    assert_unit_normal(z / total, off=1.5)
    assert abs(linked_n - n) < 8 * total * math.sqrt(41)
    assert sorted(c[0] for c in charged) == ["city", "dairy"]
    for _holder, k, eps, mech in charged:
        assert k == 1 and eps == 2.0 * (1 - CALIBRATION_MARGIN)
        assert mech == {"type": "gaussian", "sigma": sigma, "sensitivity": math.sqrt(blocks)}


def _deployment(tmp: Path, n: int) -> dict:
    rng = np.random.default_rng(5)
    ids = [f"{i:032x}" for i in range(1, n + 1)]
    bmi, dairy = rng.uniform(16, 34, n), rng.uniform(0, 500, n)
    eta = -1.0 + 0.1 * (22 - bmi) - 0.003 * (dairy - 250)
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    group = rng.choice(["low", "high"], n)
    hosp = pd.DataFrame({"subject": ids, "lbw": y, "bmi_pre": bmi, "bw_group": group})
    dairy_co = pd.DataFrame({"subject": ids[: n - 10], "dairy_g": dairy[: n - 10]})
    return {"hospital": make_node(tmp, "hospital", hosp, POLICY),
            "dairy": make_node(tmp, "dairy", dairy_co, POLICY)}


def _run(nodes: dict, spec: dict, job_id: str) -> object:
    job = parse_job_spec({"purpose": {"duo": ["HMB"], "requester": "uni"},
                          "link": {"key": "subject"}, **spec})
    return EmbeddedRunner(nodes).run(job, job_id, list(nodes), lambda _p: None,
                                     threading.Event())


STATS = {"kind": "stats", "stats": {
    "measures": ["count", "mean"], "group_by": ["bw_group"],
    "levels": {"bw_group": ["low", "high"]}, "variables": ["dairy_g"],
    "bounds": {"dairy_g": [0.0, 800.0]}, "min_cell_count": 5}}


def test_require_dp_is_met_only_when_the_noise_runs(tmp_path: Path) -> None:
    nodes = _deployment(tmp_path, 80)
    plain = _run(nodes, STATS, "job-plain")
    assert plain.status == "failed" and "dp_required" in plain.reason
    assert usage_entries(nodes["hospital"]) == [] and usage_entries(nodes["dairy"]) == []
    noisy = _run(nodes, {**STATS, "privacy": {"epsilon": 3.0, "delta": 1e-5}}, "job-dp")
    assert noisy.status == "succeeded", noisy.reason
    dp = noisy.report["dp"]
    assert dp["mode"] == "secret_shared" and dp["noise_shares"] == 3 and dp["nodes"] == 2
    assert set(noisy.epsilon_by_node) == {"hospital", "dairy"}
    for name, node in nodes.items():
        (charge,) = EnforcementPoint(name, node.state_dir).budget().charges("job-dp")
        assert charge.round == 1 and charge.mechanism["type"] == "gaussian"
        assert math.isclose(charge.job_epsilon_spent, noisy.epsilon_by_node[name], rel_tol=1e-3)
        assert [u["round"] for u in usage_entries(node)] == [0, 1]  # cohort, then the release


def test_a_dp_linked_glm_charges_every_holder_for_every_round_it_opens(tmp_path: Path) -> None:
    nodes = _deployment(tmp_path, 600)
    res = _run(nodes, {"kind": "glm", "features": ["bmi_pre", "dairy_g"], "label": "lbw",
                       "glm": {"family": "binomial", "max_iterations": 3,
                               "bounds": {"bmi_pre": [12.0, 45.0], "dairy_g": [0.0, 800.0]}},
                       "privacy": {"epsilon": 60.0, "delta": 1e-5}}, "job-glm")
    assert res.status == "succeeded", res.reason
    dp = res.report["dp"]
    rounds = dp["rounds_charged"]
    # Under DP every calibrated round is opened: the floor is no stopping rule there.
    assert rounds == dp["rounds_calibrated"] == 4
    assert res.report["convergence"]["stopped_at"] == "planned_rounds"
    assert dp["epsilon_charged_per_node"] <= 60.0
    assert dp["epsilon_effective"] < dp["epsilon_charged_per_node"]  # the researcher's view
    for name, node in nodes.items():
        charges = EnforcementPoint(name, node.state_dir).budget().charges("job-glm")
        assert [c.round for c in charges] == list(range(1, rounds + 1))
        assert math.isclose(charges[-1].job_epsilon_spent, dp["epsilon_charged_per_node"],
                            rel_tol=1e-3)
    assert "mpc_traffic" not in res.report  # its byte counts follow the exact cohort size
