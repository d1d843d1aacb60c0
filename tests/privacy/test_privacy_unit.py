"""The DP guarantee is per resident: a resident's extra rows never raise what one person changes.

A resident can hold several rows (twins, two births, yearly checkups). Every DP job keeps at
most ``privacy.max_rows_per_subject`` rows per subject pseudonym before computing, so
adding or removing one resident, with however many rows, moves the released vector by at
most the sensitivity the noise is calibrated for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from federation.plans import PlanInputs, plan_for
from federation.privacy_unit import cap_rows_per_subject
from federation.spec import parse_job_spec

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
    spec = parse_job_spec(
        {
            "kind": "train",
            "features": ["bmi_pre"],
            "label": "lbw",
            "rounds": 1,
            "privacy": {"epsilon": 3.0, "delta": 1e-5},
            "training": {"batch_size": 64, "test_fraction": 0.2},
        }
    )
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
