"""``hamanasu simulate`` of statistics jobs: exact pooled values without DP, suppression, DP noise."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HAMANASU = [sys.executable, "-m", "hamanasu"]

JOB = """kind = "stats"
min_nodes = 3
[stats]
measures = ["count", "proportion", "mean"]
variables = ["y", "w"]
group_by = ["g"]
levels = {{ g = [0, 1, 2, 3] }}
bounds = {{ y = [0, 1], w = [0, 100] }}
min_cell_count = 10
{privacy}
"""


def _nodes(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(11)
    out = {}
    for name, n in (("a", 400), ("b", 600), ("c", 500)):
        g = rng.choice([0, 1, 2, 3], size=n, p=[0.4, 0.4, 0.195, 0.005])  # level 3 is rare
        frame = pd.DataFrame(
            {
                "g": g,
                "y": (rng.random(n) < 0.1 + 0.05 * g).astype(int),
                "w": rng.uniform(0, 100, n).round(3),
            }
        )
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        out[name] = path
    return out


def _simulate(tmp: Path, nodes: dict[str, Path], privacy: str = "") -> dict:
    job = tmp / "stats.toml"
    job.write_text(JOB.format(privacy=privacy))
    out = tmp / "out"
    args = [*HAMANASU, "simulate", str(job), "--out", str(out), "--quiet"]
    for name, path in nodes.items():
        args += ["--node", f"{name}={path}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "result.json").read_text())


def _cell(result: dict, level) -> dict:
    return next(c for c in result["cells"] if c["group"]["g"] == level)


@pytest.mark.slow
def test_stats_over_three_nodes_equal_pooled_values_with_suppression(tmp_path):
    nodes = _nodes(tmp_path)
    result = _simulate(tmp_path, nodes)
    assert result["status"] == "succeeded" and result["secure_aggregation"] is True
    pooled = pd.concat(pd.read_csv(p) for p in nodes.values())
    for level in (0, 1):
        cell = _cell(result, level)
        rows = pooled[pooled["g"] == level]
        assert cell["n"] == pytest.approx(len(rows), abs=1e-3)
        assert cell["variables"]["y"]["proportion"] == pytest.approx(rows["y"].mean(), abs=1e-6)
        assert cell["variables"]["w"]["mean"] == pytest.approx(rows["w"].mean(), abs=1e-4)
    total = _cell(result, "(all)")
    assert total["n"] == pytest.approx(len(pooled), abs=1e-3)
    # Level 3 has fewer rows than the minimum: suppressed; and the next-smallest cell
    # (level 2) too, so level 3 cannot be recovered from the total by subtraction.
    assert _cell(result, 3) == {"group": {"g": 3}, "margin": False, "suppressed": "primary"}
    assert _cell(result, 2)["suppressed"] == "complementary" and "n" not in _cell(result, 2)
    reasons = {s["group"]["g"]: s["reason"] for s in result["suppressed"]}
    assert reasons == {3: "primary", 2: "complementary"}


@pytest.mark.slow
def test_stats_with_distributed_dp_report_noise_and_charge(tmp_path):
    nodes = _nodes(tmp_path)
    result = _simulate(tmp_path, nodes, "[privacy]\nepsilon = 1.0\ndelta = 1e-6\n")
    assert result["status"] == "succeeded"
    dp = result["dp"]
    assert dp["mode"] == "distributed" and dp["nodes_contributing"] == 3
    assert dp["epsilon_charged_per_node"] <= 1.0
    pooled = pd.concat(pd.read_csv(p) for p in nodes.values())
    rows = pooled[pooled["g"] == 0]
    cell = _cell(result, 0)
    # Noisy but calibrated: within 6 noise SDs, and not exact.
    assert abs(cell["n"] - len(rows)) < 6 * dp["noise_scale"] + 1
    assert cell["n"] != pytest.approx(len(rows), abs=1e-6)
