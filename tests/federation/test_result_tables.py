"""Results as tables: the GLM summary lines up with statsmodels', cells and rounds as frames."""

import numpy as np
import pandas as pd
import statsmodels.api as sm

from federation.analytics.glm import glm_local_statistics
from federation.analytics.glm_newton import glm_fit
from federation.result_tables import (
    cells_frame,
    coefficients_frame,
    epsilon_frame,
    rounds_frame,
    summary_text,
)


def _glm_result() -> tuple[dict, object]:
    rng = np.random.default_rng(4)
    x = np.column_stack([np.ones(400), rng.uniform(16, 35, 400)])
    y = (rng.random(400) < 1 / (1 + np.exp(-(-3 + 0.08 * x[:, 1])))).astype(float)
    names = ["Intercept", "bmi_pre"]
    result = glm_fit(lambda b: glm_local_statistics(x, y, b, "binomial"), 2, "binomial", names)
    ref = sm.GLM(y, x, family=sm.families.Binomial()).fit()
    doc = {**result.to_json_dict(), "status": "succeeded", "rounds": 5, "formula": "lbw ~ bmi_pre"}
    return doc, ref


def test_glm_summary_table_matches_statsmodels():
    result, ref = _glm_result()
    frame = coefficients_frame(result)
    assert list(frame.index) == ["Intercept", "bmi_pre"]
    np.testing.assert_allclose(frame["estimate"], ref.params, atol=1e-6)
    np.testing.assert_allclose(frame["std_error"], ref.bse, atol=1e-6)
    text = summary_text(result)
    lines = text.splitlines()
    assert lines[0] == "binomial GLM (logit link): lbw ~ bmi_pre"
    header = lines[2].split()
    assert header[:5] == ["term", "coef", "std", "err", "z"] and "OR" in header
    row = next(line for line in lines if line.strip().startswith("bmi_pre")).split()
    assert float(row[1]) == round(ref.params[1], 4)
    assert float(row[2]) == round(ref.bse[1], 4)
    assert "ε spent per node: none" in text


def test_cells_rounds_and_epsilon_frames():
    stats = {
        "kind": "stats",
        "cells": [
            {"group": {"year": 2018}, "count": 120, "variables": {"lbw": {"mean": 0.1, "proportion_ci": [0.05, 0.15]}}},
            {"group": {"year": 2019}, "count": None, "suppressed": True, "variables": {"lbw": {"mean": None}}},
            {"group": {"year": "(all)"}, "count": 200, "margin": True, "variables": {}},
        ],
    }
    cells = cells_frame(stats)
    assert list(cells["year"]) == [2018, 2019, "(all)"]
    assert list(cells["suppressed"]) == [False, True, False]
    assert "proportion_ci" not in cells.columns  # intervals stay in result.json
    text = summary_text(stats)
    assert "cells (2 rows" in text and "(all)" not in text  # margins left out of the table
    train = {
        "kind": "train",
        "rounds": [
            {"round": r, "metrics": {"auc": 0.6 + r / 100, "accuracy": 0.9}, "epsilon_by_node": {"b": r * 0.5, "a": r * 0.4}}
            for r in (1, 2)
        ],
    }
    assert list(rounds_frame(train)["auc"]) == [0.61, 0.62]
    eps = epsilon_frame(train)
    assert list(eps.index) == ["a", "b"] and list(eps) == [0.8, 1.0]
    assert list(epsilon_frame(train, {"z": 2.0}).index) == ["z"]
    text = summary_text(train)
    assert "evaluation per round" in text and "ε spent per node" in text
    assert pd.isna(cells.loc[1, "mean"])
