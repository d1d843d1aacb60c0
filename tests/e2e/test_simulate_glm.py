"""``hamanasu simulate`` of GLM jobs: equal to a pooled statsmodels fit under SecAgg+, refusals."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

HAMANASU = [sys.executable, "-m", "hamanasu"]
#: Stated tolerance of coefficients and standard errors under SecAgg+ quantisation.
SECAGG_TOLERANCE = 1e-4


def _nodes(folder: Path, separable: bool = False) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    out = {}
    for name, n in (("a", 700), ("b", 1100), ("c", 900)):
        x1, x2 = rng.uniform(-2, 2, n), rng.integers(0, 2, n)
        eta = -1 + 0.8 * x1 - 0.6 * x2
        y = (
            (x1 > 0).astype(int)
            if separable
            else (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
        )
        path = folder / f"{name}.csv"
        pd.DataFrame({"x1": x1, "x2": x2, "y": y}).to_csv(path, index=False)
        out[name] = path
    return out


JOB = """kind = "glm"
features = ["x1", "x2"]
label = "y"
[glm]
family = "binomial"
bounds = {{ x1 = [-2, 2], x2 = [0, 1] }}
[secure_aggregation]
enabled = {secure}
"""


def _simulate(
    tmp: Path, nodes: dict[str, Path], secure: bool
) -> tuple[subprocess.CompletedProcess, dict]:
    job = tmp / "glm.toml"
    job.write_text(JOB.format(secure="true" if secure else "false"))
    out = tmp / ("secure" if secure else "plain")
    args = [*HAMANASU, "simulate", str(job), "--out", str(out), "--quiet"]
    for name, path in nodes.items():
        args += ["--node", f"{name}={path}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    return proc, result


@pytest.mark.slow
@pytest.mark.parametrize(("secure", "tol"), [(True, SECAGG_TOLERANCE), (False, 1e-6)])
def test_federated_glm_equals_pooled_statsmodels(tmp_path, secure, tol):
    nodes = _nodes(tmp_path)
    proc, result = _simulate(tmp_path, nodes, secure)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["status"] == "succeeded" and result["secure_aggregation"] is secure
    # The terminal ends with the summary table and names the plot it wrote.
    table = proc.stdout.splitlines()
    assert table[0] == "binomial GLM (logit link)" and "P>|z|" in table[2]
    assert any(line.split()[:1] == ["x1"] for line in table)
    assert f"plots: {tmp_path / ('secure' if secure else 'plain') / 'forest.png'}" in table
    pooled = pd.concat(pd.read_csv(p) for p in nodes.values())
    fit = sm.GLM(
        pooled["y"], sm.add_constant(pooled[["x1", "x2"]]), family=sm.families.Binomial()
    ).fit()
    coef = result["coefficients"]
    for term, pooled_name in (("(Intercept)", "const"), ("x1", "x1"), ("x2", "x2")):
        assert coef[term]["estimate"] == pytest.approx(fit.params[pooled_name], abs=tol)
        assert coef[term]["std_error"] == pytest.approx(fit.bse[pooled_name], abs=tol)
        assert coef[term]["odds_ratio"] == pytest.approx(np.exp(coef[term]["estimate"]))
    assert result["n_obs"] == len(pooled)
    assert result["deviance"] == pytest.approx(fit.deviance, rel=1e-5)
    assert (tmp_path / ("secure" if secure else "plain") / "forest.png").exists()


@pytest.mark.slow
def test_federated_glm_refuses_perfect_separation(tmp_path):
    proc, result = _simulate(tmp_path, _nodes(tmp_path, separable=True), True)
    assert proc.returncode == 1
    assert result["status"] == "failed"
    assert "separation" in result["reason"]
    assert "coefficients" not in result  # nothing released


def test_glm_without_public_bounds_is_refused_in_one_line(tmp_path):
    nodes = _nodes(tmp_path)
    job = tmp_path / "glm.toml"
    job.write_text(JOB.format(secure="true").replace(", x2 = [0, 1]", ""))
    args = [*HAMANASU, "simulate", str(job), "--out", str(tmp_path / "o")]
    for name, path in nodes.items():
        args += ["--node", f"{name}={path}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: glm.bounds: feature 'x2' needs a public range [low, high]"
