"""``hamanasu simulate`` end to end: three nodes' files, two rounds, DP + SecAgg+; and bad input."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HAMANASU = [sys.executable, "-m", "hamanasu"]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("nodes")
    rng = np.random.default_rng(7)
    out = {}
    for name, n in (("north", 900), ("south", 1400), ("east", 1100)):
        x = rng.normal(size=(n, 3))
        y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * x[:, 0] - x[:, 1] - 1)))).astype(int)
        path = folder / f"{name}.csv"
        pd.DataFrame(
            {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y, "g": rng.integers(0, 3, n)}
        ).to_csv(path, index=False)
        out[name] = path
    return out


def _job(tmp: Path, body: str) -> Path:
    path = tmp / "job.toml"
    path.write_text(body)
    return path


GOOD = """kind = "train"
features = ["a", "b", "c"]
label = "y"
rounds = 2
[privacy]
epsilon = 4.0
delta = 1e-5
"""


def _run(args, **kw):
    return subprocess.run([*HAMANASU, *args], capture_output=True, text=True, timeout=300, **kw)


#: Bad-input cases that also run as a real ``python -m hamanasu`` process; the others go
#: through the same entry point in this process (they stop before any work is done).
REAL_PROCESS = {"not valid TOML", "empty.csv: not a readable csv file", "lbw_glm"}


def _bad_input(runner, key: str, args: list[str]) -> subprocess.CompletedProcess:
    return _run(args) if key in REAL_PROCESS else runner(*args)


@pytest.mark.slow
def test_simulate_three_nodes_two_rounds(tmp_path, nodes):
    job = _job(tmp_path, GOOD)
    out = tmp_path / "out"
    args = ["simulate", str(job), "--out", str(out), "--quiet"]
    for name, path in nodes.items():
        args += ["--node", f"{name}={path}"]
    proc = _run(args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "succeeded"
    assert result["secure_aggregation"] is True
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    assert sorted(result["nodes"]) == ["east", "north", "south"]
    spent = result["privacy"]["epsilon_spent_by_node"]
    assert set(spent) == {"east", "north", "south"}
    assert all(0.9 * 4.0 <= eps <= 4.0 for eps in spent.values())
    final = result["rounds"][-1]["metrics"]
    assert final["auc"] > 0.7  # the signal is strong; the model learned it under DP
    assert final["n"] == sum(r["metrics"]["n"] for r in result["rounds"][-1:])
    assert (out / "training.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (GOOD.replace('"c"]', '"c", "zz"]'), "features: ['zz'] not in node"),
        (GOOD.replace('label = "y"', 'label = "g"'), "label: 'g' is not binary"),
        (GOOD.replace("epsilon = 4.0", "epsilon = 0"), "privacy.epsilon"),
        (GOOD.replace("delta = 1e-5", "delta = 1.5"), "privacy.delta"),
        (GOOD + "\n[[[broken", "not valid TOML"),
        (GOOD + "deep = " + "[" * 5000 + "]" * 5000 + "\n", "nests tables or arrays deeper"),
        (GOOD.replace("epsilon = 4.0", 'epsilon = "4"'), "privacy.epsilon"),
        (GOOD.replace("rounds = 2", "rounds = true"), "rounds"),
        (GOOD.replace("rounds = 2", 'rounds = 2\nmodel = "resnet"'), "model: unknown model"),
    ],
)
def test_simulate_bad_job_one_line_exit_2(tmp_path, nodes, body, message, hamanasu_in_process):
    job = _job(tmp_path, body)
    out = tmp_path / "out"
    args = ["simulate", str(job), "--out", str(out)]
    for name, path in nodes.items():
        args += ["--node", f"{name}={path}"]
    proc = _bad_input(hamanasu_in_process, message, args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (out / "result.json").exists()


def test_simulate_bad_node_argument(tmp_path, nodes):
    job = _job(tmp_path, GOOD)
    proc = _run(["simulate", str(job), "--node", "nopath", "--node", f"x={nodes['north']}"])
    assert proc.returncode == 2
    assert "--node: expected NAME=PATH" in proc.stderr


def _bad_file(folder: Path, kind: str, good: Path) -> Path:
    """Write one kind of bad node file next to the good ones; return its path."""
    frame = pd.read_csv(good)
    if kind == "empty":
        path = folder / "empty.csv"
        path.write_text("")
    elif kind == "header-only":
        path = folder / "header.csv"
        path.write_text("a,b,c,y,g\n")
    elif kind in ("truncated", "lying-format", "corrupt-pages"):
        path = folder / f"{kind}.parquet"
        frame.to_parquet(path)
        data = bytearray(path.read_bytes())
        if kind == "truncated":
            data = data[: len(data) // 2]
        elif kind == "lying-format":
            data = bytearray(good.read_bytes())  # CSV text under a .parquet name
        else:  # footer (schema, row counts) intact, every page overwritten
            footer = struct.unpack("<i", bytes(data[-8:-4]))[0]
            data[4 : len(data) - 8 - footer] = b"\xaa" * (len(data) - 12 - footer)
        path.write_bytes(bytes(data))
    elif kind == "huge-value":
        frame.loc[5, "a"] = 1e308
        path = folder / "huge.csv"
        frame.to_csv(path, index=False)
    else:  # a subject's row loaded twice
        frame.insert(0, "subject", [f"{i:032x}" for i in range(len(frame))])
        frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
        path = folder / "twice.csv"
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "empty.csv: not a readable csv file"),
        ("header-only", "header.csv: the file holds no data rows"),
        ("truncated", "truncated.parquet: not a readable parquet file"),
        ("lying-format", "lying-format.parquet: not a readable parquet file"),
        ("corrupt-pages", "corrupt-pages.parquet: not a readable parquet file"),
        ("huge-value", "huge.csv row 6 (line 7), column a: value 1e+308 is outside"),
        ("duplicate", f"twice.csv row {900 + 1} (line {900 + 2}): the row repeats row 4"),
    ],
)
def test_simulate_bad_node_file_one_line_exit_2(
    tmp_path, nodes, kind, message, hamanasu_in_process
):
    bad = _bad_file(tmp_path, kind, nodes["north"])
    out = tmp_path / "out"
    args = ["simulate", str(_job(tmp_path, GOOD)), "--out", str(out), "--quiet"]
    args += ["--node", f"bad={bad}", "--node", f"south={nodes['south']}"]
    proc = _bad_input(hamanasu_in_process, message, args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --node bad: "), proc.stderr[-2000:]
    assert message in lines[0]
    assert not (out / "result.json").exists()


@pytest.mark.parametrize("job", ["lbw_model", "lbw_glm", "lbw_rate_by_year"])
def test_a_header_only_table_in_a_node_folder_is_one_line_exit_2(
    tmp_path, job, hamanasu_in_process
):
    """A node folder's table with its columns and no rows is refused at load, naming the
    file (before, a training or GLM job ran and failed at the node with exit 1 and several
    lines, and a statistics job succeeded on nothing)."""
    from federation.cdm import get_schema

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "births.csv").write_text(",".join(get_schema("births").names) + "\n")
    examples = Path(__file__).resolve().parents[2] / "examples" / "iwamizawa"
    out = tmp_path / "out"
    args = ["simulate", str(examples / f"{job}.toml"), "--out", str(out), "--quiet"]
    args += ["--node", f"bad={folder}", "--node", f"also={folder}"]
    proc = _bad_input(hamanasu_in_process, job, args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: --node bad: births.csv: the file holds no data rows"], proc.stderr
    assert not (out / "result.json").exists()
