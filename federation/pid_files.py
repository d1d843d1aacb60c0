"""Pid files for the Flower processes a service starts, so a restart can stop orphans.

A SuperLink or SuperNode runs in its own process group (so that stopping it takes its
ServerApp / ClientApp children along). When the service that started it is killed with
SIGKILL, the group notices and stops itself (:func:`federation.processes.watch_parent`,
within a few seconds); should it still run (stuck, or started otherwise), the next start
of the service reads the pid file and stops those groups before it starts new ones (a
second SuperNode with the same key, or a second SuperLink on the same port, must not
appear).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["stop_orphans", "write_pid_file"]

log = logging.getLogger("hamanasu.federation")


def write_pid_file(path: Path, pgids: Iterable[int]) -> None:
    """Write the process-group ids, one per line (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(f"{p}\n" for p in pgids))


def _alive_with(pgid: int, markers: tuple[bytes, ...]) -> bool:
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(m in cmdline for m in markers)


def _running(pid: int) -> bool:
    """Return True while ``pid`` runs: it exists and is not a zombie.

    A stopped group leader that is the caller's own child (a SuperNode's executor, started
    by the service that now restarts the SuperNode) stays in ``/proc`` as a zombie until
    it is reaped, which waiting for ``/proc/<pid>`` to go away would take for running.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def stop_orphans(path: Path, *markers: str, timeout: float = 10.0) -> list[int]:
    """Stop the process groups listed in ``path`` whose leader's command line has a marker.

    A pid that was reused by an unrelated process (none of ``markers``) is left alone. The
    file is removed afterwards.

    Returns:
        The process-group ids that were stopped.
    """
    try:
        listed = [int(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return []
    marks = tuple(m.encode() for m in markers)
    groups = [p for p in listed if _alive_with(p, marks)]
    for pgid in groups:
        log.warning("stopping process group %d left by a killed service", pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(_running(p) for p in groups):
        time.sleep(0.1)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return groups
