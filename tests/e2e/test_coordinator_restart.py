"""The coordinator killed (SIGKILL) mid-job and restarted, as a real uvicorn process: committed
jobs, approvals and results are intact; the interrupted job is failed with the reason and
never run again (no node charged twice); the node service then releases its reservation."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from coordinator.client import CoordinatorClient
from coordinator.store import RESTART_REASON
from hamanasu.demo import EXAMPLES
from nodes.cli import init_node
from nodes.enforcement import EnforcementPoint
from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig

HERE = Path(__file__).resolve().parent
NODES = ("n0", "n1")
SPEC = {
    "kind": "train",
    "name": "r",
    "features": ["maternal_age"],
    "label": "lbw",
    "rounds": 2,
    "min_nodes": 2,
    "purpose": {"requester": "hokkaido-university"},
    "privacy": {"epsilon": 1.0},
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hamanasu",
            "coordinator",
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--runner",
            "paced_runner:make",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.stderr.read().decode()[-2000:] if proc.stderr else "no start")


def _wait(c: CoordinatorClient, job_id: str, pred, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.status(job_id)
        if pred(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: {c.status(job_id)}")


@pytest.mark.slow
def test_restart_coordinator_killed_mid_job_loses_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hamanasu.cli import _mount, app

    _mount()
    states = {}
    for n in NODES:
        states[n] = tmp_path / "nodes" / n
        init_node(states[n], n, EXAMPLES / "policies" / "city-hospital.toml")
    log = tmp_path / "runs.log"
    env = {
        **os.environ,
        "PYTHONPATH": f"{HERE / 'coordinator_runner'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "PACED_NODES": json.dumps({n: str(p) for n, p in states.items()}),
        "PACED_LOG": str(log),
        "HAMANASU_ARGON2_TIME_COST": "1",
    }
    data = tmp_path / "coord"
    r = CliRunner().invoke(
        app, ["coordinator", "init", "--data-dir", str(data), "--token-out", str(tmp_path / "op")]
    )
    assert r.exit_code == 0, r.output
    port = _port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(data, port, env)
    try:
        op = CoordinatorClient(url, (tmp_path / "op").read_text().strip())
        service_tokens = {}
        for n in NODES:
            op.register_node(n)
            service_tokens[n] = op.issue_service_token(n).token  # each node service's own
        op.register_organisation("hokkaido-university", "academic", {"iwamizawa-mch-2017": False})
        aki = op.create_principal("aki", "researcher", None, "hokkaido-university")
        res = CoordinatorClient(url, aki.token.token)
        services = {
            n: NodeService(
                NodeServiceConfig(name=n, coordinator_url=url, state_dir=states[n]),
                CoordinatorLink.connect(url, service_tokens[n], n),
            )
            for n in NODES
        }
        done = res.submit(SPEC)
        for s in services.values():
            s.poll_once()
        _wait(res, done.id, lambda j: j.state == "succeeded")
        victim = res.submit({**SPEC, "rounds": 200})
        for s in services.values():
            assert s.poll_once() == {victim.id: "approve"}
        _wait(res, victim.id, lambda j: j.state == "running" and j.round >= 2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

        proc = _start(data, port, env)
        finished = res.status(done.id)
        assert finished.state == "succeeded" and finished.round == 2
        assert {a.status for a in finished.approvals} == {"approved"}
        assert res.result(done.id).epsilon_by_node == {"n0": 0.1, "n1": 0.1}
        interrupted = res.status(victim.id)
        assert interrupted.state == "failed" and interrupted.reason == RESTART_REASON
        assert interrupted.round >= 2 and {a.status for a in interrupted.approvals} == {"approved"}
        time.sleep(0.5)
        assert log.read_text().split() == [done.id, victim.id]  # never run twice
        for n, s in services.items():
            budget = EnforcementPoint(n, states[n]).budget()
            assert budget.reservation(victim.id).status == "active"
            assert s.poll_once() == {victim.id: "released"}
            assert budget.reservation(victim.id).status == "released"
            assert s.poll_once() == {}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
