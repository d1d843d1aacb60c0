"""One MPC party's process: ``python -m federation.linkage.mpc_party CONFIG.json``.

The configuration (written 0600 by whoever starts the party) names this party's index,
every party's ``host:port``, the public job description
(:mod:`federation.linkage.jobs`), this party's private inputs (an ``.npz`` file, none
for the helper party) and where to write the result. The party prints one JSON line per
completed round on standard output, then one with the bytes it sent and its peak
memory, and exits 0 after writing the result; on any error it
writes one line naming the error on standard error and exits 3.

A *gated* party (``"gate": true``, a holder whose budget is charged per release) prints
``{"party": i, "release": k}`` before round ``k``'s opening and waits for a line ``go``
on standard input: whoever started it charges the holder's budget for that release
first, and anything else stops the party before the opening.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "scaled_terms"]

#: Slack allowed beyond a declared range (floating point of the scaling itself).
RANGE_SLACK = 1e-9


def scaled_terms(x: np.ndarray, centers: list[float], scales: list[float],
                 names: list[str]) -> np.ndarray:
    """Return ``(x - center) / scale`` per column.

    Raises:
        ValueError: a value falls outside its term's declared range (|z| > 1), or NaN.

    """
    z = (np.asarray(x, dtype=np.float64) - np.asarray(centers)) / np.asarray(scales)
    bad = ~np.isfinite(z).all(axis=0) | (np.abs(z) > 1.0 + RANGE_SLACK).any(axis=0)
    if bad.any():
        which = [n for n, b in zip(names, bad, strict=True) if b]
        raise ValueError(f"values outside the declared range or missing: {which}")
    return z


def _run(config: dict[str, Any]) -> dict[str, Any]:
    from federation.linkage.jobs import LinkedGlmJob, job_from_json
    from federation.linkage.mpc_runtime import start_runtime

    pid = int(config["pid"])
    job = job_from_json(config["job"])
    data: dict[str, np.ndarray] = {}
    if config.get("data"):
        with np.load(config["data"]) as npz:
            data = {k: npz[k] for k in npz.files}
    mpc = start_runtime(pid, config["addresses"])

    def progress(msg: str) -> None:
        print(json.dumps({"party": pid, "progress": msg}), flush=True)

    def before_open(k: int) -> None:
        if not config.get("gate"):
            return
        print(json.dumps({"party": pid, "release": k}), flush=True)
        answer = sys.stdin.readline().strip()
        if answer != "go":
            raise RuntimeError(f"release {k} was not allowed here")

    mpc.run(mpc.start())
    try:
        if isinstance(job, LinkedGlmJob):
            from federation.linkage.mpc_glm import LocalColumns, linked_glm_fit

            mine = job.party_terms(pid)
            z = None
            if mine:
                terms = [job.terms[j] for j in mine]
                z = scaled_terms(data["x"], [t.center for t in terms],
                                 [t.scale for t in terms], [t.name for t in terms])
            y = data.get("y") if pid == job.label_party else None
            out = linked_glm_fit(mpc, job, LocalColumns(z, y), progress, before_open)
        else:
            from federation.linkage.mpc_stats import StatsColumns, linked_stats_vector

            vec = linked_stats_vector(
                mpc, job, StatsColumns(data.get("codes"), data.get("values")), before_open
            )
            out = {"vector": vec.tolist()}
    finally:
        sent = sum(p.protocol.nbytes_sent for p in mpc.parties
                   if p.pid != mpc.pid and p.protocol is not None)
        mpc.run(mpc.shutdown())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"party": pid, "bytes_sent": int(sent), "max_rss_mb": rss_mb}), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the party; return the process exit code (0 done, 3 failed)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m federation.linkage.mpc_party CONFIG.json", file=sys.stderr)
        return 2
    try:
        config = json.loads(Path(args[0]).read_text())
        result = _run(config)
        out = Path(config["result"])
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh)
    except Exception as exc:  # the launcher reports this line as the party's reason
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
