"""The ``[link]`` table: what a linked spec accepts and refuses, and a linked simulate run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.errors import JobSpecError
from federation.spec import JobSpec, parse_job_spec, read_spec_text
from hamanasu.embedded import run_simulation_job

LINKED_STATS = """
kind = "stats"
domain = "births"
[stats]
measures = ["count", "mean", "variance"]
group_by = ["bw_group"]
levels = { bw_group = ["lbw", "normal"] }
variables = ["weight_4m", "length_4m"]
min_cell_count = 5
[link]
key = "mother"
"""


def _parse(text: str) -> JobSpec:
    return parse_job_spec(read_spec_text(text, "toml"))


def test_a_link_table_makes_a_linked_job_and_allows_qualified_columns() -> None:
    spec = _parse(LINKED_STATS.replace('"weight_4m"', '"infant_checkups.weight_4m"'))
    assert spec.link is not None and spec.link.key == "mother"
    assert "infant_checkups.weight_4m" in spec.columns()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('kind = "glm"\nfeatures = ["births.parity"]\nlabel = "lbw"\n', "link"),
        ('kind = "train"\nfeatures = ["a"]\nlabel = "b"\n[privacy]\nepsilon = 1.0\n[link]\n', "link"),
        (LINKED_STATS.replace("min_cell_count = 5", 'min_cell_count = 5\ndp_mechanism = "laplace"')
         + "[privacy]\nepsilon = 1.0\n", "stats.dp_mechanism"),
        (LINKED_STATS.replace('"variance"]', '"quantile"]'), "link"),
        (LINKED_STATS.replace('key = "mother"', 'key = "name"'), "link.key"),
    ],
)
def test_linked_specs_are_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(JobSpecError) as info:
        _parse(text)
    assert info.value.field == field


def test_a_linked_job_with_privacy_runs_its_noise_inside_the_computation() -> None:
    spec = _parse(LINKED_STATS + "[privacy]\nepsilon = 1.0\n")
    assert spec.dp_mechanism() == "discrete_gaussian"
    assert spec.to_policy_request("j").dp_mechanism == "discrete_gaussian"


def test_simulate_runs_linked_statistics_over_holder_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 200
    mothers = [f"m{i:04d}" for i in range(n)]
    group = rng.choice(["lbw", "normal"], n, p=[0.25, 0.75])
    weight = np.where(group == "lbw", 6.4, 7.0) + rng.normal(0, 0.7, n)
    hosp = pd.DataFrame({"mother": mothers, "bw_group": group}).iloc[:190]
    city = pd.DataFrame({"mother": mothers, "weight_4m": weight,
                         "length_4m": 62 + rng.normal(0, 2, n)}).iloc[15:]
    hosp.to_csv(tmp_path / "hospital.csv", index=False)
    city.to_csv(tmp_path / "city.csv", index=False)
    (tmp_path / "job.toml").write_text(LINKED_STATS)
    from federation.spec import load_job_spec

    spec = load_job_spec(tmp_path / "job.toml")
    out = tmp_path / "out"
    result = run_simulation_job(
        spec, [("hospital", tmp_path / "hospital.csv"), ("city", tmp_path / "city.csv")], out
    )
    assert result["status"] == "succeeded"
    assert json.loads((out / "result.json").read_text())["linked_n"] == 175
    pooled = hosp.merge(city, on="mother")
    cell = next(c for c in result["cells"] if c["group"]["bw_group"] == "lbw")
    sub = pooled.loc[pooled["bw_group"] == "lbw", "weight_4m"]
    assert cell["variables"]["weight_4m"]["mean"] == pytest.approx(sub.mean(), rel=1e-9)
    assert result["holders"] == {"hospital": ["bw_group"], "city": ["weight_4m", "length_4m"]}
