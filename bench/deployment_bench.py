"""Deployment engine vs embedded run of the same job: submit → first round, and per round.

Three nodes (Iwamizawa 2019 maternity data), DP-SGD + SecAgg+ logistic regression.
Deployment: a SuperLink and three SuperNodes on loopback with TLS and node auth, the job
submitted through the Control API by ``DeploymentRunner``. Process start-up (SuperLink,
SuperNodes) is reported apart: it happens once, not per job. ``--cold`` also measures
Flower's defaults (3 s idle polls, a fresh ``flwr-clientapp`` process per message);
``--file-db`` a SuperLink whose state is a SQLite file instead of memory.

    .venv/bin/python bench/deployment_bench.py [--rounds 3] [--cold] [--file-db]

Writes bench/results/deployment.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "deployment"))
sys.path.insert(0, str(ROOT))

import fleet  # noqa: E402
from local_deployment import LocalDeployment  # noqa: E402

from federation.deploy_trace import TRACE_ENV  # noqa: E402

NAMES = ["n1", "n2", "n3"]


def _stats(starts: float, marks: list[float]) -> dict[str, float]:
    first = marks[0] - starts
    steps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {
        "submit_to_first_round_s": round(first, 2),
        "per_round_s": round(statistics.mean(steps), 2) if steps else None,
        "rounds_s": [round(x, 2) for x in steps],
        "total_s": round(marks[-1] - starts, 2),
        "rounds_seen": len(marks),
    }


def read_trace(trace: Path) -> list[dict[str, Any]]:
    """Return a run's trace events (see :mod:`federation.deploy_trace`), oldest first."""
    events = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    return sorted(events, key=lambda e: e["t"])


def breakdown(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Sum a deployment run's trace (see :mod:`federation.deploy_trace`) per SecAgg+ stage.

    Per exchange (the ServerApp pushes one message per node and waits for the replies):
    ``exchange_s`` push to last reply; ``server_push_s`` pushing the messages;
    ``to_executor_s`` push start to a node's executor acquiring the task (SuperNode poll
    and its pull of the message); ``child_pull_s`` the forked child pulling its task
    input (waits for objects still on their way); ``app_s`` the node's ClientApp (gate,
    data, training); ``child_s`` the child's whole life; ``tail_s`` last child done to
    the server holding every reply, split into the SuperNodes pushing the replies to the
    SuperLink (``tail_supernode_push_s``) and the ServerApp noticing and pulling them
    (``tail_server_pull_s``). Means over exchanges of that stage (and nodes).

    Returns:
        stage -> figure -> seconds (rounded), plus ``n`` exchanges.
    """
    exchanges: list[tuple[float, float, list[dict]]] = []
    start, inside = None, []
    for ev in events:
        if ev["event"] == "server.push.start":
            start, inside = ev["t"], []
        elif ev["event"] == "server.replies" and start is not None:
            exchanges.append((start, ev["t"], inside))
            start = None
        elif start is not None:
            inside.append(ev)
    rows: dict[str, dict[str, list[float]]] = {}
    for begin, end, evs in exchanges:
        by_pid: dict[int, dict[str, float]] = {}
        for ev in evs:
            by_pid.setdefault(ev["pid"], {})[ev["event"]] = ev["t"]
        stage = next((ev.get("stage") for ev in evs if ev["event"] == "app.call"), "?")
        row = rows.setdefault(str(stage), {})

        def add(key: str, value: float, row: dict[str, list[float]] = row) -> None:
            row.setdefault(key, []).append(value)

        add("exchange_s", end - begin)
        for ev in evs:
            if ev["event"] == "server.push.end":
                add("server_push_s", ev["t"] - begin)
            if ev["event"] == "executor.acquired":
                add("to_executor_s", ev["t"] - begin)
        ends = []
        for marks in by_pid.values():
            if "child.pull_task_input.end" in marks:
                add("child_pull_s", marks["child.pull_task_input.end"] - marks["child.start"])
            if "app.done" in marks:
                add("app_s", marks["app.done"] - marks["app.call"])
            if "child.end" in marks:
                add("child_s", marks["child.end"] - marks["child.start"])
                ends.append(marks["child.end"])
        if ends:
            add("tail_s", end - max(ends))
            pushed = [e["t"] for e in evs if e["event"] == "supernode._push_messages.end"]
            if pushed:
                add("tail_supernode_push_s", max(pushed) - max(ends))
                add("tail_server_pull_s", end - max(pushed))
    out: dict[str, dict[str, float]] = {}
    for stage, figures in rows.items():
        out[stage] = {k: round(statistics.mean(v), 3) for k, v in figures.items()}
        out[stage]["n"] = len(figures["exchange_s"])
    return out


def superlink_requests(events: list[dict[str, Any]]) -> dict[str, float]:
    """Count the requests the SuperLink served per round, by API path, from a run's trace.

    Only requests between the first and the last round mark count (steady rounds).

    Returns:
        ``total`` and path -> requests per round (empty with fewer than two rounds).
    """
    rounds = [e["t"] for e in events if e["event"] == "server.round"]
    if len(rounds) < 2:
        return {}
    paths = Counter(
        e["path"]
        for e in events
        if e["event"] == "superlink.request" and rounds[0] <= e["t"] < rounds[-1]
    )
    per_round = {p: round(n / (len(rounds) - 1), 1) for p, n in paths.most_common()}
    return {"total": round(sum(per_round.values()), 1), **per_round}


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


def deployment(
    folder: Path,
    rounds: int,
    *,
    warm: bool,
    fast_poll: bool,
    trace: Path | None = None,
    file_db: bool = False,
) -> dict[str, Any]:
    from coordinator.deployment_runner import DeploymentRunner
    from federation.launchers import SUPERLINK_IN_MEMORY

    nodes = fleet.make_nodes(folder, NAMES)
    job = fleet.tiny_job(NAMES, rounds=rounds)
    variant = f"{int(warm)}{int(fast_poll)}{int(file_db)}"
    job_id = f"bench-dep-{variant}"
    fleet.accept(nodes, job, job_id)
    t0 = time.monotonic()
    if trace is not None:
        os.environ[TRACE_ENV] = str(trace)
    dep_dir = folder / f"dep-{variant}"
    dep = LocalDeployment(
        dep_dir,
        warm=warm,
        fast_poll=fast_poll,
        database=str(dep_dir / "superlink.db") if file_db else SUPERLINK_IN_MEMORY,
    ).start()
    try:
        for name, (data, state) in nodes.items():
            dep.register(name)
            dep.start_node(name, {"data-dir": str(data), "state-dir": str(state)})
        dep.wait_online(NAMES)
        startup = time.monotonic() - t0
        runner = DeploymentRunner(
            dep.superlink.control_address,
            dep.pki.ca_cert,
            folder / "store",
            app=dep.flower_app(),
            max_records=fleet.max_records(nodes, job),
        )
        marks: list[float] = []
        started = time.monotonic()
        result = runner.run(
            job, job_id, NAMES, lambda p: marks.append(time.monotonic()), threading.Event()
        )
    finally:
        dep.stop()
        os.environ.pop(TRACE_ENV, None)
    assert result.status == "succeeded", result.reason
    out: dict[str, Any] = {**_stats(started, marks), "processes_startup_s": round(startup, 2)}
    if trace is not None and trace.exists():
        events = read_trace(trace)
        out["per_exchange"] = breakdown(events)
        out["superlink_requests_per_round"] = superlink_requests(events)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also measure Flower's defaults")
    parser.add_argument(
        "--file-db", action="store_true", help="also measure a SuperLink on a SQLite file"
    )
    parser.add_argument("--no-embedded", action="store_true", help="deployment only (no JSON)")
    parser.add_argument("--trace", type=Path, help="keep the deployment's trace events here")
    args = parser.parse_args()
    out: dict[str, object] = {
        "nodes": len(NAMES),
        "rounds": args.rounds,
        "job": "DP-SGD + SecAgg+ logreg, Iwamizawa 2019 maternity data",
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trace = args.trace or folder / "trace.jsonl"
        trace.unlink(missing_ok=True)
        if args.no_embedded:
            print(
                json.dumps(
                    deployment(folder, args.rounds, warm=True, fast_poll=True, trace=trace),
                    indent=1,
                )
            )
            return
        out["embedded"] = emb = embedded(folder, args.rounds)
        print("embedded", emb, flush=True)
        out["deployment"] = dep = deployment(
            folder, args.rounds, warm=True, fast_poll=True, trace=trace
        )
        print("deployment (warm executor, fast poll)", json.dumps(dep, indent=1), flush=True)
        if args.file_db:
            out["deployment_superlink_sqlite_file"] = filedb = deployment(
                folder, args.rounds, warm=True, fast_poll=True, file_db=True
            )
            print("deployment (SuperLink state in a SQLite file)", filedb, flush=True)
            if filedb["per_round_s"] and dep["per_round_s"]:
                out["ratio_per_round_sqlite_file_to_memory"] = round(
                    filedb["per_round_s"] / dep["per_round_s"], 2
                )
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
