"""Stats-round scale bench (issue 6): one secure-sum round over N simulated nodes under SecAgg+.

What runs: the server side of a statistics job exactly as ``run_stats_job`` wires it
(``build_sum_server_app``: our SecAgg+ workflow with halts that raise, the secure-sum
strategy) on the embedded runner (``run_embedded``: in one process, 2 worker threads),
or with ``BENCH_ENGINE=ray`` on Flower's Ray simulation (2 actors on 2 cores), the engine
the embedded runner used before (``bench/ray_engine.py``). The client side is a bench ClientApp with ``secaggplus_mod`` whose nodes hold
their rows in memory and send the stats layout's vector for one variable over two cells
(rows, n, sum, sum of squares per cell: 8 entries) scaled by the public scale; the
product's ClientApp reads the node's file and passes the gate on every message, which
is per-node work, not what scales with N here.

Each configuration runs in a fresh process for two rounds:
``startup_s`` is from the run's start to the server's main starting (on Ray: Ray, engine),
``first_round_s`` includes the actors' warm-up and every node registering,
``round_s`` is the second, steady round. Modes: ``plain`` (no SecAgg+), ``secagg``
(SecAgg+ with k = O(log n) neighbours, ``num_shares_for``), ``secagg-all`` (every node
shares with every other: the pre-issue-6 setting, quadratic).

Run: .venv/bin/python bench/stats_scale_bench.py [--nodes 50 200 1000] [--modes plain secagg]
[--linear-dispatch]; environment: BENCH_PULL_INTERVAL_S (server poll interval, default the
coordinator's 0.01 s; Ray only), BENCH_RAY_ACTORS (Ray actors or worker threads, default
2), BENCH_ENGINE (``inprocess`` default, or ``ray``). Writes bench/results/stats_scale.json,
merging with the configurations already there.

Findings on Flower's Ray engine (Flower 1.42, 2 cores, shared machine): k = O(log n) neighbours cut the 50-node
SecAgg+ round from 21.8 s (everyone shares) to 2.3 s; at 1,000 nodes a round still takes
~110 s (plain: ~11 s), against a goal of 60 s. At that size the server process is the
bottleneck (the simulation engine's message handling, ~10 ms a message, four exchanges
a round, plus the server's unmasking), not the two client actors: four actors did not help.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results" / "stats_scale.json"
ROWS_PER_NODE = 100
VALUE_BOUND = 10.0  # public bounds of the variable: [0, 10]
CLIP = 8.0
GOAL_S = 60.0
STAGE_TIMEOUT_S = 600.0
NOTES = [
    "round_s is the steady (second) round; startup_s = first round - steady round, an "
    "estimate (Ray, actors and node registration happen inside the first round).",
    "linear_dispatch: Flower 1.42's simulation dispatcher scans every stored message for "
    "every node each 0.1 s (O(nodes x messages)); the bench can swap in a linear one.",
    "pull_interval_s: how often the server polls the in-memory grid (coordinator default "
    "0.01 s; each poll re-validates every pending message, so at 1,000 nodes 0.1 s is cheaper).",
    "secagg-all is the pre-issue-6 setting (every node shares with every other).",
    "Figures were taken on a 2-core machine shared with other sessions' test runs: expect "
    "noise of tens of percent.",
]


def node_vectors(n_nodes: int, seed: int = 0) -> np.ndarray:
    """Return each node's stats vector: per cell (2 cells) rows, n, sum, sum of squares."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n_nodes, 8))
    for i in range(n_nodes):
        x = rng.uniform(0, VALUE_BOUND, ROWS_PER_NODE)
        cell = rng.integers(0, 2, ROWS_PER_NODE)
        for c in (0, 1):
            xc = x[cell == c]
            out[i, 4 * c : 4 * c + 4] = [xc.size, xc.size, xc.sum(), (xc**2).sum()]
    return out


def public_scale() -> np.ndarray:
    """Return the public per-entry scale: the row bound times each block's value bound."""
    bound = float(2 ** int(np.ceil(np.log2(ROWS_PER_NODE))))
    per_cell = np.array([1.0, 1.0, VALUE_BOUND, VALUE_BOUND**2])
    return np.tile(per_cell, 2) * bound


def use_linear_dispatch() -> None:
    """Replace the simulation engine's message dispatcher by one linear in the messages.

    Flower 1.42's ``vce_api.add_messages_to_queue`` asks the in-memory LinkState, every
    0.1 s, for each node's next message; each such call scans (and re-validates) every
    stored message, so one sweep costs nodes × messages, about 10⁶ checks at 1,000
    nodes, holding the state's lock the server also needs. That is the simulation
    engine's cost, not SecAgg+'s (SecAgg+ has four exchanges a round, so it pays it four
    times). This version scans the store once per sweep with the same checks (expiry and
    federation membership, via ``_check_stored_messages``) and the same delivery marking.
    Bench only: it reaches into Flower internals that change between versions.
    """
    import threading
    from queue import Queue

    from flwr.common import now
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue

    def add_messages_to_queue(
        state: Any, queue: Queue[Any], nodes_mapping: Any, f_stop: threading.Event
    ) -> None:
        if not hasattr(state, "message_ins_store"):  # not the in-memory LinkState
            return original(state, queue, nodes_mapping, f_stop)
        nodes = set(nodes_mapping.keys())
        while not f_stop.is_set():
            with state.lock:
                state._check_stored_messages(set(state.message_ins_store.keys()))
                ready, taken = [], set()
                for msg in list(state.message_ins_store.values()):
                    dst = msg.metadata.dst_node_id
                    if dst in nodes and dst not in taken and msg.metadata.delivered_at == "":
                        taken.add(dst)
                        ready.append(msg)
                delivered_at = now().isoformat()
                for msg in ready:
                    msg.metadata.delivered_at = delivered_at
            for msg in ready:
                queue.put(msg)
            f_stop.wait(0.1)

    vce_api.add_messages_to_queue = add_messages_to_queue


def crypto_per_node(k: int, t: int, repeats: int = 5) -> dict[str, float]:
    """Return CPU ms per node of SecAgg+'s crypto, timed with Flower's own functions.

    Per node and round: the client splits its mask seed and its first private key (as
    Flower serialises it, PEM) into ``k`` shares with threshold ``t``, agrees a key with
    each of its ``k - 1`` neighbours twice (share keys, masked vectors); the server
    rebuilds each surviving node's seed from ``t`` shares. All of it is pure Python
    (pycryptodome's GF(2^128) Shamir) or holds the GIL, so in one process it adds up on
    one core whatever the worker threads.
    """
    import os as _os

    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.supercore.primitives.asymmetric import (
        bytes_to_private_key,
        bytes_to_public_key,
        generate_key_pairs,
        private_key_to_bytes,
        public_key_to_bytes,
    )

    sk, _pk = generate_key_pairs()
    sk_bytes = private_key_to_bytes(sk)
    _sk2, pk2 = generate_key_pairs()
    pk2_bytes = public_key_to_bytes(pk2)
    seed = _os.urandom(32)

    def timed(fn: Any) -> float:
        start = time.process_time()
        for _ in range(repeats):
            fn()
        return (time.process_time() - start) / repeats * 1000.0

    shares = create_shares(seed, t, k)
    split = timed(lambda: (create_shares(seed, t, k), create_shares(sk_bytes, t, k)))
    combine = timed(lambda: combine_shares(shares[:t]))
    agree = timed(lambda: generate_shared_key(bytes_to_private_key(sk_bytes),
                                              bytes_to_public_key(pk2_bytes)))
    per_node = split + combine + 2 * (k - 1) * agree
    return {
        "k": k,
        "t": t,
        "client_share_split_ms": round(split, 2),
        "server_seed_combine_ms": round(combine, 2),
        "key_agreements_ms": round(2 * (k - 1) * agree, 2),
        "per_node_ms": round(per_node, 2),
    }


def run_one(n_nodes: int, mode: str, linear_dispatch: bool = False) -> dict[str, Any]:
    """Run one configuration (two rounds) in this process and return its figures."""
    import coordinator.server_app as server_app_module

    pull = float(os.environ.get("BENCH_PULL_INTERVAL_S", server_app_module.PULL_INTERVAL_S))
    server_app_module.PULL_INTERVAL_S = pull
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.server import ServerApp

    from coordinator.server_app import RunOutcome, build_sum_server_app
    from federation.analytics.scaling import scale_for_secagg, unscale
    from federation.embedded import run_embedded
    from federation.secagg import SecAggSettings
    from federation.secure_sum import SumRecorder

    if linear_dispatch:
        use_linear_dispatch()
    vectors = node_vectors(n_nodes)
    scale = public_scale()
    sent = [scale_for_secagg(v, scale, CLIP) for v in vectors]  # in memory, checked once
    secagg = None
    if mode != "plain":
        secagg = SecAggSettings.for_job(n_nodes, 1, clipping_range=CLIP, timeout=STAGE_TIMEOUT_S)
        if mode == "secagg-all":
            secagg = dataclasses.replace(secagg, num_shares=n_nodes)
    marks: dict[str, float] = {}

    def step(server_round: int, _summed: np.ndarray) -> np.ndarray | None:
        marks[f"round{server_round}"] = time.perf_counter()
        return np.zeros(1) if server_round == 1 else None

    class Client(NumPyClient):  # type: ignore[misc]
        def __init__(self, i: int) -> None:
            self.i = i

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            return [sent[self.i]], 1, {"node": f"n{self.i}"}

    client = ClientApp(
        client_fn=lambda ctx: Client(int(ctx.node_config["partition-id"])).to_client(),
        mods=[secaggplus_mod] if secagg else [],
    )
    recorder, outcome = SumRecorder(), RunOutcome()
    inner = build_sum_server_app(
        initial=np.zeros(1),
        n_nodes=n_nodes,
        max_rounds=2,
        min_nodes=n_nodes,
        secagg=secagg,
        fit_config={"job_id": "bench"},
        step=step,
        recorder=recorder,
        outcome=outcome,
    )
    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        marks["server"] = time.perf_counter()
        inner._main(grid, context)

    engine = os.environ.get("BENCH_ENGINE", "inprocess")
    if engine == "ray":
        from bench.ray_engine import run_on_ray as run_embedded  # noqa: F811
    t0 = time.perf_counter()
    # Ray CPUs = actors (each client takes 1 CPU), or the in-process runner's worker
    # threads; the machine has 2 cores either way.
    actors = int(os.environ.get("BENCH_RAY_ACTORS", "2"))
    run_embedded(server, client, n_nodes, num_cpus=actors)
    end = time.perf_counter()
    result: dict[str, Any] = {
        "nodes": n_nodes,
        "mode": mode,
        "engine": engine,
        "linear_dispatch": linear_dispatch,
        "pull_interval_s": pull,
        "ray_actors": actors,
        "status": outcome.status,
    }
    if outcome.status != "succeeded" or "round2" not in marks:
        result["reason"] = outcome.reason or "no second round"
        return result
    plain_sum = vectors.sum(axis=0)
    secure_sum = unscale(recorder.sums[-1], scale)
    # Flower quantises each node's scaled entry with stochastic rounding to a step of
    # 2·clip/q: at most one step of error per node, scaled back by the public scale.
    step_size = 2 * CLIP / secagg.quantization_range if secagg else 0.0
    tolerance = n_nodes * step_size * scale
    error = np.abs(secure_sum - plain_sum)
    result.update(
        to_server_main_s=round(marks["server"] - t0, 2),
        # Ray, the actors and node registration all happen inside the first round.
        startup_s=round(marks["round1"] - t0 - (marks["round2"] - marks["round1"]), 2),
        first_round_s=round(marks["round1"] - marks["server"], 2),
        round_s=round(marks["round2"] - marks["round1"], 2),
        shutdown_s=round(end - marks["round2"], 2),
        total_s=round(end - t0, 2),
        num_shares=secagg.shares if secagg else None,
        threshold=secagg.threshold if secagg else None,
        quantization_range=secagg.quantization_range if secagg else None,
        max_abs_error=float(error.max()),
        max_rel_error=float((error / np.maximum(np.abs(plain_sum), 1e-12)).max()),
        within_tolerance=bool(np.all(error <= tolerance + 1e-12 * np.maximum(abs(plain_sum), 1))),
        nodes_in_sum=len(recorder.nodes[-1]),
    )
    return result


def main() -> None:
    """Run every (nodes, mode) in a fresh process and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument(
        "--modes", nargs="+", default=["plain", "secagg"], choices=["plain", "secagg", "secagg-all"]
    )
    parser.add_argument(
        "--linear-dispatch",
        action="store_true",
        help="patch the simulation engine's O(nodes x messages) dispatcher",
    )
    parser.add_argument(
        "--cost-model",
        action="store_true",
        help="only time SecAgg+'s per-node crypto at this k and t, and smaller ones",
    )
    parser.add_argument("--one", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.cost_model:
        write_cost_model(args.nodes, args.out)
        return
    if args.one:
        run = run_one(int(args.one[0]), args.one[1], args.linear_dispatch)
        print("RESULT " + json.dumps(run), flush=True)
        return
    runs = []
    for n in args.nodes:
        for mode in args.modes:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(n), mode]
                + (["--linear-dispatch"] if args.linear_dispatch else []),
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=os.environ.copy(),
                check=False,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            run = (
                json.loads(lines[-1][7:])
                if lines
                else {"nodes": n, "mode": mode, "status": "crashed", "reason": proc.stderr[-500:]}
            )
            print(json.dumps(run), flush=True)
            runs.append(run)
            write_report(runs, args.out)
    print(json.dumps(write_report(runs, args.out), indent=2))


def write_cost_model(nodes: list[int], out: Path) -> None:
    """Time the per-node crypto at each ``n``'s k and t (and k = 11, 7) into the report."""
    from federation.secagg import SecAggSettings

    rows = []
    for n in nodes:
        settings = SecAggSettings.for_job(n, 1, clipping_range=CLIP)
        for k in sorted({settings.shares, 11, 7}, reverse=True):
            t = settings.threshold if k == settings.shares else max(2, round(0.6 * k))
            row = {"nodes": n, "load_average": os.getloadavg(), **crypto_per_node(k, t)}
            row["one_core_round_floor_s"] = round(row["per_node_ms"] * n / 1000.0, 1)
            row["is_this_jobs_setting"] = k == settings.shares
            print(json.dumps(row), flush=True)
            rows.append(row)
    report = json.loads(out.read_text()) if out.exists() else {}
    report["cost_model"] = {
        "what": "CPU ms per node and round of SecAgg+'s crypto (Flower's own functions), "
        "and n times it: the floor of a round in one process, where it holds the GIL",
        "rows": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")


def _config(run: dict[str, Any]) -> tuple[str, int, bool, float, int]:
    """Return what a run was measured under: engine, nodes, dispatch, poll, workers."""
    return (
        run.get("engine", "ray"),
        run["nodes"],
        bool(run.get("linear_dispatch")),
        run.get("pull_interval_s", 0.01),
        run.get("ray_actors", 2),
    )


def _key(run: dict[str, Any]) -> tuple[Any, ...]:
    return (*_config(run), run["mode"])


def write_report(runs: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """Merge ``runs`` into the report at ``out`` (replacing the same configurations)."""
    before = json.loads(out.read_text()) if out.exists() else {}
    old = before.get("runs", [])
    fresh = {_key(r) for r in runs}
    merged = sorted([r for r in old if _key(r) not in fresh] + runs, key=_key)
    summary = []
    for config in sorted({_config(r) for r in merged}):
        by = {
            r["mode"]: r for r in merged if _config(r) == config and r.get("status") == "succeeded"
        }
        engine, n, dispatch, pull, actors = config
        row: dict[str, Any] = {
            "engine": engine,
            "nodes": n,
            "linear_dispatch": dispatch,
            "pull_interval_s": pull,
            "ray_actors": actors,
        }
        for mode, r in sorted(by.items()):
            row[f"{mode}_round_s"] = r["round_s"]
            row[f"{mode}_startup_s"] = r["startup_s"]
            row[f"{mode}_first_round_s"] = r["first_round_s"]
        if "plain" in by and "secagg" in by:
            ratio = by["secagg"]["round_s"] / max(by["plain"]["round_s"], 1e-9)
            row["secagg_over_plain"] = round(ratio, 1)
        if "secagg" in by:
            row["secagg_meets_goal"] = by["secagg"]["round_s"] <= GOAL_S
            row["secure_sum_within_tolerance"] = by["secagg"]["within_tolerance"]
        summary.append(row)
    report = {
        "bench": "stats_scale",
        "goal": f"one SecAgg+ statistics round over 1,000 nodes in <= {GOAL_S:g} s on 2 cores",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows_per_node": ROWS_PER_NODE,
        "vector_entries": 8,
        "notes": NOTES,
        "summary": summary,
        "runs": merged,
    }
    if "cost_model" in before:
        report["cost_model"] = before["cost_model"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
