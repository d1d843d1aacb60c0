"""Process supervision for Flower's processes: start in a session, wait for a port, stop.

Processes start in their own session, so stopping (SIGTERM, then SIGKILL) or killing a
process takes its children with it (a SuperNode's ClientApp processes, a SuperLink's
ServerApp processes). What survives its parent (a coordinator killed with SIGKILL) is
found again through :mod:`federation.pid_files`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ManagedProcess", "free_port", "spawn", "wait_for_port"]


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
            env=env,
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

    def _signal_all(self, sig: int) -> None:
        for proc in [self.popen, *self.extra]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def kill(self) -> None:
        """Kill the process and its children at once (SIGKILL): a node that dies."""
        self._signal_all(signal.SIGKILL)
        for proc in [self.popen, *self.extra]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly (SIGTERM), then SIGKILL whatever is left after ``timeout``."""
        self._signal_all(signal.SIGTERM)
        end = time.monotonic() + timeout
        for proc in [self.popen, *self.extra]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, end - time.monotonic()))
        self._signal_all(signal.SIGKILL)
        for proc in [self.popen, *self.extra]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)

    def log_tail(self, chars: int = 2000) -> str:
        """Return the end of the process's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
