"""The node service's heartbeat, and the check ``hamanasu node health`` makes of it.

The node service dials out only and listens nowhere (its admin API is optional and on
loopback), so its health is a small status file in its state folder
(:attr:`nodes.settings.NodeServiceConfig.status_file`), rewritten atomically around every
poll: the service's pid, when it last wrote, when its last poll finished and why it failed,
and its SuperNode's state. A container's HEALTHCHECK or a systemd watchdog script runs
``hamanasu node health --config node.toml``:

* *alive*: the file was written less than ``max_age`` seconds ago by a process that still
  runs (a hung or dead service goes stale);
* *ready* (``--ready``): alive, the last poll of the coordinator succeeded, and the
  SuperNode, if the node runs one, is running.

The file holds no secret (error texts are bounded and never carry a token).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Health", "check_status", "default_max_age", "write_status"]

#: Slack added to the poll interval before a heartbeat counts as stale: a poll makes a few
#: calls to the coordinator, each allowed 30 s.
POLL_SLACK_S = 150.0


def default_max_age(poll_interval: float) -> float:
    """Return how old a heartbeat may be, in seconds, for a service polling at this interval."""
    return poll_interval + POLL_SLACK_S


def write_status(
    path: Path,
    *,
    state: str,
    last_poll_at: datetime | None,
    last_poll_error: str | None,
    supernode: dict[str, Any] | None,
    now: datetime | None = None,
) -> None:
    """Write the heartbeat atomically (a temporary file, then a rename).

    Args:
        path: the status file.
        state: ``polling``, ``idle`` or ``stopped``.
        last_poll_at: when the last poll finished, if any.
        last_poll_error: why it failed (None: it succeeded).
        supernode: the SuperNode's status (``SupernodeSupervisor.status``), if it runs one.
        now: the time to record (default: now, UTC).

    Raises:
        OSError: the file cannot be written.
    """
    data = {
        "pid": os.getpid(),
        "state": state,
        "written_at": (now or datetime.now(UTC)).isoformat(),
        "last_poll_at": last_poll_at.isoformat() if last_poll_at else None,
        "last_poll_error": last_poll_error,
        "supernode": supernode,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Health:
    """The outcome of a health check.

    Attributes:
        ok: whether the service passed.
        line: one line for people (what failed, or what holds).
    """

    ok: bool
    line: str


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def check_status(
    path: Path,
    *,
    max_age: float,
    ready: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Health:
    """Check the heartbeat in ``path``.

    Returns:
        :class:`Health`: ok when the service is alive (and, with ``ready``, its last poll
        succeeded and its SuperNode runs), else the first reason it is not.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        written = datetime.fromisoformat(data["written_at"])
        pid = int(data["pid"])
    except FileNotFoundError:
        return Health(False, f"no heartbeat in {path}: the node service has not run here")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Health(False, f"unreadable heartbeat {path}: {type(exc).__name__}")
    age = (now() - written).total_seconds()
    if data.get("state") == "stopped":
        return Health(False, f"the node service stopped {age:.0f} s ago")
    if not _pid_runs(pid):
        return Health(False, f"the node service (pid {pid}) is not running")
    if age > max_age:
        return Health(False, f"no heartbeat for {age:.0f} s (more than {max_age:g} s)")
    supernode = data.get("supernode")
    if ready:
        if data.get("last_poll_at") is None:
            return Health(False, "alive, but it has not polled the coordinator yet")
        if data.get("last_poll_error"):
            return Health(False, f"last poll failed: {data['last_poll_error']}")
        if supernode is not None and not supernode.get("running"):
            code = supernode.get("exit_code")
            return Health(False, f"its SuperNode is not running (exit code {code})")
    polled = data.get("last_poll_at") or "not yet"
    error = f", last poll failed: {data['last_poll_error']}" if data.get("last_poll_error") else ""
    sn = "" if supernode is None else f", SuperNode {'up' if supernode.get('running') else 'down'}"
    return Health(True, f"ok: pid {pid}, heartbeat {age:.0f} s ago, last poll {polled}{error}{sn}")
