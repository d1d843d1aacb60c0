"""Run every benchmark in ``bench/``: ``python -m bench`` (what ``make bench`` calls).

Each ``bench/*_bench.py`` runs in its own process, one after the other (they measure the
whole machine, so never two at once), prints its figures and writes
``bench/results/<name>.json``. ``--only NAME`` picks some, ``--list`` names them, and
arguments after ``--`` go to every benchmark run. The exit code is the number of
benchmarks that failed (0 when all ran).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """Return the names of the benchmarks in this folder (``training`` for training_bench.py)."""
    return sorted(p.stem.removesuffix("_bench") for p in HERE.glob("*_bench.py"))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks in turn; return how many failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=available(), help="run only these")
    parser.add_argument("--list", action="store_true", help="name the benchmarks and stop")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(available()))
        return 0
    names = args.only or available()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH", "")])
        ),
    }
    failed: list[str] = []
    for name in names:
        load = os.getloadavg()[0]
        print(f"== {name} (load average {load:.2f})", flush=True)
        started = time.perf_counter()
        code = subprocess.call(
            [sys.executable, "-m", f"bench.{name}_bench", *extra], cwd=HERE.parent, env=env
        )
        took = time.perf_counter() - started
        print(f"== {name}: {'ok' if code == 0 else f'exit {code}'} in {took:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    results = HERE / "results"
    print(f"results in {results}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return len(failed)


if __name__ == "__main__":
    raise SystemExit(main())
