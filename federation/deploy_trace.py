"""Where a deployment run's time goes: timestamped events, off unless asked for.

When ``HAMANASU_DEPLOY_TRACE`` names a file, :func:`trace` appends one JSON line per
event to it (wall clock ``t``, process id, event name and fields). The SuperLink,
SuperNodes, the warm executor and its children and the ServerApp inherit the variable
from whoever starts them, so one file collects every process's events; the deployment
bench (``bench/deployment_bench.py``) sums them into a breakdown. Lines are appended
with one ``write`` on a file opened in append mode, so processes do not interleave.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = ["TRACE_ENV", "trace", "tracing"]

#: The environment variable naming the trace file.
TRACE_ENV = "HAMANASU_DEPLOY_TRACE"


def tracing() -> bool:
    """Return True when events are being traced."""
    return bool(os.environ.get(TRACE_ENV))


def trace(event: str, **fields: Any) -> None:
    """Append ``event`` with ``fields`` to the trace file, if tracing is on (never raises)."""
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    line = json.dumps({"t": time.time(), "pid": os.getpid(), "event": event, **fields}, default=str)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:
        pass
