"""Hokkaido bench: the 60-facility ``hokkaido`` preset end to end as 60 nodes.

Generates the preset (every facility a births holder; ``--years``, default 2017–2019),
then runs through ``hamanasu simulate`` (the embedded runner, one process) a DP +
SecAgg+ training job (the Iwamizawa model's features and settings, ``--rounds``) and an
exact federated logistic regression over SecAgg+ (Newton rounds), each over all 60
nodes. Records wall and CPU seconds, the load average, and each job's outcome: rounds,
AUC and ε spent for training, iterations, convergence and coefficients for the GLM.

Run: .venv/bin/python bench/hokkaido_bench.py; writes bench/results/hokkaido.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results" / "hokkaido.json"
PURPOSE = """
[purpose]
duo = ["HMB"]
project = "bench"
requester = "bench"
requester_type = "academic"
"""
FEATURES = '["maternal_age", "parity", "bmi_pre", "smoking", "hdp", "multiple"]'


def _train_spec(rounds: int, nodes: int) -> str:
    return f"""kind = "train"
name = "hokkaido-lbw-risk"
domain = "births"
features = {FEATURES}
label = "lbw"
rounds = {rounds}
min_nodes = {nodes}
{PURPOSE}
[privacy]
epsilon = 3.0
delta = 1e-5

[training]
batch_size = 1024
learning_rate = 8.0
local_epochs = 1

[training.scaling]
maternal_age = [31.9, 5.0]
parity = [1.7, 0.9]
bmi_pre = [21.0, 3.0]
"""


def _glm_spec(nodes: int) -> str:
    return f"""kind = "glm"
name = "hokkaido-lbw-or"
domain = "births"
features = {FEATURES}
label = "lbw"
min_nodes = {nodes}

[glm]
family = "binomial"
{PURPOSE}"""


def _simulate(spec: Path, node_args: list[str], out: Path) -> dict[str, Any]:
    from bench.engine_bench import run_cli

    load = os.getloadavg()
    figures = run_cli(
        "inprocess", ["simulate", str(spec), *node_args, "--quiet", "--out", str(out)]
    )
    figures["load_average_1_5_15_before"] = load
    result_file = out / "result.json"
    if not result_file.exists():
        return figures
    result = json.loads(result_file.read_text())
    figures["status"] = result.get("status", result.get("outcome", {}).get("status"))
    figures["reason"] = result.get("reason") or result.get("outcome", {}).get("reason")
    if "rounds" in result and isinstance(result["rounds"], list):
        rounds = result["rounds"]
        figures["rounds"] = len(rounds)
        figures["round_s"] = [r.get("seconds") for r in rounds]
        figures["auc_by_round"] = [r.get("metrics", {}).get("auc") for r in rounds]
        eps = (result.get("privacy") or {}).get("epsilon_spent_by_node") or {}
        figures["epsilon_spent_max"] = max(eps.values()) if eps else None
        figures["nodes"] = len(result.get("nodes", []))
    for key in ("iterations", "convergence", "coefficients", "n", "nodes"):
        if key in result and key not in figures:
            figures[key] = result[key]
    return figures


def main() -> None:
    """Generate the preset, run both jobs over its 60 nodes and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, nargs="+", default=[2017, 2018, 2019])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from nodes.scenario import generate

    tmp = Path(tempfile.mkdtemp(prefix="hamanasu-hokkaido-"))
    t0 = time.perf_counter()
    manifest = generate("hokkaido", tmp / "hk", seed=2017, years=args.years)
    generate_s = time.perf_counter() - t0
    names = sorted(n.name for n in manifest.nodes)
    node_args = [a for name in names for a in ("--node", f"{name}={tmp / 'hk' / name}")]
    (tmp / "train.toml").write_text(_train_spec(args.rounds, len(names)))
    (tmp / "glm.toml").write_text(_glm_spec(len(names)))
    report = {
        "bench": "hokkaido",
        "goal": "the 60-facility hokkaido preset end to end as 60 nodes (training and GLM)",
        "machine": {"cpus": os.cpu_count()},
        "years": args.years,
        "nodes": len(names),
        "rows": sum(sum(n.rows.values()) for n in manifest.nodes),
        "generate_s": round(generate_s, 2),
        "train": _simulate(tmp / "train.toml", node_args, tmp / "train-out"),
        "glm": _simulate(tmp / "glm.toml", node_args, tmp / "glm-out"),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
