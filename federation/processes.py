"""Process supervision for Flower's processes: start in a session, wait for a port, stop.

Processes start in their own session, so stopping (SIGTERM, then SIGKILL) or killing a
process takes its children with it (a SuperNode's ClientApp processes, a SuperLink's
ServerApp processes). What survives its parent (a coordinator killed with SIGKILL) is
found again through :mod:`federation.pid_files`. A process started through
``python -m federation.launchers`` also watches the process that started it
(:func:`watch_parent`): when that one is gone (killed with SIGKILL), it stops its own
group, so nothing lingers until the next start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PARENT_PID_ENV",
    "ManagedProcess",
    "free_port",
    "spawn",
    "stop_all",
    "wait_for_port",
    "watch_parent",
]

#: Set by :func:`spawn` to its own pid; read (and removed) by :func:`watch_parent`.
PARENT_PID_ENV = "HAMANASU_PARENT_PID"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``host:port`` accepts connections.

    Raises:
        TimeoutError: not within ``timeout`` seconds.
        RuntimeError: ``proc`` exited first.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with code {proc.returncode} before {host}:{port} opened"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} did not open within {timeout:g} s")


def spawn(
    cmd: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, its output appended to ``log_path``.

    Returns:
        The running process.

    Raises:
        OSError: the command cannot be started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own fixed command line
            list(cmd),
            env={**env, PARENT_PID_ENV: str(os.getpid())},
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@dataclass
class ManagedProcess:
    """A Flower process we started (in its own session), its log and its address."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    address: str
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: a SuperLink's loopback address for its Control and Runtime APIs
    #: (:mod:`federation.superlink_listeners`); its ``address`` serves the Fleet API only.
    control_address: str = ""

    @property
    def pid(self) -> int:
        """The process id."""
        return int(self.popen.pid)

    def alive(self) -> bool:
        """Return True while the process runs."""
        return self.popen.poll() is None

    @property
    def popens(self) -> list[subprocess.Popen[bytes]]:
        """The process and its companions (a SuperNode's executor)."""
        return [self.popen, *self.extra]

    def kill(self) -> None:
        """Kill the process and its children at once (SIGKILL): a node that dies."""
        _signal_groups(self.popens, signal.SIGKILL)
        for proc in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly (SIGTERM), then SIGKILL whatever is left after ``timeout``."""
        stop_all([self], timeout)

    def log_tail(self, chars: int = 2000) -> str:
        """Return the end of the process's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _signal_groups(procs: Iterable[subprocess.Popen[bytes]], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def stop_all(processes: Iterable[ManagedProcess], timeout: float = 5.0) -> None:
    """Stop several processes at once: SIGTERM to every group, SIGKILL after ``timeout``.

    All are signalled before any is waited for, so stopping N processes takes one
    ``timeout`` at most, not N.
    """
    procs = [p for m in processes for p in m.popens]
    _signal_groups(procs, signal.SIGTERM)
    end = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, end - time.monotonic()))
    _signal_groups(procs, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)


def watch_parent(interval: float = 0.5, grace: float = 5.0) -> None:
    """Stop this process's group once the process that started it is gone.

    Reads the starter's pid from :data:`PARENT_PID_ENV` (set by :func:`spawn`; removed
    here, so this process's own children do not watch it). When that process has
    exited, SIGTERM goes to this group (this process and what it started, e.g. a
    SuperLink's ServerApp processes), then SIGKILL after ``grace`` seconds. Without the
    variable nothing is watched. Returns at once (a daemon thread watches).
    """
    value = os.environ.pop(PARENT_PID_ENV, "")
    if not value.isdigit():
        return
    parent = int(value)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        group = os.getpgid(0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
        time.sleep(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
