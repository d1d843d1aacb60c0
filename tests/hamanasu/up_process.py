"""A real ``hamanasu up`` on loopback for tests: started, waited for, and stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_up(
    cwd: Path, out: Path, args: list[str], env: dict[str, str]
) -> Iterator[tuple[int, Path]]:
    """Run ``hamanasu up --out OUT --port P ARGS`` until the block ends.

    Yields:
        The coordinator's port and the file ``up``'s output goes to, once it printed
        ``coordinator on``.
    """
    port = free_port()
    log_path = cwd / "up.log"
    with open(log_path, "w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "hamanasu", "up", "--out", str(out), "--port", str(port), *args],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 600
            while "coordinator on" not in log_path.read_text():
                assert up.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "hamanasu up did not start"
                time.sleep(0.2)
            yield port, log_path
        finally:
            os.killpg(up.pid, signal.SIGTERM)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)


def run_hamanasu(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m hamanasu ARGS`` in ``cwd`` (the worktree's packages first); return it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)} if env is None else env
    return subprocess.run(
        [sys.executable, "-m", "hamanasu", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def simulate(job: Path, nodes: dict[str, Path], out: Path) -> subprocess.CompletedProcess:
    """Run ``hamanasu simulate JOB --quiet --out OUT --node NAME=PATH ...`` and return it."""
    args = [sys.executable, "-m", "hamanasu", "simulate", str(job), "--quiet", "--out", str(out)]
    for name, path in nodes.items():
        args += ["--node", f"{name}={path}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)
