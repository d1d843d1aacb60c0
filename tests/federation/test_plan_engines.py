"""Both engines run a job by the same plan: the embedded runner's and the deployment apps'.

The embedded runner builds its plan from the nodes it runs (``hamanasu.analytics_run``,
``hamanasu.training_run``); the deployment ServerApp and each node's ClientApp build
theirs from the run config the coordinator submits (``coordinator.flower_server``,
``nodes.flower_client``), in different processes. Here every node's vector comes from
its own deployment-side plan (one object per node, as in separate processes), is
summed, and goes to the ServerApp's plan; the same frames go through the embedded
plan. The sums are exact or simulated SecAgg+ with the same seed on both sides, so the
releases must be identical, not merely close.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coordinator.flower_server import plan_from_run_config as server_plan
from federation.analytics.scaling import simulate_secure_sum
from federation.cdm import declared_ranges
from federation.plans import PlanInputs, SumPlan, TrainPlan
from federation.spec import parse_job_spec
from hamanasu.analytics_run import embedded_plan
from hamanasu.training_run import training_plan
from nodes.flower_client import plan_from_run_config as node_plan
from nodes.sources import NodeSource

NAMES = ("n1", "n2", "n3")
PURPOSE = {"duo": ["HMB"], "project": "p", "requester": "r", "requester_type": "academic"}


def _frames(seed: int = 5) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate((300, 420, 360)):
        age = rng.integers(18, 45, n)
        bmi = rng.uniform(16, 35, n)
        eta = -2.2 + 0.04 * (age - 30) + 0.06 * (bmi - 22)
        out.append(
            pd.DataFrame(
                {
                    "subject": [f"s{i}-{k}" for k in range(n)],
                    "year": rng.choice([2018, 2019], n),
                    "maternal_age": age,
                    "bmi_pre": bmi,
                    "lbw": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int),
                }
            )
        )
    return out


def _run_config(spec, frames, floor: int = 0) -> dict:
    """The run config's plan inputs, as the coordinator's deployment runner writes them."""
    inputs = PlanInputs(
        n_nodes=len(frames),
        max_records=max(len(f) for f in frames),
        declared=declared_ranges(spec.domain),
        min_cell_count=floor,
    )
    return {"job-spec": json.dumps(spec.model_dump(mode="json")), **inputs.to_run_config()}


def _drive(server: SumPlan, node_plans: list[SumPlan], frames, seed: int) -> dict:
    """Run the rounds: each node's vector from its own plan, summed, then the server's step."""
    rng = np.random.default_rng(seed)
    params = server.initial
    for server_round in range(1, server.max_rounds + 1):
        vectors = [p.local(f, params, {}) for p, f in zip(node_plans, frames, strict=True)]
        if server.secagg is None:
            summed = np.sum(vectors, axis=0)
        else:
            summed = simulate_secure_sum(
                vectors, server.secagg.clipping_range, server.secagg.quantization_range, rng
            )
        params = server.step(server_round, summed)
        if params is None:
            break
    return server.release(len(frames))


def _both_engines(spec, frames, floor: int = 0, seed: int = 1) -> tuple[dict, dict]:
    nodes = [NodeSource(name, Path(name)) for name in NAMES]
    size = max(len(f) for f in frames)
    local = embedded_plan(spec, nodes, max_records=size, min_cell_count=floor)
    embedded = _drive(local, [local] * len(frames), frames, seed)
    cfg = _run_config(spec, frames, floor)
    deployed = _drive(
        server_plan(spec, cfg, len(frames)), [node_plan(spec, cfg) for _ in frames], frames, seed
    )
    return embedded, deployed


@pytest.mark.parametrize("secure", [False, True])
def test_stats_job_releases_the_same_table_on_both_engines(secure):
    spec = parse_job_spec(
        {
            "kind": "stats",
            "domain": "births",
            "purpose": PURPOSE,
            "stats": {
                "variables": ["lbw", "bmi_pre"],  # public bounds from the data model
                "measures": ["count", "mean", "proportion"],
                "group_by": ["year"],
                "levels": {"year": [2018, 2019]},
            },
            "secure_aggregation": {"enabled": secure},
        }
    )
    embedded, deployed = _both_engines(spec, _frames(), floor=12)
    assert embedded["status"] == "succeeded"
    assert json.dumps(embedded, sort_keys=True) == json.dumps(deployed, sort_keys=True)
    assert embedded["min_cell_count"] == 12 and embedded["cells"]  # the nodes' floor


@pytest.mark.parametrize("secure", [False, True])
def test_glm_job_fits_the_same_model_on_both_engines(secure):
    spec = parse_job_spec(
        {
            "kind": "glm",
            "domain": "births",
            "purpose": PURPOSE,
            "features": ["maternal_age", "bmi_pre"],  # public ranges from the data model
            "label": "lbw",
            "glm": {"family": "binomial", "min_events_per_parameter": 5},
            "secure_aggregation": {"enabled": secure},
        }
    )
    embedded, deployed = _both_engines(spec, _frames())
    assert embedded["status"] == "succeeded", embedded.get("reason")
    assert json.dumps(embedded, sort_keys=True) == json.dumps(deployed, sort_keys=True)
    assert ("secagg_resolution" in embedded) is secure
    assert (embedded["convergence"]["quantisation_floor"] > 0) is secure


def test_training_job_plans_the_same_rounds_on_both_engines():
    spec = parse_job_spec(
        {
            "kind": "train",
            "domain": "births",
            "purpose": PURPOSE,
            "features": ["maternal_age", "bmi_pre"],
            "label": "lbw",
            "rounds": 2,
            "privacy": {"epsilon": 2.0, "delta": 1e-5},
            "training": {"local_epochs": 1, "batch_size": 64},
        }
    )
    frames = _frames()
    size = max(len(f) for f in frames)
    local = training_plan(spec, len(frames), size)
    cfg = _run_config(spec, frames)
    server = server_plan(spec, cfg, len(frames))
    assert isinstance(server, TrainPlan)
    assert server.secagg == local.secagg and local.secagg is not None
    initial = local.initial_parameters()
    for got, want in zip(server.initial_parameters(), initial, strict=True):
        np.testing.assert_array_equal(got, want)
    node = node_plan(spec, cfg)
    spends = {"embedded": [], "deployment": []}
    runs = {}
    for engine, plan in (("embedded", local), ("deployment", node)):
        runs[engine] = plan.local_step(
            frames[0],
            initial,
            1,
            "train",
            node_name="n1",
            fixed_dp=plan.dp_plan,
            commit=spends[engine].append,
        )
    (emb, n_emb, eps_emb), (dep, n_dep, eps_dep) = runs["embedded"], runs["deployment"]
    assert n_emb == n_dep and eps_emb == eps_dep > 0
    for got, want in zip(dep, emb, strict=True):
        np.testing.assert_array_equal(got, want)
    assert spends["embedded"] == spends["deployment"] and spends["embedded"][0].subjects
