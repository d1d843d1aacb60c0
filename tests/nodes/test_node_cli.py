"""``hamanasu node ...``: init, consent import, policy show/check, budget show, ledger head."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nodes.scenario import generate

HAMANASU = [sys.executable, "-m", "hamanasu", "node"]
ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HAMANASU, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenario")
    generate("iwamizawa", out, seed=5, years=[2019])
    return out


@pytest.fixture
def node_dir(tmp_path, scenario) -> Path:
    folder = tmp_path / "clinic"
    policy = ROOT / "examples" / "iwamizawa" / "policies" / "women-clinic.toml"
    proc = _run("init", "--dir", str(folder), "--name", "women-clinic", "--policy", str(policy))
    assert proc.returncode == 0, proc.stderr
    return folder


def test_node_init_writes_private_key_and_refuses_a_second_init(node_dir):
    key = node_dir / "keys" / "node_ed25519.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    again = _run("init", "--dir", str(node_dir), "--name", "x")
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already holds a node key" in again.stderr
    assert "PRIVATE" not in again.stderr + again.stdout


def test_node_consent_import_policy_check_budget_and_head(
    node_dir, scenario, tmp_path, hamanasu_in_process
):
    # The import runs as a real process; the commands after it read what it wrote, through
    # the same entry point in this process (a traceback escaping it fails the test).

    def node(*args: str) -> subprocess.CompletedProcess:
        return hamanasu_in_process("node", *args)

    consents = scenario / "women-clinic" / "consents.csv"
    proc = _run("consent", "import", str(consents), "--dir", str(node_dir))
    assert proc.returncode == 0, proc.stderr
    assert "imported" in proc.stdout

    job = ROOT / "examples" / "iwamizawa" / "lbw_model.toml"
    check = node(
        "policy",
        "check",
        str(job),
        "--dir",
        str(node_dir),
        "--data",
        str(scenario / "women-clinic"),
        "--format",
        "json",
    )
    assert check.returncode == 0, check.stderr
    decision = json.loads(check.stdout)
    assert decision["outcome"] == "allow"
    births = len((scenario / "women-clinic" / "births.csv").read_text().splitlines()) - 1
    assert 0 < decision["subjects_after_consent"] < births
    commercial = node(
        "policy",
        "check",
        str(job.parent / "commercial_model.toml"),
        "--dir",
        str(node_dir),
        "--format",
        "json",
    )
    assert json.loads(commercial.stdout)["outcome"] == "deny"
    assert commercial.returncode == 1, commercial.stderr
    commercial_job = str(job.parent / "commercial_model.toml")
    readable = node("policy", "check", commercial_job, "--dir", str(node_dir))
    assert readable.returncode == 1
    assert "deny for" in readable.stdout and "reasons" in readable.stdout
    assert "limits" in readable.stdout and "Traceback" not in readable.stderr
    assert "commercial_not_allowed" in commercial.stdout

    budget = node("budget", "show", "--dir", str(node_dir), "--format", "json")
    rows = json.loads(budget.stdout)
    assert any(r["domain"] == "births" for r in rows)
    table = node("budget", "show", "--dir", str(node_dir))
    assert table.returncode == 0 and "births" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80, table.stdout

    head_file = tmp_path / "head.json"
    head = node("ledger", "head", "--dir", str(node_dir), "--out", str(head_file))
    assert head.returncode == 0, head.stderr
    signed = json.loads(head_file.read_text())
    assert signed["tree_size"] > 0 and signed["signature"]
    shown = node("policy", "show", "--dir", str(node_dir))
    assert "automatic_for" in shown.stdout


def test_node_commands_refuse_bad_input_in_one_line(tmp_path, node_dir, hamanasu_in_process):
    # The first case runs as a real process, the others through the same entry point in
    # this process (each stops at its bad input; a traceback escaping it fails the test).

    def node(*args: str) -> subprocess.CompletedProcess:
        return hamanasu_in_process("node", *args)

    cases = [
        _run("policy", "show", "--dir", str(tmp_path / "nowhere")),
        node("consent", "import", str(tmp_path / "missing.csv"), "--dir", str(node_dir)),
        node("policy", "check", str(tmp_path / "missing.toml"), "--dir", str(node_dir)),
    ]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(
        "subject,recorded_at,status,decision,purposes,commercial,domains,period_start,period_end\n"
        "not a pseudonym!,yesterday,active,permit,HMB,no,,,\n"
    )
    cases.append(node("consent", "import", str(bad_csv), "--dir", str(node_dir)))
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    cases.append(node("init", "--dir", str(tmp_path / "n"), "--name", "n", "--policy", str(deep)))
    cases.append(node("policy", "check", str(deep), "--dir", str(node_dir)))
    for proc in cases:
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: ")
