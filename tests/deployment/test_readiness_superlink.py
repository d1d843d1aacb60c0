"""A coordinator on the deployment engine is ready only while its SuperLink runs and answers:
/readyz says which check fails, and ``hamanasu coordinator health`` exits 1 naming it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))

from deploy_services import HAMANASU, free_port, http_ok, run, start, stop, wait_until  # noqa: E402

pytestmark = pytest.mark.slow


def test_readyz_follows_the_superlink(tmp_path: Path) -> None:
    from federation.pki import init_pki

    init_pki(tmp_path / "pki")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        *HAMANASU, "coordinator", "serve", "--data-dir", str(tmp_path / "c"), "--port", str(port),
        "--engine", "deployment", "--pki-dir", str(tmp_path / "pki"),
        "--superlink-port", str(free_port()),
    ]
    log = tmp_path / "coordinator.log"
    proc = start(argv, os.environ, log)
    try:
        wait_until(lambda: http_ok(f"{url}/readyz"), "coordinator", proc, log)
        assert httpx.get(f"{url}/readyz").json()["checks"] == {"database": "ok", "superlink": "ok"}
        pgid = int((tmp_path / "c" / "flower" / "superlink.pid").read_text().split()[0])
        os.killpg(pgid, signal.SIGKILL)
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 503, "readyz", proc, log)
        body = httpx.get(f"{url}/readyz").json()
        assert body["status"] == "unavailable" and body["checks"]["database"] == "ok"
        assert body["checks"]["superlink"] == "exited (code -9)"
        assert httpx.get(f"{url}/healthz").status_code == 200  # still alive: no restart loop
        out = run("coordinator", "health", "--url", url)
        assert out.returncode == 1
        assert out.stderr.strip() == "unhealthy: superlink: exited (code -9)"
    finally:
        stop(proc)
