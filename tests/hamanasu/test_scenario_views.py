"""``hamanasu scenario views``: each holder's one-row-per-resident files for linked jobs,
run as the README shows it (the commands of its linked example, as written)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from nodes.scenario import linked_views as views
from tests.hamanasu.up_process import run_hamanasu

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- linked-example -->\n```bash\n(.*?)```", text, re.S)
    assert block, "README: no linked-example block"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [shlex.split(ln) for ln in lines if ln.strip()]


@pytest.mark.slow
def test_readme_linked_example_runs_from_generated_views(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    commands = _readme_commands()
    assert [c[:3] for c in commands] == [
        ["hamanasu", "scenario", "generate"],
        ["hamanasu", "scenario", "views"],
        ["hamanasu", "simulate", "examples/iwamizawa/watching_over_by_bp.toml"],
    ]
    outputs = []
    for cmd in commands:
        proc = run_hamanasu(cmd[1:], tmp_path)
        assert proc.returncode == 0, f"{cmd}\n{proc.stderr[-2000:]}"
        outputs.append(proc.stdout)
    # one line per view written, each holder's views under its own folder
    written = {ln.split(" -> ")[1] for ln in outputs[1].splitlines() if " -> " in ln}
    expected = {
        str(Path("views") / holder / f"{view}.csv")
        for holder, made in views.HOLDER_VIEWS.items()
        for view, _, _ in made
    }
    assert written == expected
    # the city's file is what the city's own view function makes of its own table
    alerts = pd.read_csv(tmp_path / "views" / "city" / "alerts_per_resident.csv")
    own = views.alerts_per_resident(
        pd.read_csv(tmp_path / "scenario" / "city" / "watching_over.csv")
    )
    assert alerts["subject"].is_unique and len(alerts) == len(own)
    bp = pd.read_csv(tmp_path / "views" / "insurer" / "checkup_bp_group.csv")
    assert set(bp["bp_group"]) == {"high", "normal"} and bp["subject"].is_unique

    result = json.loads((tmp_path / "watching-output" / "result.json").read_text())
    assert result["status"] == "succeeded" and result["linked"] is True
    assert result["linked_n"] == len(alerts.merge(bp, on="subject"))


def test_views_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    cases = {
        ("--data", str(tmp_path / "none"), "--out", str(tmp_path / "v")): "holds no scenario",
        ("--data", str(tmp_path), "--out", "v", "--preset", "hokkaido"): "--preset",
    }
    (tmp_path / "scenario.json").write_text("{}")
    cases[("--data", str(tmp_path), "--out", "v")] = "is not a scenario manifest"
    for args, words in cases.items():
        proc = run_hamanasu(["scenario", "views", *args], tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
