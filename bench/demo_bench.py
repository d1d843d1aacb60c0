"""Demo bench: ``hamanasu demo`` wall and CPU seconds, this tree against an earlier commit.

Goal (issue 19): ``make demo`` after installation in <= 25 s on 2 cores.

Each repeat runs the demo once from a detached worktree of ``--before`` (default: the
commit before the demo's linked questions ran beside its horizontal jobs) and once from
this tree, alternating so both see the same load; each run is a fresh process with the
tree first on ``PYTHONPATH``, as ``make demo`` runs it. Records per run the wall seconds,
the CPU seconds of the demo and every process it started (MPC parties included), the
load average before and after, and whether every answer came back (training, rates,
adjusted odds ratios, the three linked questions).

Run: .venv/bin/python bench/demo_bench.py [--before REF] [--repeats N]; writes
bench/results/demo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "demo.json"
GOAL_S = 25.0
#: The last commit whose demo ran its jobs one after another (its data generator as now).
DEFAULT_BEFORE = "aafab1a"


def answers(report: dict[str, Any]) -> dict[str, str]:
    """Return the status of each of the demo's answers in its ``report.json``."""
    linked = report.get("linked") or {}
    return {
        "training": report.get("training", {}).get("status", "missing"),
        "lbw_rate_by_year": report.get("lbw_rate_by_year", {}).get("status", "missing"),
        "adjusted_odds_ratios": report.get("adjusted_odds_ratios", {}).get("status", "missing"),
        **{k: (linked.get(k) or {}).get("status", "missing") for k in (
            "dairy_supplements_lbw", "infant_growth", "pre_pregnancy_checkups_hdp")},
    }


def run_demo(tree: Path, out: Path) -> dict[str, Any]:
    """Run the demo of ``tree`` into ``out``; return its figures."""
    load = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hamanasu", "demo", "--out", str(out)],
        cwd=tree, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report_file = out / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2),
        "exit_code": proc.returncode,
        "answers": answers(report),
        "load_average_before": load,
        "load_average_after": os.getloadavg(),
    }


def main() -> None:
    """Alternate the two trees' demos and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hamanasu-demo-bench-"))
    old = tmp / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(old), args.before],
                   cwd=ROOT, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(args.repeats):
            for which, tree in (("before", old), ("after", ROOT)):
                run = {"repeat": rep, "tree": which, **run_demo(tree, tmp / f"{which}{rep}")}
                print(json.dumps(run), flush=True)
                runs.append(run)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                       check=False, capture_output=True)
    medians = {w: {k: statistics.median(r[k] for r in runs if r["tree"] == w)
                   for k in ("wall_s", "cpu_s")} for w in ("before", "after")}
    report = {
        "bench": "demo",
        "goal": f"make demo after installation <= {GOAL_S:g} s on 2 cores",
        "before": args.before,
        "after": head,
        "machine": {"cpus": os.cpu_count()},
        "median": medians,
        "after_over_before_wall": medians["after"]["wall_s"] / medians["before"]["wall_s"],
        "meets_goal": medians["after"]["wall_s"] <= GOAL_S,
        "runs": runs,
        "notes": [
            "Wall seconds stretch with the machine's load (recorded around each run); "
            "cpu_s counts the demo and every process it started, and moves much less.",
        ],
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
