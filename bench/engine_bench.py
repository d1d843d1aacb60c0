"""Engine bench: the in-process embedded runner against Flower's Ray simulation, one run.

Goals (issue "embedded runs as fast as the work"):

* warm engine: in a process that runs several embedded jobs, the second and later jobs
  start their first round in <= 1 s; ``make demo`` <= 25 s after installation; a 3-node
  GLM dry run through ``hamanasu simulate`` <= 5 s;
* secure rounds: a DP + SecAgg+ training round <= 1.5x the same round without SecAgg+,
  and the embedded round <= 2x a bare local DP loop.

Each engine runs in its own process (``--engine``): two small training jobs in a row
(3 nodes, 3 rounds, DP + SecAgg+), then the speed trio of ``training_bench``: (a) the
nodes' DP training in a bare loop, (b) federated without SecAgg+, (c) with SecAgg+
(5 hokkaido facilities). ``startup_s`` of a job is the time from calling it to the end
of its first round minus one steady round. Then ``hamanasu simulate`` of a 3-node GLM
and (unless ``--no-demo``) ``hamanasu demo`` as subprocesses, on each engine, with their
wall and CPU seconds. "before" is Flower's Ray engine (``bench/ray_engine.py``), "after"
the in-process runner. Wall times on a loaded machine stretch with the load (recorded);
CPU seconds and ratios within one run are steadier.

Run: .venv/bin/python bench/engine_bench.py [--no-demo]; writes bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results" / "engine.json"
ENGINES = ("ray", "inprocess")
GLM_SPEC = """kind = "glm"
name = "bench-glm"
domain = "births"
features = ["maternal_age", "bmi_pre"]
label = "lbw"
min_nodes = 3

[glm]
family = "binomial"
min_events_per_parameter = 5

[purpose]
duo = ["HMB"]
project = "bench"
requester = "bench"
requester_type = "academic"
"""


def _data(tmp: Path) -> list[Any]:
    from nodes.scenario import generate
    from nodes.sources import NodeSource

    manifest = generate("hokkaido", tmp / "hk", seed=11, years=[2015, 2016, 2017, 2018, 2019])
    facilities = sorted(manifest.nodes, key=lambda n: -sum(n.rows.values()))
    return [NodeSource(n.name, tmp / "hk" / n.name) for n in facilities[:5]]


def _job(spec: Any, nodes: list[Any], max_records: int) -> dict[str, Any]:
    from hamanasu.training_run import run_training_job

    ends: list[float] = []
    t0 = time.perf_counter()
    run = run_training_job(
        spec,
        nodes,
        job_id="bench",
        max_records=max_records,
        on_round=lambda _r: ends.append(time.perf_counter()),
    )
    if run.outcome.status != "succeeded" or not ends:
        return {"status": "failed", "reason": run.outcome.reason}
    seconds = [r.seconds for r in run.rounds]
    steady = statistics.median(seconds[1:])
    return {
        "status": "succeeded",
        "wall_s": round(time.perf_counter() - t0, 3),
        "to_first_round_end_s": round(ends[0] - t0, 3),
        "startup_s": round(ends[0] - t0 - steady, 3),
        "steady_round_s": round(steady, 4),
        "round_s": [round(s, 4) for s in seconds],
    }


def one_engine(engine: str) -> dict[str, Any]:
    """Measure the jobs of one engine in this process; return its figures."""
    if engine == "ray":
        from bench.ray_engine import use_ray_engine

        use_ray_engine()
    from bench.training_bench import _node_data, _spec, bare_loop

    tmp = Path(tempfile.mkdtemp(prefix="hamanasu-engine-bench-"))
    five = _data(tmp)
    rounds = 6
    plain, secure = _spec(rounds, 3.0, False, 5), _spec(rounds, 3.0, True, 5)
    max_records = max(len(_node_data(plain, n)[1]) for n in five)
    small = _spec(3, 3.0, True, 3)
    out: dict[str, Any] = {"engine": engine}
    cpu0 = time.process_time()
    out["warm"] = [_job(small, five[:3], max_records) for _ in range(2)]
    a = bare_loop(plain, five, rounds)
    b = _job(plain, five, max_records)
    c = _job(secure, five, max_records)
    out["speed"] = {
        "a_bare_s_per_round": round(statistics.median(a[1:]), 4),
        "b_federated": b,
        "c_federated_secagg": c,
    }
    steady_a = out["speed"]["a_bare_s_per_round"]
    if b["status"] == c["status"] == "succeeded":
        out["speed"]["ratio_c_over_b"] = round(c["steady_round_s"] / b["steady_round_s"], 2)
        out["speed"]["ratio_c_over_a"] = round(c["steady_round_s"] / steady_a, 2)
        out["speed"]["ratio_b_over_a"] = round(b["steady_round_s"] / steady_a, 2)
    out["cpu_s"] = round(time.process_time() - cpu0, 2)
    return out


def run_cli(engine: str, args: list[str]) -> dict[str, Any]:
    """Run ``hamanasu ARGS`` on ``engine`` in a subprocess; return its wall and CPU seconds."""
    entry = [str(ROOT / "bench" / "ray_engine.py")] if engine == "ray" else ["-m", "hamanasu"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *entry, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "exit_code": proc.returncode,
        # Last lines of output, temporary folders elided.
        "tail": [
            re.sub(r"\S*hamanasu-[\w-]+/", "…/", line)
            for line in proc.stdout.strip().splitlines()[-1:]
            + proc.stderr.strip().splitlines()[-1:]
        ],
    }


def _pairs(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {"before_ray": before, "after_inprocess": after}


def main() -> None:
    """Measure both engines in one run and write ``bench/results/engine.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--no-demo", action="store_true", help="skip the two demo runs")
    args = parser.parse_args()
    if args.engine:
        print("RESULT " + json.dumps(one_engine(args.engine)), flush=True)
        return
    load = [os.getloadavg()]
    jobs = {}
    for engine in ENGINES:
        proc = subprocess.run(
            [sys.executable, __file__, "--engine", engine],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            raise SystemExit(f"{engine} failed: {proc.stderr[-800:]}")
        jobs[engine] = json.loads(lines[-1][7:])
        print(json.dumps(jobs[engine]), flush=True)
        load.append(os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="hamanasu-engine-cli-"))
    three = _data(tmp)[:3]
    spec = tmp / "glm.toml"
    spec.write_text(GLM_SPEC)
    simulate = ["simulate", str(spec), "--quiet"]
    simulate += [a for n in three for a in ("--node", f"{n.name}={n.data}")]
    sims = {e: run_cli(e, [*simulate, "--out", str(tmp / f"sim-{e}")]) for e in ENGINES}
    load.append(os.getloadavg())
    demos = {}
    if not args.no_demo:
        demos = {e: run_cli(e, ["demo", "--out", str(tmp / f"demo-{e}")]) for e in ENGINES}
        load.append(os.getloadavg())
    ray, inproc = jobs["ray"], jobs["inprocess"]
    report = {
        "bench": "engine",
        "goals": {
            "warm_engine": "second and later jobs of a process start their first round in "
            "<= 1 s; make demo <= 25 s; 3-node GLM simulate <= 5 s",
            "secure_rounds": "DP + SecAgg+ round <= 1.5x without SecAgg+; embedded round "
            "<= 2x a bare local DP loop",
        },
        "machine": {"cpus": os.cpu_count(), "load_average_1_5_15": load},
        "warm_engine": {
            "second_job_startup_s": _pairs(
                ray["warm"][1].get("startup_s"), inproc["warm"][1].get("startup_s")
            ),
            "first_job_startup_s": _pairs(
                ray["warm"][0].get("startup_s"), inproc["warm"][0].get("startup_s")
            ),
            "simulate_glm_3_nodes": _pairs(sims["ray"], sims["inprocess"]),
            "demo": _pairs(demos.get("ray"), demos.get("inprocess")),
        },
        "secure_rounds": {
            "secagg_over_plain": _pairs(
                ray["speed"].get("ratio_c_over_b"), inproc["speed"].get("ratio_c_over_b")
            ),
            "secagg_over_bare_dp_loop": _pairs(
                ray["speed"].get("ratio_c_over_a"), inproc["speed"].get("ratio_c_over_a")
            ),
        },
        "runs": jobs,
        "notes": [
            "Wall seconds stretch with the machine's load (load_average_1_5_15, taken "
            "before and after each part); cpu_s is this process's (or the CLI "
            "subprocess's) CPU time and does not count Ray's worker processes.",
            "A job with status failed did not finish on that engine under the run's load "
            "(on Ray: SecAgg+ set-up timing out while actors start).",
        ],
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: report[k] for k in ("warm_engine", "secure_rounds")}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
