"""Training benchmark: the bare DP floor vs federated (plain) vs federated with SecAgg+.

(a) the same local DP training as the nodes do, in a plain loop, no Flower;
(b) the federated run without SecAgg+; (c) with SecAgg+. Steady-state seconds per round
(rounds after the first) and their ratios b/a, c/b, c/a, measured in one run; start-up
(first round) reported separately. Then utility: federated DP AUC against pooled
non-private logistic regression (scikit-learn) at ε = 1, 3, 8 on the ``hokkaido`` preset.

Run: ``.venv/bin/python bench/training_bench.py [--quick]``; writes bench/results/training.json.

``--secagg-repeats N`` measures only the SecAgg+ overhead, for a loaded machine: N pairs of
federated runs without and with SecAgg+, alternating so that both see the same load, each
run's steady round the median of its rounds after the first; reports every run, the
medians, the ratio of medians and each pair's ratio, with the load average around each
run. Writes bench/results/secagg_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from federation.dp_training import plan_dp, set_parameters, train_local
from federation.models import build_model
from federation.plans.train import held_out_mask, prepare_features, public_scaling
from federation.spec import parse_job_spec
from hamanasu.training_run import run_training_job
from nodes.scenario import generate
from nodes.sources import NodeSource, read_columns

RESULTS = Path(__file__).resolve().parent / "results"
FEATURES = [
    "maternal_age",
    "parity",
    "bmi_pre",
    "smoking",
    "alcohol",
    "hdp",
    "gwg_kg",
    "multiple",
    "female",
]
SCALING = {
    "maternal_age": [31.9, 5.0],
    "parity": [1.7, 0.9],
    "bmi_pre": [21.0, 3.0],
    "gwg_kg": [10.0, 4.0],
}


def _spec(rounds: int, epsilon: float, secagg: bool, nodes: int) -> object:
    return parse_job_spec(
        {
            "kind": "train",
            "features": FEATURES,
            "label": "lbw",
            "rounds": rounds,
            "min_nodes": nodes,
            "privacy": {"epsilon": epsilon, "delta": 1e-6},
            "training": {"batch_size": 128, "learning_rate": 2.0, "scaling": SCALING},
            "secure_aggregation": {"enabled": secagg},
        }
    )


def _node_data(spec, node: NodeSource):
    frame = read_columns(node.data, spec.domain, spec.columns())
    test = held_out_mask(frame, spec.training.test_fraction, spec.seed)
    x = prepare_features(frame, spec.features, public_scaling(spec))
    y = frame[spec.label].to_numpy(dtype=float)
    return x[~test], y[~test], x[test], y[test]


def bare_loop(spec, nodes: list[NodeSource], rounds: int) -> list[float]:
    """The floor: each round, every node's DP training in sequence, averaged in numpy."""
    import torch

    data = [_node_data(spec, n) for n in nodes]
    plans = [
        plan_dp(len(d[1]), 128, 1, rounds, spec.privacy.epsilon, spec.privacy.delta) for d in data
    ]
    torch.manual_seed(0)
    global_params = [
        p.detach().numpy().astype(float) for p in build_model("logreg", len(FEATURES)).parameters()
    ]
    times = []
    for r in range(rounds):
        t0 = time.perf_counter()
        updates, weights = [], []
        for i, (x, y, _, _) in enumerate(data):
            model = build_model("logreg", len(FEATURES))
            set_parameters(model, global_params)
            res = train_local(
                model,
                x,
                y,
                plans[i],
                max_grad_norm=1.0,
                learning_rate=2.0,
                batch_size=128,
                local_epochs=1,
                seed=r * 10 + i,
            )
            updates.append(res.parameters)
            weights.append(len(y))
        global_params = [
            sum(w * u[k] for w, u in zip(weights, updates, strict=True)) / sum(weights)
            for k in range(len(global_params))
        ]
        times.append(time.perf_counter() - t0)
    return times


def federated(spec, nodes, max_records) -> tuple[list[float], dict]:
    run = run_training_job(spec, nodes, job_id="bench", max_records=max_records)
    if run.outcome.status != "succeeded":
        raise SystemExit(f"federated run failed: {run.outcome.reason}")
    return [r.seconds for r in run.rounds[: spec.rounds]], run.report()


def pooled_auc(spec, nodes) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    parts = [_node_data(spec, n) for n in nodes]
    x = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    xt = np.vstack([p[2] for p in parts])
    yt = np.concatenate([p[3] for p in parts])
    clf = LogisticRegression(max_iter=2000).fit(x, y)
    return float(roc_auc_score(yt, clf.predict_proba(xt)[:, 1]))


def secagg_overhead(five: list[NodeSource], rounds: int, repeats: int) -> dict:
    """Alternate ``repeats`` federated runs without and with SecAgg+; return the figures."""
    plain, secure = _spec(rounds, 3.0, False, 5), _spec(rounds, 3.0, True, 5)
    max_records = max(len(_node_data(plain, n)[1]) for n in five)
    bare = bare_loop(plain, five, rounds)
    runs: list[dict] = []
    for rep in range(repeats):
        for mode, spec in (("plain", plain), ("secagg", secure)):
            load = os.getloadavg()
            started = time.perf_counter()
            seconds, _ = federated(spec, five, max_records)
            runs.append({
                "repeat": rep, "mode": mode, "round_s": seconds,
                "steady_round_s": statistics.median(seconds[1:]),
                "wall_s": round(time.perf_counter() - started, 2),
                "load_average_before": load, "load_average_after": os.getloadavg(),
            })
            print(json.dumps(runs[-1]), flush=True)
    by_mode = {m: [r["steady_round_s"] for r in runs if r["mode"] == m]
               for m in ("plain", "secagg")}
    medians = {m: statistics.median(v) for m, v in by_mode.items()}
    bare_steady = statistics.median(bare[1:])
    return {
        "goal": "DP + SecAgg+ round <= 1.5x the same round without SecAgg+; <= 2x a bare DP loop",
        "nodes": len(five),
        "rounds_per_run": rounds,
        "repeats": repeats,
        "median_steady_round_s": medians,
        "secagg_over_plain": medians["secagg"] / medians["plain"],
        "secagg_over_plain_by_pair": [s / p for p, s in zip(by_mode["plain"], by_mode["secagg"],
                                                             strict=True)],
        "bare_loop_steady_round_s": bare_steady,
        "secagg_over_bare": medians["secagg"] / bare_steady,
        "cpus": os.cpu_count(),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and one ε")
    parser.add_argument("--secagg-repeats", type=int, default=0, metavar="N",
                        help="only the SecAgg+ overhead, N alternating pairs of runs")
    args = parser.parse_args()
    rounds = 4 if args.quick else 8
    tmp = Path(tempfile.mkdtemp(prefix="hamanasu-bench-"))
    # Speed: 5 nodes of the hokkaido preset (five years of each of the five largest facilities).
    manifest = generate("hokkaido", tmp / "hk", seed=11, years=[2015, 2016, 2017, 2018, 2019])
    facilities = sorted(manifest.nodes, key=lambda n: -sum(n.rows.values()))
    five = [NodeSource(n.name, tmp / "hk" / n.name) for n in facilities[:5]]
    if args.secagg_repeats:
        report = secagg_overhead(five, rounds, args.secagg_repeats)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "secagg_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
        return
    spec_plain, spec_secure = _spec(rounds, 3.0, False, 5), _spec(rounds, 3.0, True, 5)
    max_records = max(len(_node_data(spec_plain, n)[1]) for n in five)
    a = bare_loop(spec_plain, five, rounds)
    b, _ = federated(spec_plain, five, max_records)
    c, _ = federated(spec_secure, five, max_records)
    steady = lambda xs: statistics.median(xs[1:])  # noqa: E731
    speed = {
        "nodes": 5,
        "rows_per_node": [sum(n.rows.values()) for n in facilities[:5]],
        "rounds": rounds,
        "a_bare_s_per_round": steady(a),
        "b_federated_s_per_round": steady(b),
        "c_federated_secagg_s_per_round": steady(c),
        "first_round_s": {"a": a[0], "b": b[0], "c": c[0]},
    }
    speed["ratio_b_over_a"] = speed["b_federated_s_per_round"] / speed["a_bare_s_per_round"]
    speed["ratio_c_over_b"] = (
        speed["c_federated_secagg_s_per_round"] / speed["b_federated_s_per_round"]
    )
    speed["ratio_c_over_a"] = speed["c_federated_secagg_s_per_round"] / speed["a_bare_s_per_round"]
    print(json.dumps(speed, indent=2))
    # Utility: ten facilities, federated DP + SecAgg+ vs pooled non-private.
    ten = [NodeSource(n.name, tmp / "hk" / n.name) for n in facilities[:10]]
    utility = {
        "nodes": 10,
        "pooled_nonprivate_auc": pooled_auc(_spec(rounds, 8.0, True, 10), ten),
        "by_epsilon": {},
    }
    max10 = max(len(_node_data(spec_plain, n)[1]) for n in ten)
    for eps in [8.0] if args.quick else [1.0, 3.0, 8.0]:
        _, report = federated(_spec(rounds, eps, True, 10), ten, max10)
        auc = report["rounds"][-1]["metrics"]["auc"]
        utility["by_epsilon"][str(eps)] = {
            "federated_dp_auc": auc,
            "gap_to_pooled": utility["pooled_nonprivate_auc"] - auc,
            "epsilon_spent_max": max(report["privacy"]["epsilon_spent_by_node"].values()),
        }
        print(
            f"ε={eps}: federated DP AUC {auc:.4f} vs pooled {utility['pooled_nonprivate_auc']:.4f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {"speed": speed, "utility": utility, "quick": args.quick}
    (RESULTS / "training.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'training.json'}")


if __name__ == "__main__":
    main()
