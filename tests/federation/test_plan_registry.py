"""The plan registry: one plan per job kind, no silent overwrite, public inputs round-trip."""

import pytest

from federation.plans import (
    GlmPlan,
    PlanInputs,
    PlanRegistryError,
    StatsPlan,
    TrainPlan,
    plan_for,
    register_plan,
    registered_kinds,
)
from federation.spec import parse_job_spec

STATS = {
    "kind": "stats",
    "stats": {"variables": ["lbw"], "bounds": {"lbw": [0, 1]}, "measures": ["count"]},
}


def test_every_job_kind_has_exactly_one_plan():
    assert registered_kinds() == ["glm", "stats", "train"]
    inputs = PlanInputs(n_nodes=3, max_records=500)
    glm = {"kind": "glm", "features": ["x"], "label": "y", "glm": {"bounds": {"x": [0, 1]}}}
    assert isinstance(plan_for(parse_job_spec(STATS), inputs), StatsPlan)
    assert isinstance(plan_for(parse_job_spec(glm), inputs), GlmPlan)
    train = {
        "kind": "train",
        "features": ["x"],
        "label": "y",
        "privacy": {"epsilon": 1.0, "delta": 1e-5},
    }
    assert isinstance(plan_for(parse_job_spec(train), inputs), TrainPlan)


def test_register_plan_refuses_a_silent_overwrite():
    with pytest.raises(PlanRegistryError, match="'stats' already has a plan"):
        register_plan("stats", GlmPlan)
    register_plan("stats", StatsPlan)  # the same plan again changes nothing
    seen = []
    try:
        register_plan("stats", lambda spec, inputs: seen.append(spec.kind) or "mine", replace=True)
        assert plan_for(parse_job_spec(STATS), PlanInputs(3, 500)) == "mine"
    finally:
        register_plan("stats", StatsPlan, replace=True)
    assert seen == ["stats"]
    assert isinstance(plan_for(parse_job_spec(STATS), PlanInputs(3, 500)), StatsPlan)


def test_plan_for_an_unknown_kind_names_the_known_ones():
    spec = parse_job_spec(STATS).model_copy(update={"kind": "linked_stats"})
    with pytest.raises(PlanRegistryError, match="'linked_stats' has no plan .*glm, stats, train"):
        plan_for(spec, PlanInputs(3, 500))


def test_plan_inputs_round_trip_through_a_run_config():
    inputs = PlanInputs(4, 1234, {"bmi_pre": (14.0, 45.0)}, min_cell_count=10)
    cfg = inputs.to_run_config()
    assert PlanInputs.from_run_config(cfg) == inputs
    assert PlanInputs.from_run_config({}) == PlanInputs(0)
    with pytest.raises(ValueError, match="declared-ranges"):
        PlanInputs.from_run_config({"declared-ranges": '{"x": 3}'})


def test_a_secure_sum_plan_refuses_unknown_public_inputs():
    with pytest.raises(ValueError, match="n-nodes, max-records"):
        plan_for(parse_job_spec(STATS), PlanInputs(n_nodes=3, max_records=0))


def test_a_sum_report_names_the_nodes_in_the_last_sum():
    import numpy as np

    from federation.secure_sum import SumRecorder

    plan = plan_for(parse_job_spec(STATS), PlanInputs(n_nodes=3, max_records=500))
    recorder = SumRecorder(sums=[np.zeros(1)], nodes=[["n1", "n2"]])
    report = plan.report("failed", "stopped", recorder)
    assert report["summed_nodes"] == ["n1", "n2"]  # a node that dropped out is not claimed
    assert report["rounds"] == 1 and report["status"] == "failed" and "cells" not in report
