"""Settings precedence and refusals; schemathesis over the OpenAPI schema; the CLI against a
live uvicorn on loopback (token file 0600, one-line errors with exit 2, --format json)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from typer.testing import CliRunner

from coordinator.api import bootstrap_operator, create_app
from coordinator.errors import SettingsError
from coordinator.settings import load_settings
from hamanasu.cli import _mount
from hamanasu.cli import app as cli_app

from .conftest import fast_settings

_mount()


def test_load_settings_env_over_toml_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[coordinator]\nport = 9001\nmax_concurrent_runs = 3\n")
    assert load_settings(toml).port == 9001 and load_settings(toml).max_concurrent_runs == 3
    monkeypatch.setenv("HAMANASU_PORT", "9002")
    assert load_settings(toml).port == 9002  # env beats TOML
    assert load_settings(toml, port=9003).port == 9003  # code beats env
    assert load_settings().max_concurrent_runs == 1  # default
    monkeypatch.setenv("HAMANASU_CONFIG", str(toml))
    assert load_settings().max_concurrent_runs == 3  # TOML named by the variable


def test_load_settings_insecure_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="host"):
        load_settings(host="0.0.0.0")
    assert load_settings(host="0.0.0.0", allow_insecure_http=True).host == "0.0.0.0"
    with pytest.raises(SettingsError, match="database_url"):
        load_settings(database_url="postgresql+psycopg://u:secret@db/x")
    with pytest.raises(SettingsError, match="ssl"):
        load_settings(ssl_certfile=tmp_path / "c.pem")
    with pytest.raises(SettingsError, match="token_cache_seconds"):
        load_settings(token_cache_seconds=-1)
    with pytest.raises(SettingsError, match="config"):
        load_settings(tmp_path / "missing.toml")
    url = load_settings(database_url="postgresql+psycopg://u@db/x", database_password="pw")
    assert "pw" in url.url() and "pw" not in url.safe_url()


# -- schemathesis ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def openapi_app(tmp_path_factory: pytest.TempPathFactory):
    app = create_app(fast_settings(tmp_path_factory.mktemp("st")))
    app.state.operator = bootstrap_operator(app.state.store).token
    return app


def test_fuzz_api_operations_no_5xx(openapi_app) -> None:
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", openapi_app)
    headers = {"Authorization": f"Bearer {openapi_app.state.operator}"}
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15

    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def one(case) -> None:
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"
                )

        one()
    assert not failures, "\n".join(failures[:10])


# -- CLI against a live server ----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(tmp_path: Path):
    app = create_app(fast_settings(tmp_path / "c"))
    op = bootstrap_operator(app.state.store).token
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", op, tmp_path
    server.should_exit = True
    thread.join(5)


def test_run_job_commands_token_file_and_errors(live) -> None:
    url, op, tmp = live
    run = CliRunner()
    env = {"HAMANASU_COORDINATOR_URL": url, "HAMANASU_TOKEN": op}
    for n in ("n0", "n1"):
        assert run.invoke(cli_app, ["coordinator", "node-add", n], env=env).exit_code == 0
    tok = tmp / "r.token"
    org = ["coordinator", "organisation", "add", "hokkaido-university", "--type", "academic"]
    r = run.invoke(cli_app, [*org, "--project", "mch", "--project", "rnd:commercial"], env=env)
    assert r.exit_code == 0 and "rnd (commercial)" in r.output, r.output
    r = run.invoke(cli_app, [*org, "--project", "x"], env=env)
    assert r.exit_code == 2 and "exists" in r.output and len(r.output.splitlines()) == 1
    r = run.invoke(cli_app, [*org[:3], "kyoto", "--type", "ngo", "--project", "x"], env=env)
    assert r.exit_code == 2 and "type" in r.output, r.output
    r = run.invoke(
        cli_app,
        [
            "coordinator",
            "principal",
            "add",
            "aki",
            "--role",
            "researcher",
            "--organisation",
            "hokkaido-university",
            "--token-out",
            str(tok),
            "--format",
            "json",
        ],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert tok.stat().st_mode & 0o777 == 0o600
    spec = tmp / "job.toml"
    spec.write_text(
        'kind = "train"\nfeatures = ["a"]\nlabel = "y"\nrounds = 2\n[privacy]\nepsilon = 1.0\n'
        '[purpose]\nproject = "mch"\n'
    )
    renv = {"HAMANASU_COORDINATOR_URL": url, "HAMANASU_TOKEN": ""}
    r = run.invoke(
        cli_app,
        ["job", "submit", str(spec), "--token-file", str(tok), "--format", "json"],
        env=renv,
    )
    assert r.exit_code == 0, r.output
    job_id = json.loads(r.output)["id"]
    # Scriptable: J=$(hamanasu job submit job.toml) holds the id and nothing else.
    r = run.invoke(cli_app, ["job", "submit", str(spec), "--token-file", str(tok)], env=renv)
    assert r.exit_code == 0, r.output
    second = r.stdout.strip()
    assert r.stdout == second + "\n" and second != job_id
    r = run.invoke(cli_app, ["job", "status", second, "--token-file", str(tok)], env=renv)
    assert r.exit_code == 0 and second in r.output, (second, r.output)
    r = run.invoke(cli_app, ["job", "status", job_id, "--token-file", str(tok)], env=renv)
    assert r.exit_code == 0 and "awaiting_approval" in r.output
    r = run.invoke(
        cli_app, ["job", "cancel", job_id, "--token-file", str(tok), "--format", "json"], env=renv
    )
    assert r.exit_code == 0 and json.loads(r.output)["state"] == "cancelled"
    r = run.invoke(
        cli_app, ["job", "wait", job_id, "--token-file", str(tok), "--poll", "0.05"], env=renv
    )
    assert r.exit_code == 1 and "cancelled" in r.output
    # Errors: one line, exit 2.
    spec.write_text('kind = "train"\nfeatures = ["a"]\nlabel = "y"\n[privacy]\nepsilon = 500\n')
    r = run.invoke(cli_app, ["job", "submit", str(spec), "--token-file", str(tok)], env=renv)
    assert (
        r.exit_code == 2
        and "privacy.epsilon" in r.output
        and len(r.output.strip().splitlines()) == 1
    )
    os.chmod(tok, 0o644)
    r = run.invoke(cli_app, ["job", "status", job_id, "--token-file", str(tok)], env=renv)
    assert r.exit_code == 2 and "chmod 600" in r.output
    r = run.invoke(cli_app, ["job", "status", job_id], env={**renv, "HAMANASU_TOKEN": "hmn_bad"})
    assert r.exit_code == 2 and "401" in r.output and "hmn_bad" not in r.output
    r = run.invoke(cli_app, ["job", "results", job_id, "--out", str(tmp / "o")], env=env)
    assert r.exit_code == 2 and "needs researcher" in r.output  # a result is its researcher's
    mine = {**renv, "HAMANASU_TOKEN": tok.read_text().strip()}
    r = run.invoke(cli_app, ["job", "results", job_id, "--out", str(tmp / "o")], env=mine)
    assert r.exit_code == 2 and "no result" in r.output


def test_init_coordinator_prints_token_once(tmp_path: Path) -> None:
    run = CliRunner()
    r = run.invoke(
        cli_app,
        [
            "coordinator",
            "init",
            "--data-dir",
            str(tmp_path / "d"),
            "--token-out",
            str(tmp_path / "op"),
        ],
    )
    assert r.exit_code == 0 and "hmn_" in r.output
    assert (tmp_path / "op").stat().st_mode & 0o777 == 0o600
    r = run.invoke(cli_app, ["coordinator", "init", "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 2 and "operator exists" in r.output
