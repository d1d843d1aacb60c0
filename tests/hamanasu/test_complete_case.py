"""Complete cases: a job (or a node's mapping) asks for them; the rows each node read and
dropped as incomplete, per column, appear in the result JSON and the summary table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.result_tables import complete_case_frame, summary_text
from nodes.scenario.databases import write_sqlite
from nodes.scenario.generator import generate
from tests.hamanasu.up_process import simulate

JOB = """
kind = "stats"
domain = "checkups"
min_nodes = 2
complete_case = true
[stats]
measures = ["count", "mean"]
variables = ["glucose", "hba1c"]
bounds = { glucose = [40, 600], hba1c = [3, 20] }
min_cell_count = 10
"""


def _blank(frame: pd.DataFrame, column: str, rows: np.ndarray) -> pd.DataFrame:
    out = frame.copy()
    out.loc[rows, column] = np.nan
    return out


@pytest.mark.slow
def test_complete_case_counts_reach_the_result_and_the_summary_table(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate("iwamizawa", data, years=[2019], scale=0.5)
    rng = np.random.default_rng(5)
    # node a: the city's checkups as files, glucose missing in 120 rows, HbA1c in 4
    city = pd.read_csv(data / "city" / "checkups.csv")
    a_glucose = rng.choice(len(city), 120, replace=False)
    a_hba1c = rng.choice(np.setdiff1d(np.arange(len(city)), a_glucose), 4, replace=False)
    city = _blank(_blank(city, "glucose", a_glucose), "hba1c", a_hba1c)
    (tmp_path / "a").mkdir()
    city.to_csv(tmp_path / "a" / "checkups.csv", index=False)
    # node b: the insurer's checkups in its SQLite database, read through its mapping
    insurer = pd.read_csv(data / "insurer" / "checkups.csv")
    b_both = rng.choice(len(insurer), 30, replace=False)
    insurer = _blank(_blank(insurer, "glucose", b_both), "hba1c", b_both[:12])
    (tmp_path / "b").mkdir()
    insurer.to_csv(tmp_path / "b" / "checkups.csv", index=False)
    mapping = write_sqlite(tmp_path / "b", {"checkups": "checkups.csv"})

    (tmp_path / "job.toml").write_text(JOB)
    out = tmp_path / "out"
    proc = simulate(tmp_path / "job.toml", {"a": tmp_path / "a", "b": mapping}, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["complete_case_by_node"] == {
        "a": {
            "rows_read": len(city),
            "rows_dropped": 124,
            "missing": {"glucose": 120, "hba1c": "< 10"},
        },
        "b": {
            "rows_read": len(insurer),
            "rows_dropped": 30,
            "missing": {"glucose": 30, "hba1c": 12},
        },
    }
    kept = pd.concat([city, insurer]).dropna(subset=["glucose", "hba1c"])
    cell = result["cells"][0]
    assert cell["n"] == pytest.approx(len(kept), abs=1e-3)
    assert cell["variables"]["glucose"]["mean"] == pytest.approx(kept["glucose"].mean(), rel=1e-6)
    # the CLI's summary table says the same
    assert "complete cases per node: rows read, dropped as incomplete, missing" in proc.stdout
    table = complete_case_frame(result)
    assert table.loc["a", "missing hba1c"] == "< 10" and table.loc["b", "dropped"] == 30
    assert str(len(city)) in summary_text(result)


def test_without_complete_cases_a_result_has_no_counts_and_no_table() -> None:
    result = {"kind": "stats", "status": "succeeded", "cells": []}
    assert complete_case_frame(result).empty
    assert "complete cases" not in summary_text(result)
