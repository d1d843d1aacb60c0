"""A consortium of separate hosts over a WAN: round and GLM fit times by round-trip time.

Five holders (Iwamizawa 2019 maternity data), each on its own network namespace with its
own node service and SuperNode, and the coordinator (API + SuperLink) on another; the
links are shaped (``tc netem`` when the kernel has it, else the tests' userspace WAN) to
0, 20 and 40 ms round trip to the coordinator, and 40 ms with 1 % loss each way. At each,
through the whole platform (submit over HTTPS, policy approval, SuperLink): a DP-SGD +
SecAgg+ training job (per-round time from the job's report) and a GLM fit (exact
logistic regression over SecAgg+ sums; the job's running time), and the bytes each host
sent on the WAN per round. The same jobs then run on the loopback consortium (every
process on 127.0.0.1) and on the embedded engine (one process), in the same run.

Goal: at 40 ms, a 5-node DP + SecAgg+ round ≤ 3 s and a GLM fit ≤ 30 s.

    .venv/bin/python -m bench.multihost_bench [--rounds 3] [--rtt 0 20 40]

Writes bench/results/multihost.json (with the load average before each part).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for sub in ("tests/multihost", "tests/deployment", "tests/e2e"):
    sys.path.insert(0, str(ROOT / sub))
sys.path.insert(0, str(ROOT))

import fleet  # noqa: E402
import hosts  # noqa: E402
import netns  # noqa: E402
from books import until  # noqa: E402
from consortium import Consortium  # noqa: E402

NAMES = ["h1", "h2", "h3", "h4", "h5"]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def glm_spec() -> Any:
    """The example GLM on one year of data (a smaller model keeps enough events)."""
    from federation.spec import parse_job_spec

    data = tomllib.loads((fleet.EXAMPLES / "lbw_glm.toml").read_text())
    data.update(nodes=NAMES, features=["bmi_pre", "maternal_age", "gwg_kg"])
    data["glm"]["min_events_per_parameter"] = 5
    return parse_job_spec(data)


def _run(c: Consortium, spec: Any, name: str) -> tuple[Any, Any]:
    body = spec.model_dump(mode="json")
    body["name"] = name
    researcher = c.client("researcher")
    job_id = researcher.submit(body).id
    done = researcher.wait(job_id, poll=0.2, timeout=1800)
    if done.state != "succeeded":
        raise RuntimeError(f"{name}: {done.state}: {done.reason}\n{c.log_tail('coordinator')}")
    return done, researcher.result(job_id)


def jobs(c: Consortium, label: str, rounds: int, sent: Any = None) -> dict[str, Any]:
    """Run the training job and the GLM on ``c``; return their figures (and bytes sent)."""
    out: dict[str, Any] = {"load_average": _load()}
    before = sent() if sent else None
    done, result = _run(
        c, fleet.tiny_job(NAMES, rounds=rounds, min_nodes=5, timeout=120), f"train-{label}"
    )
    records = result.report["rounds"]
    train = [r["seconds"] for r in records[:rounds]]
    out["round_s"] = round(statistics.mean(train), 2)
    out["rounds_s"] = [round(s, 2) for s in train]
    out["evaluation_round_s"] = round(records[-1]["seconds"], 2) if len(records) > rounds else None
    out["training_job_s"] = round((done.finished_at - done.started_at).total_seconds(), 2)
    if before is not None:
        after = sent()
        out["bytes_sent_per_round"] = {h: int((after[h] - before[h]) / len(records)) for h in after}
    done, result = _run(c, glm_spec(), f"glm-{label}")
    out["glm_fit_s"] = round((done.finished_at - done.started_at).total_seconds(), 2)
    out["glm_newton_rounds"] = result.report.get("rounds")
    print(label, json.dumps(out), flush=True)
    return out


def embedded(folder: Path, rounds: int) -> dict[str, Any]:
    """The same jobs on the embedded engine (one process), on fresh copies of the nodes."""
    from hamanasu.local_runner import EmbeddedRunner, LocalNode

    nodes = fleet.make_nodes(folder, NAMES)
    runner = EmbeddedRunner({n: LocalNode(n, d, s) for n, (d, s) in nodes.items()})
    out: dict[str, Any] = {"load_average": _load()}
    for key, job in (
        ("train", fleet.tiny_job(NAMES, rounds=rounds, min_nodes=5)),
        ("glm", glm_spec()),
    ):
        fleet.accept(nodes, job, f"emb-{key}")
        t0 = time.monotonic()
        result = runner.run(job, f"emb-{key}", NAMES, lambda _p: None, threading.Event())
        took = time.monotonic() - t0
        assert result.status == "succeeded", result.reason
        if key == "train":
            secs = [r["seconds"] for r in result.report["rounds"][:rounds]]
            out["round_s"] = round(statistics.mean(secs), 2)
            out["training_job_s"] = round(took, 2)
        else:
            out["glm_fit_s"] = round(took, 2)
    print("embedded", json.dumps(out), flush=True)
    return out


def _online(c: Consortium) -> None:
    until(
        lambda: all(n.supernode_online for n in c.client("operator").nodes()),
        300,
        "every SuperNode to connect",
    )


RESULTS = ROOT / "bench" / "results" / "multihost.json"


def _save(out: dict[str, Any]) -> None:
    """Write what is measured so far (a long run cut short still leaves its figures)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt", type=float, nargs="+", default=[0.0, 20.0, 40.0])
    parser.add_argument("--loss", type=float, default=0.01, help="loss each way, last RTT")
    parser.add_argument("--skip-loopback", action="store_true")
    args = parser.parse_args()
    why = netns.unavailable()
    if why:
        raise SystemExit(f"multihost bench: cannot build network namespaces here: {why}")
    out: dict[str, Any] = {
        "nodes": len(NAMES),
        "rounds": args.rounds,
        "job": "DP-SGD + SecAgg+ logreg and a binomial GLM, Iwamizawa 2019 maternity data",
        "cpus": os.cpu_count(),
        "load_average_at_start": _load(),
        "goal": {"round_s_at_40ms": 3.0, "glm_fit_s_at_40ms": 30.0},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        c = hosts.start(folder / "hosts", NAMES, {n: netns.Link() for n in NAMES})
        assert c.net is not None
        out["wan"] = "userspace (TUN)" if c.net.userspace else "tc netem"
        wan: dict[str, Any] = {}
        try:
            _online(c)
            plan = [(rtt, 0.0) for rtt in args.rtt] + [(args.rtt[-1], args.loss)]
            for rtt, loss in plan:
                for name in NAMES:
                    c.net.set_link(name, netns.Link(delay_ms=rtt / 2, loss=loss))
                label = f"{rtt:g}ms" + (f"+{loss:.0%}loss" if loss else "")
                _online(c)
                wan[label] = jobs(c, label, args.rounds, c.net.tx_bytes)
                _save({**out, "namespaced": wan, "complete": False})
        finally:
            c.stop()
        out["namespaced"] = wan
        shutil.copytree(folder / "hosts" / "scenario", folder / "emb" / "scenario")
        out["embedded"] = embedded(folder / "emb", args.rounds)
        if not args.skip_loopback:
            shutil.copytree(folder / "hosts" / "scenario", folder / "loop" / "scenario")
            lo = Consortium(folder / "loop", list(NAMES))
            try:
                lo.setup()
                for name in NAMES:
                    lo.start_node(name)
                _online(lo)
                out["loopback"] = jobs(lo, "loopback", args.rounds)
            finally:
                lo.stop()
    top = wan.get(f"{args.rtt[-1]:g}ms", {})
    out["at_40ms_round_s_meets_goal"] = bool(top) and top["round_s"] <= 3.0
    out["at_40ms_glm_fit_s_meets_goal"] = bool(top) and top["glm_fit_s"] <= 30.0
    out["load_average_at_end"] = _load()
    out["complete"] = True
    _save(out)
    print(json.dumps({k: v for k, v in out.items() if k not in ("namespaced",)}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
