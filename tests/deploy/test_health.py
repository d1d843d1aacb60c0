"""Health checks of real service processes: the coordinator's /healthz and /readyz with
``hamanasu coordinator health``, and the node service's heartbeat with ``hamanasu node
health`` (alive, ready, killed, stopped, cut off from its coordinator)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_services import HAMANASU, free_port, http_ok, run, start, stop, wait_until  # noqa: E402


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("health")
    data = tmp / "coord"
    out = run("coordinator", "init", "--data-dir", str(data), "--token-out", str(tmp / "op"))
    assert out.returncode == 0, out.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "coordinator.log"
    argv = [*HAMANASU, "coordinator", "serve", "--data-dir", str(data), "--port", str(port)]
    proc = start(argv, os.environ, log)
    wait_until(lambda: http_ok(f"{url}/healthz"), "coordinator", proc, log)
    yield url, tmp / "op"
    stop(proc)


def test_coordinator_liveness_and_readiness(coordinator) -> None:
    url, _ = coordinator
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok"}}
    out = run("coordinator", "health", "--url", url)
    assert (out.returncode, out.stdout.strip()) == (0, "ok database=ok")
    out = run("coordinator", "health", "--url", url, "--live")
    assert (out.returncode, out.stdout.strip()) == (0, "ok")


def test_health_of_a_coordinator_that_does_not_answer() -> None:
    out = run("coordinator", "health", "--url", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("unhealthy: ")


def test_readyz_names_a_database_that_went_away(tmp_path: Path) -> None:
    from coordinator.api import create_app
    from coordinator.settings import load_settings

    app = create_app(load_settings(data_dir=tmp_path / "c"))
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        app.state.store.engine.dispose()
        db = tmp_path / "c" / "coordinator.sqlite"
        db.unlink()
        db.mkdir()  # the file is now a folder: SQLite cannot open it
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert r.json()["checks"]["database"].startswith("unreachable")
        assert str(tmp_path) not in r.text  # no path or URL of the database
        assert client.get("/healthz").status_code == 200  # liveness does not depend on it


def _node(tmp: Path, url: str, op: Path, name: str, poll: float = 0.3) -> Path:
    """Register node ``name`` (its service token in a 0600 file), initialise it, write node.toml."""
    from coordinator.client import CoordinatorClient
    from federation.api_client import read_token, write_token
    from nodes.cli import init_node

    with CoordinatorClient(url, read_token(op, "op")) as c:
        c.register_node(name)
        write_token(tmp / "service.token", c.issue_service_token(name).token)
    init_node(tmp / "state", name)
    config = tmp / "node.toml"
    config.write_text(
        f'[node]\nname = "{name}"\ncoordinator_url = "{url}"\nstate_dir = "state"\n'
        f'token_file = "service.token"\npoll_interval = {poll}\n'
    )
    return config


def _health(config: Path, *extra: str, runner=run):
    """``hamanasu node health`` for ``config``: a real process, or ``runner``'s way."""
    return runner("node", "health", "--config", str(config), *extra)


def _check(config: Path, ready: bool = False, max_age: float = 60.0):
    """The check ``hamanasu node health`` makes, in this process (to wait cheaply)."""
    from nodes.health import check_status

    return check_status(config.parent / "state" / "service-status.json", max_age=max_age, ready=ready)


def test_node_service_heartbeat_alive_ready_killed_and_stopped(
    coordinator, tmp_path: Path, hamanasu_in_process
) -> None:
    # The services are real processes; `node health` reads their heartbeat file, as a
    # process in the first check and through the same entry point in this process after.
    url, op = coordinator
    config = _node(tmp_path, url, op, "n-health")
    before = _health(config)
    assert before.returncode == 1 and "has not run here" in before.stderr
    log = tmp_path / "node.log"
    argv = [*HAMANASU, "node", "serve", "--config", str(config)]
    proc = start(argv, os.environ, log)
    wait_until(lambda: _check(config, ready=True).ok, "node", proc, log)
    out = _health(config, "--ready", runner=hamanasu_in_process)
    assert out.stdout.startswith(f"node n-health: ok: pid {proc.pid}, heartbeat ")
    stop(proc, signal.SIGKILL)  # a crash: the heartbeat names a dead process
    out = _health(config, runner=hamanasu_in_process)
    assert out.returncode == 1
    assert out.stderr.strip() == f"unhealthy: node n-health: the node service (pid {proc.pid}) is not running"
    proc = start(argv, os.environ, log)
    wait_until(lambda: _check(config, ready=True).ok, "node", proc, log)
    stop(proc)  # SIGTERM: a clean stop says so
    out = _health(config, runner=hamanasu_in_process)
    assert out.returncode == 1 and "the node service stopped" in out.stderr


def test_node_service_cut_off_from_its_coordinator_is_alive_but_not_ready(
    coordinator, tmp_path: Path, hamanasu_in_process
) -> None:
    url, op = coordinator
    config = _node(tmp_path, url, op, "n-cut")
    text = config.read_text().replace(url, f"http://127.0.0.1:{free_port()}")
    config.write_text(text)
    log = tmp_path / "node.log"
    proc = start([*HAMANASU, "node", "serve", "--config", str(config)], os.environ, log)
    try:
        wait_until(lambda: "last poll failed" in _check(config).line, "node", proc, log)
        assert _health(config).returncode == 0  # alive: it keeps trying
        out = _health(config, "--ready", runner=hamanasu_in_process)
        assert out.returncode == 1 and "last poll failed: " in out.stderr
        assert out.stderr.count("\n") == 1
    finally:
        stop(proc)


def test_node_health_of_a_stale_heartbeat(coordinator, tmp_path: Path) -> None:
    url, op = coordinator
    config = _node(tmp_path, url, op, "n-stale")
    log = tmp_path / "node.log"
    proc = start([*HAMANASU, "node", "serve", "--config", str(config)], os.environ, log)
    try:
        wait_until(lambda: _check(config, ready=True).ok, "node", proc, log)
        os.kill(proc.pid, signal.SIGSTOP)  # hung: alive but writing nothing
        out = _health(config, "--max-age", "0.5")
        assert out.returncode == 1 and "no heartbeat for" in out.stderr
        assert "(more than 0.5 s)" in out.stderr
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        stop(proc)
