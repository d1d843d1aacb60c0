"""The DP guarantee is per resident: a resident's extra rows never raise what one person changes.

A resident can hold several rows (twins, two births, yearly checkups). Every DP job keeps at
most ``privacy.max_rows_per_subject`` rows per subject pseudonym before computing, so
adding or removing one resident, with however many rows, moves the released vector by at
most the sensitivity the noise is calibrated for. Results list, per node, the rows the
cap dropped (``rows_dropped_by_node``), in the result JSON and the summary table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.plans import PlanInputs, plan_for
from federation.privacy_unit import cap_rows_per_subject
from federation.result_tables import rows_dropped_frame, summary_text
from federation.spec import parse_job_spec
from hamanasu.analytics_run import run_sum_job
from hamanasu.training_run import run_training_job
from nodes.sources import NodeSource

STATS = {
    "kind": "stats",
    "privacy": {"epsilon": 1.0, "delta": 1e-6},
    "stats": {
        "measures": ["count", "mean"],
        "variables": ["bw"],
        "group_by": [],
        "bounds": {"bw": [300, 6000]},
        "dp_mode": "central",
    },
}

TRAIN = {
    "kind": "train",
    "features": ["bmi_pre"],
    "label": "lbw",
    "rounds": 1,
    "privacy": {"epsilon": 3.0, "delta": 1e-5},
    "training": {"batch_size": 64, "test_fraction": 0.2},
}


def _rows(n_residents: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "subject": [f"{i:032x}" for i in range(n_residents)],
            "bw": rng.normal(3000, 400, n_residents),
            "lbw": rng.integers(0, 2, n_residents).astype(float),
            "bmi_pre": rng.normal(21, 3, n_residents),
        }
    )


def _with_resident(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The frame plus one resident holding ``rows`` rows (yearly checkups, twins...)."""
    extra = pd.DataFrame(
        {"subject": ["f" * 32] * rows, "bw": [6000.0] * rows, "lbw": 1.0, "bmi_pre": 40.0}
    )
    return pd.concat([frame, extra], ignore_index=True)


def test_cap_keeps_the_first_rows_of_each_resident_and_counts_the_rest():
    frame = _with_resident(_rows(50), 4)
    capped = cap_rows_per_subject(frame, 2)
    assert capped.unit == "resident" and capped.dropped == 2
    assert capped.frame["subject"].value_counts().max() == 2
    assert len(capped.frame) == 52
    no_key = cap_rows_per_subject(frame.drop(columns="subject"), 1)
    assert no_key.unit == "row" and no_key.dropped == 0
    with pytest.raises(ValueError):
        cap_rows_per_subject(frame, 0)


@pytest.mark.parametrize("cap", [1, 2])
def test_stats_node_vector_moves_by_at_most_the_cap_per_resident(cap):
    spec = parse_job_spec({**STATS, "privacy": {**STATS["privacy"], "max_rows_per_subject": cap}})
    plan = plan_for(spec, PlanInputs(n_nodes=2, max_records=1000))
    base = _rows(200)
    without = plan.local(base, plan.initial, {}) * plan.scale
    with_five = plan.local(_with_resident(base, 5), plan.initial, {}) * plan.scale
    rows = plan.layout.block(with_five - without, "rows")
    # The resident's five rows count as ``cap`` rows: the sensitivity the noise assumes.
    assert rows.sum() == pytest.approx(cap, abs=1e-6)
    plan.step(1, plan.local(base, plan.initial, {}))
    dp = plan.release(None)["dp"]
    assert dp["privacy_unit"] == "resident" and dp["max_rows_per_subject"] == cap


def test_training_uses_one_row_per_resident():
    spec = parse_job_spec(TRAIN)
    plan = plan_for(spec, PlanInputs(n_nodes=2, max_records=4096))
    base = _rows(600)
    doubled = pd.concat([base, base], ignore_index=True)  # every resident twice
    spends = []

    def step(frame: pd.DataFrame) -> int:
        _, n_train, _ = plan.local_step(
            frame,
            plan.initial_parameters(),
            1,
            "train",
            node_name="n",
            fixed_dp=plan.dp_plan,
            commit=spends.append,
        )
        return n_train

    assert step(doubled) == step(base)
    assert len(spends) == 2


def test_a_train_job_cannot_let_a_resident_contribute_two_rows():
    with pytest.raises(ValueError, match="max_rows_per_subject"):
        parse_job_spec(
            {
                "kind": "train",
                "features": ["bmi_pre"],
                "label": "lbw",
                "privacy": {"epsilon": 3.0, "max_rows_per_subject": 2},
            }
        )


# -- results say how many rows each node's cap dropped -----------------------------------
def _node_file(folder: Path, name: str, n: int, seed: int, extra_rows: int) -> NodeSource:
    """Write a node's sample file: ``n`` residents, plus one resident with ``extra_rows`` rows."""
    rng = np.random.default_rng(seed)
    bmi = rng.normal(21, 3, n).clip(14, 40)
    frame = pd.DataFrame(
        {
            "subject": [f"{seed:02x}{i:030x}" for i in range(n)],
            "bmi_pre": bmi,
            "lbw": rng.binomial(1, 1 / (1 + np.exp(-(-2.0 + 0.2 * (bmi - 21))))),
        }
    )
    if extra_rows:
        many = pd.DataFrame(
            {
                "subject": ["e" * 32] * extra_rows,
                "bmi_pre": np.linspace(18, 30, extra_rows),
                "lbw": [1, 0] * (extra_rows // 2) + [1] * (extra_rows % 2),
            }
        )
        frame = pd.concat([frame, many], ignore_index=True)
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return NodeSource(name, path)


def _nodes(tmp_path: Path) -> list[NodeSource]:
    return [
        _node_file(tmp_path, "north", 400, 1, extra_rows=4),  # one resident, four rows
        _node_file(tmp_path, "south", 300, 2, extra_rows=0),
    ]


def test_a_stats_result_reports_the_rows_each_nodes_cap_dropped(tmp_path):
    spec = parse_job_spec(
        {
            "kind": "stats",
            "privacy": {"epsilon": 1.0, "delta": 1e-6, "max_rows_per_subject": 2},
            "stats": {
                "measures": ["count", "mean"],
                "variables": ["bmi_pre"],
                "group_by": [],
                "bounds": {"bmi_pre": [12, 50]},
            },
        }
    )
    result = run_sum_job(spec, _nodes(tmp_path), job_id="s1", max_records=404)
    assert result["status"] == "succeeded", result["reason"]
    # four rows, a cap of two: two dropped at north, none at south
    assert result["rows_dropped_by_node"] == {"north": 2, "south": 0}
    assert result["dp"]["max_rows_per_subject"] == 2
    assert rows_dropped_frame(result).to_dict() == {"north": 2, "south": 0}
    text = summary_text(result)
    assert "rows dropped by the per-resident cap, per node" in text
    line = next(row for row in text.splitlines() if row.strip().startswith("north"))
    assert line.split()[-1] == "2"


def test_a_training_result_reports_the_rows_each_nodes_cap_dropped(tmp_path):
    spec = parse_job_spec(TRAIN)
    run = run_training_job(spec, _nodes(tmp_path), job_id="t1", max_records=404)
    assert run.outcome.status == "succeeded", run.outcome.reason
    report = run.report()
    # DP-SGD keeps one row per resident: three of the four rows are dropped at north
    assert report["rows_dropped_by_node"] == {"north": 3, "south": 0}
    assert all(r["rows_dropped_by_node"] == {"north": 3, "south": 0} for r in report["rounds"])
    assert "rows dropped by the per-resident cap" in summary_text(report)


def test_a_job_without_privacy_keeps_every_row_and_reports_no_cap(tmp_path):
    spec = parse_job_spec(
        {
            "kind": "stats",
            "stats": {"measures": ["count"], "variables": ["bmi_pre"], "group_by": []},
        }
    )
    result = run_sum_job(spec, _nodes(tmp_path), job_id="s2", max_records=404)
    assert result["status"] == "succeeded", result["reason"]
    assert "rows_dropped_by_node" not in result
    assert result["cells"][0]["n"] == 400 + 4 + 300  # every row counted
    assert "rows dropped" not in summary_text(result)
