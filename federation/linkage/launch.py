"""Start the MPC parties of one linked computation on this machine and watch them.

The embedded case: every party (the holders and the helper) is a process of its own on
loopback, connected pairwise by MPyC over TCP on ports picked free for the run. Private
inputs go to each party in an ``.npz`` file (mode 0600, in a 0700 directory removed
afterwards). A party that exits with an error, or is killed, fails the whole computation
with that party's reason; the others are stopped. Nothing is released unless every party
finished and all report the same result.

With ``on_release`` every holder's party is gated: before each opening it asks, on its
standard output, for release ``k``; ``on_release(holder, k)`` charges that holder's
budget (or raises, which stops every party before the opening) and the party is told
``go`` on its standard input.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federation.linkage.errors import LinkageError, LinkageRefusal
from federation.linkage.jobs import LinkedGlmJob, LinkedStatsJob

__all__ = ["MIN_PARTIES", "PartyRun", "run_local_parties"]

#: Shamir sharing with honest majority protects nothing below three parties.
MIN_PARTIES = 3


@dataclass
class PartyRun:
    """A started party: its name, process and files (for progress or a test's hand)."""

    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


#: Ports this process handed to parties lately: a computation started at the same time
#: (the demo runs its questions at once) never gets one of them while they may be in use.
_HANDED_OUT: deque[int] = deque(maxlen=512)
_PORTS = threading.Lock()


def _free_ports(k: int) -> list[int]:
    socks = []
    try:
        with _PORTS:
            ports: list[int] = []
            while len(ports) < k:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                socks.append(s)
                port = s.getsockname()[1]
                if port not in _HANDED_OUT:
                    ports.append(port)
            _HANDED_OUT.extend(ports)
            return ports
    finally:
        for s in socks:
            s.close()


def _private_file(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def _reason(run: PartyRun) -> str:
    code = run.process.returncode
    lines = [ln for ln in run.stderr.read_text(errors="replace").splitlines() if ln.strip()]
    if code is not None and code < 0:
        return f"party {run.name} was lost mid-computation (signal {-code})"
    last = lines[-1][:300] if lines else f"exit code {code}"
    return f"party {run.name} failed: {last}"


def _traffic(run: PartyRun) -> dict[str, float]:
    """Return the party's last reported bytes sent and peak memory (MB)."""
    for line in reversed(run.stdout.read_text(errors="replace").splitlines()):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "bytes_sent" in rec:
            return {"bytes_sent": float(rec["bytes_sent"]), "max_rss_mb": float(rec["max_rss_mb"])}
    return {}


def _pump_releases(runs: Sequence[PartyRun], seen: dict[str, int],
                   on_release: Callable[[str, int], None]) -> None:
    """Answer every complete release request the gated parties printed since last time."""
    for r in runs:
        if r.process.stdin is None:
            continue
        text = r.stdout.read_bytes()
        end = text.rfind(b"\n") + 1
        for line in text[seen.get(r.name, 0) : end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "release" in rec:
                on_release(r.name, int(rec["release"]))
                try:
                    r.process.stdin.write(b"go\n")
                    r.process.stdin.flush()
                except OSError:  # the party is gone; the poll loop reports why
                    pass
        seen[r.name] = max(seen.get(r.name, 0), end)


def _stop(runs: Sequence[PartyRun]) -> None:
    for r in runs:
        if r.process.poll() is None:
            r.process.kill()
    for r in runs:
        r.process.wait()
        if r.process.stdin is not None:
            with contextlib.suppress(OSError):
                r.process.stdin.close()


def run_local_parties(
    job: LinkedGlmJob | LinkedStatsJob,
    inputs: Sequence[dict[str, np.ndarray] | None],
    names: Sequence[str],
    *,
    timeout: float = 3600.0,
    on_start: Callable[[list[PartyRun]], None] | None = None,
    on_release: Callable[[str, int], None] | None = None,
    route: Callable[[list[str]], list[str]] | None = None,
) -> dict[str, Any]:
    """Run every party of ``job`` locally and return the (agreed) result.

    ``inputs[i]`` are party ``i``'s private arrays (``x``/``y`` for a GLM, ``codes``/
    ``values`` for statistics; None for the helper party); ``names`` name the parties in
    reasons; ``on_release(name, k)`` gates every holder's ``k``-th opening (module doc).
    ``route(listening)`` returns, per party, the address the other parties reach it by
    (a relay in front of its listener; default: the listener itself).

    Returns:
        The parties' common result mapping, plus ``mpc_traffic``: per party, the bytes
        it sent and its peak memory in MB.

    Raises:
        LinkageRefusal: ``too_few_parties`` (fewer than :data:`MIN_PARTIES`).
        LinkageError: a party failed or was lost (its reason), the run timed out, or the
            parties disagree.

    """
    if len(names) < MIN_PARTIES or len(inputs) != len(names):
        raise LinkageRefusal(
            "too_few_parties",
            f"secure computation needs at least {MIN_PARTIES} parties (holders and a "
            f"helper), got {len(names)}",
        )
    work = Path(tempfile.mkdtemp(prefix="hamanasu-mpc-"))
    runs: list[PartyRun] = []
    try:
        addresses = [f"127.0.0.1:{p}" for p in _free_ports(len(names))]
        reach = route(list(addresses)) if route is not None else addresses
        env = dict(os.environ)
        env["MPYC_NOUVLOOP"] = "1"  # asyncio's loop reports a failed step; uvloop's hides it
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
        )
        for i, name in enumerate(names):
            data = None
            if inputs[i] is not None:
                data = work / f"party{i}.npz"
                with os.fdopen(_private_file(data), "wb") as fh:
                    np.savez(fh, **inputs[i])  # type: ignore[arg-type]
            cfg = work / f"party{i}.json"
            gated = on_release is not None and inputs[i] is not None
            with os.fdopen(_private_file(cfg), "w") as fh:
                seen_by_i = [a if k == i else reach[k] for k, a in enumerate(addresses)]
                json.dump({"pid": i, "addresses": seen_by_i, "job": job.to_json_dict(),
                           "data": None if data is None else str(data), "gate": gated,
                           "result": str(work / f"result{i}.json")}, fh)
            out, err = work / f"party{i}.out", work / f"party{i}.err"
            with open(out, "wb") as o, open(err, "wb") as e:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "federation.linkage.mpc_party", str(cfg)],
                    stdout=o, stderr=e, env=env,
                    stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
                )
            runs.append(PartyRun(name, proc, out, err))
        if on_start is not None:
            on_start(runs)
        deadline = time.monotonic() + timeout
        seen: dict[str, int] = {}
        while any(r.process.poll() is None for r in runs):
            if on_release is not None:
                _pump_releases(runs, seen, on_release)
            failed = [r for r in runs if r.process.poll() not in (None, 0)]
            if failed:
                reason = _reason(failed[0])
                _stop(runs)
                raise LinkageError(reason)
            if time.monotonic() > deadline:
                _stop(runs)
                raise LinkageError(f"the secure computation did not finish in {timeout:.0f} s")
            time.sleep(0.1)
        failed = [r for r in runs if r.process.returncode != 0]
        if failed:
            raise LinkageError(_reason(failed[0]))
        results = [json.loads((work / f"result{i}.json").read_text()) for i in range(len(runs))]
        if any(json.dumps(r, sort_keys=True) != json.dumps(results[0], sort_keys=True)
               for r in results[1:]):
            raise LinkageError("the parties disagree on the opened result")
        agreed: dict[str, Any] = dict(results[0])
        agreed["mpc_traffic"] = {r.name: _traffic(r) for r in runs}
        return agreed
    finally:
        _stop(runs)
        shutil.rmtree(work, ignore_errors=True)
