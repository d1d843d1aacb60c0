"""Stopping ``hamanasu up`` stops every process it started.

With the deployment engine ``up`` starts a SuperLink and, for each holder, a SuperNode
and its executor; SIGTERM or SIGINT (Ctrl-C) to ``up`` must stop them all, and when
``up`` is killed with SIGKILL they must notice and stop by themselves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hamanasu.up_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def _processes_under(folder: Path) -> list[str]:
    """Return the processes whose command line, folder or environment names ``folder``."""
    mark = str(folder.resolve()).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().split(") ", 1)[1].startswith("Z"):
                continue  # exited, waiting to be reaped
            cmdline = (proc / "cmdline").read_bytes()
            cwd = os.readlink(proc / "cwd").encode()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if mark in cmdline or mark in cwd or mark in environ:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
            found.append(f"{proc.name}: {shown}")
    return found


def _start_up(tmp_path: Path, engine: str) -> tuple[subprocess.Popen, Path, Path]:
    out = tmp_path / "c"
    log_path = tmp_path / "up.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HAMANASU_UP_POSTGRES_URL", None)
    args = ["--out", str(out), "--port", str(free_port()), "--engine", engine]
    args += ["--superlink-port", str(free_port()), "--databases", "none"]
    with open(log_path, "w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "hamanasu", "up", *args],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # so the test can clean up whatever is left
        )
    deadline = time.monotonic() + 900
    while "coordinator on" not in log_path.read_text():
        assert up.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "hamanasu up did not start"
        time.sleep(0.2)
    return up, out, log_path


def _wait_until_none_left(out: Path, seconds: float) -> list[str]:
    end = time.monotonic() + seconds
    left = _processes_under(out)
    while left and time.monotonic() < end:
        time.sleep(0.2)
        left = _processes_under(out)
    return left


def _kill_leftovers(up: subprocess.Popen, out: Path) -> None:
    for line in _processes_under(out):
        pid = int(line.split(":", 1)[0])
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    if up.poll() is None:
        up.kill()
        up.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_up_deployment_leaves_no_process_behind(tmp_path, sig):
    up, out, log_path = _start_up(tmp_path, "deployment")
    try:
        running = [p for p in _processes_under(out) if not p.startswith(f"{up.pid}:")]
        # the SuperLink and, per holder, a SuperNode and its executor
        assert sum("federation.launchers superlink" in p for p in running) == 1, running
        assert sum("federation.launchers supernode" in p for p in running) == 6, running
        assert sum("federation.executor" in p for p in running) == 6, running
        up.send_signal(sig)  # to `up` alone, not its group
        up.wait(timeout=300)
        # bounded wait: SIGKILLed `up` leaves the children to notice by themselves
        left = _wait_until_none_left(out, 120)
        assert left == [], f"{left}\n{log_path.read_text()[-3000:]}"
        if sig != signal.SIGKILL:
            assert "stopped" in log_path.read_text().splitlines()
    finally:
        _kill_leftovers(up, out)


@pytest.mark.slow
def test_up_embedded_stops_on_sigterm(tmp_path):
    up, out, log_path = _start_up(tmp_path, "embedded")
    try:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=300) == 0, log_path.read_text()[-3000:]
        assert _wait_until_none_left(out, 60) == []
    finally:
        _kill_leftovers(up, out)
