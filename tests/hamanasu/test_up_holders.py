"""``hamanasu up`` starts a node for each of the six holders; the city node reads its own
database through a mapping file (PostgreSQL when $HAMANASU_TEST_POSTGRES_URL is set,
else SQLite, as the output says), and a job across the city and the insurer runs."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.hamanasu.up_process import run_hamanasu, running_up

ROOT = Path(__file__).resolve().parents[2]
PG = os.environ.get("HAMANASU_TEST_POSTGRES_URL")
HOLDERS = ("city", "city-hospital", "dairy", "drugstore", "insurer", "women-clinic")
JOB = """
kind = "stats"
name = "checkup-sbp-by-sex"
domain = "checkups"
min_nodes = 2
nodes = ["city", "insurer"]
[stats]
measures = ["count", "mean"]
variables = ["sbp"]
group_by = ["female"]
levels = { female = [0, 1] }
bounds = { sbp = [60, 260] }
min_cell_count = 10
[purpose]
duo = ["HMB"]
project = "iwamizawa-mch-2017"
requester = "hokkaido-university"
requester_type = "academic"
"""


@pytest.mark.slow
def test_up_starts_all_six_holders_and_the_city_node_runs_from_its_database(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HAMANASU_UP_POSTGRES_URL", None)
    prefix = f"u{secrets.token_hex(4)}_"
    extra = ["--postgres", PG, "--schema-prefix", prefix] if PG else []
    try:
        with running_up(tmp_path, tmp_path / "c", ["--poll", "0.5", *extra], env) as up:
            port, log_path = up
            _check_holders_and_run_a_job(tmp_path, port, log_path, prefix, env)
    finally:
        if PG:
            engine = sa.create_engine(PG)
            with engine.begin() as conn:
                for h in HOLDERS:
                    name = f"{prefix}{h}".replace("-", "_")
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            engine.dispose()


def _check_holders_and_run_a_job(
    tmp_path: Path, port: int, log_path: Path, prefix: str, env: dict[str, str]
) -> None:
    text = log_path.read_text()
    lines = {ln.split(":", 1)[0]: ln for ln in text.splitlines()}
    assert all(h in lines for h in HOLDERS), text
    started = next(ln for ln in text.splitlines() if ln.startswith("coordinator on"))
    assert all(h in started for h in HOLDERS)
    city = lines["city"]
    if PG:
        assert f"PostgreSQL schema {prefix}city of" in city and "mapping.toml" in city
    else:
        assert "SQLite database" in city and "(no --postgres URL)" in city
    for holder in HOLDERS[1:]:
        assert "files in" in lines[holder]

    (tmp_path / "job.toml").write_text(JOB)
    common = ["--url", f"http://127.0.0.1:{port}", "--token-file", "c/tokens/researcher"]
    submitted = run_hamanasu(["job", "submit", "job.toml", *common], tmp_path, env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    for node in ("city", "insurer"):  # their policies leave the decision to their admins
        config = tmp_path / f"{node}.toml"
        config.write_text(
            f'[node]\nname = "{node}"\ncoordinator_url = "http://127.0.0.1:{port}"\n'
            f'state_dir = "c/nodes/{node}"\ntoken_file = "c/tokens/{node}"\n'
            f'admin_token_file = "c/tokens/{node}-admin"\n'
        )
        approved = run_hamanasu(
            ["node", "approvals", "approve", job_id, "--config", str(config)], tmp_path, env
        )
        assert approved.returncode == 0, (approved.stdout, approved.stderr)
    waited = run_hamanasu(["job", "wait", job_id, "--timeout", "500", *common], tmp_path, env)
    assert waited.returncode == 0, (waited.stdout, waited.stderr, log_path.read_text()[-3000:])
    shown = run_hamanasu(["job", "results", job_id, "--out", "res", *common], tmp_path, env)
    assert shown.returncode == 0, shown.stderr
    report = json.loads((tmp_path / "res" / "result.json").read_text())["report"]
    assert report["summed_nodes"] == ["city", "insurer"]
    cells = [c for c in report["cells"] if not c["margin"]]
    assert [c["group"]["female"] for c in cells] == [0, 1]
    assert all(c["n"] >= 10 and 100 < c["variables"]["sbp"]["mean"] < 160 for c in cells)
