"""Real coordinator and node-service processes for the deployment tests.

Each service is started as its own ``hamanasu`` process (optionally as another user, the
way a systemd unit or a container runs it) and found healthy through its health checks.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

HAMANASU = [sys.executable, "-m", "hamanasu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``hamanasu ARGS`` and return the finished process (text output)."""
    return subprocess.run(  # noqa: S603 - our own command
        [*HAMANASU, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env if env is not None else os.environ),
    )


def other_user() -> str | None:
    """A non-root user to run services as, when this test runs as root (else None)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    for name in ("nobody", "daemon"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def _setpriv(user: str, search_cap: bool) -> list[str]:
    entry = pwd.getpwnam(user)
    argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    if search_cap:
        argv += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return [*argv, "--no-new-privs"]


@functools.cache
def needs_search_cap(user: str) -> bool:
    """Whether ``user`` needs CAP_DAC_READ_SEARCH to run this Python and its children.

    On machines whose interpreter lives in root's home (pyenv under /root, mode 0700) an
    unprivileged user cannot exec it; the services then run as that user with this one
    capability, which lets them read and search files but never write another user's.
    """
    probe = [*_setpriv(user, False), "env", sys.executable, "-c", "pass"]
    return subprocess.run(probe, capture_output=True, timeout=60).returncode != 0  # noqa: S603


def as_user(argv: Sequence[str], user: str | None) -> list[str]:
    """``argv`` run as ``user`` (setpriv: no new privileges, no supplementary groups)."""
    if user is None:
        return list(argv)
    return [*_setpriv(user, needs_search_cap(user)), *argv]


def start(argv: Sequence[str], env: Mapping[str, str], log: Path, user: str | None = None) -> subprocess.Popen[bytes]:
    """Start a service process (own session, output to ``log``)."""
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own command
            as_user(argv, user),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a service's whole process group and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_until(check, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 600) -> None:
    """Poll ``check()`` until it is true; fail with the service's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def http_ok(url: str, verify: str | bool = True) -> bool:
    return httpx.get(url, timeout=2, verify=verify).status_code == 200


def stop_flower_left_by(folder: Path) -> None:
    """Stop a SuperLink or SuperNode a service under ``folder`` left running (their own
    process groups outlive a service killed before it stopped them)."""
    from federation.pid_files import stop_orphans

    for pid_file in folder.rglob("*.pid"):
        stop_orphans(pid_file, "superlink", "supernode", "executor")
