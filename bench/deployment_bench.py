"""Deployment engine vs embedded run of the same job: submit → first round, and per round.

Three nodes (Iwamizawa 2019 maternity data), DP-SGD + SecAgg+ logistic regression.
Deployment: a SuperLink and three SuperNodes on loopback with TLS and node auth, the job
submitted through the Control API by ``DeploymentRunner``. Process start-up (SuperLink,
SuperNodes) is reported apart: it happens once, not per job. ``--cold`` also measures
Flower's defaults (3 s idle polls, a fresh ``flwr-clientapp`` process per message).

    .venv/bin/python bench/deployment_bench.py [--rounds 3] [--cold]

Writes bench/results/deployment.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "deployment"))
sys.path.insert(0, str(ROOT))

import fleet  # noqa: E402

NAMES = ["n1", "n2", "n3"]


def _stats(starts: float, marks: list[float]) -> dict[str, float]:
    first = marks[0] - starts
    steps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {
        "submit_to_first_round_s": round(first, 2),
        "per_round_s": round(statistics.mean(steps), 2) if steps else None,
        "total_s": round(marks[-1] - starts, 2),
        "rounds_seen": len(marks),
    }


def embedded(folder: Path, rounds: int) -> dict[str, float]:
    from hamanasu.training_run import run_training_job
    from nodes.enforcement import EnforcementPoint
    from nodes.sources import NodeSource

    nodes = fleet.make_nodes(folder, NAMES)
    job = fleet.tiny_job(NAMES, rounds=rounds)
    fleet.accept(nodes, job, "bench-emb")
    marks: list[float] = []
    started = time.monotonic()
    run = run_training_job(
        job,
        [NodeSource(n, d, s) for n, (d, s) in nodes.items()],
        job_id="bench-emb",
        max_records=fleet.max_records(nodes, job),
        gates={n: EnforcementPoint(n, s) for n, (_, s) in nodes.items()},
        on_round=lambda r: marks.append(time.monotonic()),
    )
    assert run.outcome.status == "succeeded", run.outcome.reason
    return _stats(started, marks)


def deployment(folder: Path, rounds: int, *, warm: bool, fast_poll: bool) -> dict[str, float]:
    from coordinator.deployment_runner import DeploymentRunner
    from federation.deployment import LocalDeployment

    nodes = fleet.make_nodes(folder, NAMES)
    job = fleet.tiny_job(NAMES, rounds=rounds)
    job_id = f"bench-dep-{int(warm)}{int(fast_poll)}"
    fleet.accept(nodes, job, job_id)
    t0 = time.monotonic()
    dep = LocalDeployment(
        folder / f"dep-{int(warm)}{int(fast_poll)}", warm=warm, fast_poll=fast_poll
    ).start()
    try:
        for name, (data, state) in nodes.items():
            dep.register(name)
            dep.start_node(name, {"data-dir": str(data), "state-dir": str(state)})
        dep.wait_online(NAMES)
        startup = time.monotonic() - t0
        runner = DeploymentRunner(
            dep.superlink.address,
            dep.pki.ca_cert,
            folder / "store",
            max_records=fleet.max_records(nodes, job),
        )
        marks: list[float] = []
        started = time.monotonic()
        result = runner.run(
            job, job_id, NAMES, lambda p: marks.append(time.monotonic()), threading.Event()
        )
    finally:
        dep.stop()
    assert result.status == "succeeded", result.reason
    return {**_stats(started, marks), "processes_startup_s": round(startup, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also measure Flower's defaults")
    args = parser.parse_args()
    out: dict[str, object] = {
        "nodes": len(NAMES),
        "rounds": args.rounds,
        "job": "DP-SGD + SecAgg+ logreg, Iwamizawa 2019 maternity data",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        out["embedded"] = emb = embedded(folder, args.rounds)
        print("embedded", emb, flush=True)
        out["deployment"] = dep = deployment(folder, args.rounds, warm=True, fast_poll=True)
        print("deployment (warm executor, fast poll)", dep, flush=True)
        if args.cold:
            out["deployment_flower_defaults"] = cold = deployment(
                folder, args.rounds, warm=False, fast_poll=False
            )
            print("deployment (Flower defaults)", cold, flush=True)
    out["ratio_first_round"] = round(
        dep["submit_to_first_round_s"] / emb["submit_to_first_round_s"], 2
    )
    if dep["per_round_s"] and emb["per_round_s"]:
        out["ratio_per_round"] = round(dep["per_round_s"] / emb["per_round_s"], 2)
    print({k: v for k, v in out.items() if k.startswith("ratio")})
    path = ROOT / "bench" / "results" / "deployment.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
