"""The README's notebook example, run as written against a real ``hamanasu up`` on loopback."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.hamanasu.up_process import running_up

ROOT = Path(__file__).resolve().parents[2]
HEADING = "### From a notebook: `hamanasu.Client`"


def _example() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(HEADING, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def _up_args() -> list[str]:
    text = (ROOT / "README.md").read_text().split(HEADING, 1)[1].split("```python", 1)[0]
    command = re.search(r"`(hamanasu up[^`]*)`", text.replace("\n", " ")).group(1)
    return command.split()[2:]


def test_readme_notebook_example_runs_against_a_live_consortium(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [*_up_args(), "--poll", "0.5"]
    with running_up(tmp_path, tmp_path / "consortium", args, env) as (port, _):
        code = _example().replace("http://127.0.0.1:8750", f"http://127.0.0.1:{port}")
        assert "consortium/tokens/researcher" in code
        (tmp_path / "examples").symlink_to(ROOT / "examples")
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = proc.stdout
        assert "binomial GLM" in out and ("ε" in out or "epsilon" in out), out
        # The odds-ratio frame: the two terms asked for, with finite odds ratios above zero.
        rows = [ln.split() for ln in out.splitlines() if re.match(r"^(smoking|hdp)\s", ln)]
        assert {r[0] for r in rows} == {"smoking", "hdp"}, out
        assert all(float(r[2]) > 0 for r in rows), out
        # The same result at the terminal: `hamanasu job results` ends with the summary
        # table and names the plots it wrote.
        cli = [sys.executable, "-m", "hamanasu", "job"]
        common = [
            "--url",
            f"http://127.0.0.1:{port}",
            "--token-file",
            "consortium/tokens/researcher",
        ]
        listed = subprocess.run(
            [*cli, "list", *common, "--format", "json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert listed.returncode == 0, listed.stderr
        job_id = json.loads(listed.stdout)[0]["id"]
        shown = subprocess.run(
            [*cli, "results", job_id, "--out", "res", *common],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert shown.returncode == 0, shown.stderr
        assert "binomial GLM (logit link)" in shown.stdout and "maternal_age" in shown.stdout
        assert "plots: " in shown.stdout and (tmp_path / "res" / "result.json").exists()
