"""Node data loading: rows per second read and validated from Parquet and from PostgreSQL.

Run: ``python bench/data_load_bench.py`` (``--rows`` to change the 1,000,000-row births
table). The births table is the Iwamizawa scenario's, repeated with fresh pseudonyms.
Parquet is read with ``nodes.data_loading.load_table`` (read + full validation);
PostgreSQL through a mapping file with ``nodes.sql_source.read_mapped`` (read-only
session, every data-model column, mapped and validated). Each measurement runs in its
own process so its peak memory (max RSS) is the node's. Needs
``$HAMANASU_TEST_POSTGRES_URL`` for the PostgreSQL part (skipped, and said so, without).
Goals: <= 5 s from Parquet, <= 15 s from PostgreSQL. Besides the wall time, each
measurement records the node's CPU time, which a busy shared machine inflates less.
``--baseline DIR`` also measures another checkout's code (e.g. an older commit in a git
worktree) on the same table in the same session, for a before/after ratio. Writes
``bench/results/data_load.json`` with the load average.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = Path(os.environ.get("HAMANASU_BENCH_CODE", ROOT))  # whose code a measurement runs
if str(CODE) not in sys.path:
    sys.path.insert(0, str(CODE))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

GOALS = {"parquet": 5.0, "postgres": 15.0}


def _births(rows: int, folder: Path) -> pd.DataFrame:
    from nodes.scenario.generator import generate

    generate("iwamizawa", folder / "scn", years=[2017, 2018, 2019])
    base = pd.concat(
        pd.read_csv(folder / "scn" / f / "births.csv") for f in ("city-hospital", "women-clinic")
    )
    frame = base.sample(rows, replace=True, random_state=1).reset_index(drop=True)
    rng = np.random.default_rng(2)
    frame["infant"] = [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, (rows, 2))]
    return frame


def _measure(kind: str, target: str) -> dict[str, float]:
    """Load once in this process; return seconds, rows and peak memory."""
    from federation.cdm import get_schema
    from nodes.data_loading import load_table
    from nodes.mapping import load_mapping
    from nodes.sql_source import read_mapped

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()  # after the imports: a running node has them loaded
    if kind == "parquet":
        n = len(load_table(Path(target), "births"))
    else:
        frame = read_mapped(
            load_mapping(Path(target)), "births", list(get_schema("births").names)
        ).frame
        n = 0 if frame is None else len(frame)
    seconds = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_SELF)
    peak = used.ru_maxrss / 1024
    return {
        "seconds": round(seconds, 3),
        # the node's own CPU time (all its threads; not the database server's): on a loaded
        # machine this, not the wall time, says what the work costs
        "cpu_s": round(used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime, 3),
        "rows": n,
        "rows_per_s": round(n / seconds),
        "peak_rss_mb": round(peak, 1),
    }


def _child(kind: str, target: Path, code: Path = ROOT) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code), "HAMANASU_BENCH_CODE": str(code)}
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, str(target)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _commit(code: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def _to_postgres(url: str, frame: pd.DataFrame, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    frame.head(0).to_sql("births", engine, schema=schema, index=False)
    buf = io.StringIO()
    frame.to_csv(buf, index=False, header=False)
    raw = engine.raw_connection()
    try:
        with (
            raw.cursor() as cur,
            cur.copy(f'COPY "{schema}".births FROM STDIN WITH (FORMAT csv)') as copy,
        ):
            copy.write(buf.getvalue())
        raw.commit()
    finally:
        raw.close()
    engine.dispose()


def _drop(url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def main() -> None:
    """Build the table, measure each source in its own process, print and save figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=Path, help="another checkout to measure as well")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(*args.measure)))
        return
    from nodes.scenario.databases import identity_mapping

    results: dict[str, object] = {}
    before: dict[str, object] = {}
    codes = [(results, ROOT)] + ([(before, args.baseline.resolve())] if args.baseline else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frame = _births(args.rows, folder)
        frame.to_parquet(folder / "births.parquet", index=False)
        for into, code in codes:
            into["parquet"] = _child("parquet", folder / "births.parquet", code)
        url = os.environ.get("HAMANASU_TEST_POSTGRES_URL")
        if url:
            schema = f"bench_{secrets.token_hex(4)}"
            try:
                _to_postgres(url, frame, schema)
                mapping = folder / "mapping.toml"
                text = identity_mapping(url, {"births": "births"})
                mapping.write_text(
                    text.replace(
                        "\n\n", f'\nschema = "{schema}"\nrow_limit = {args.rows * 2}\n\n', 1
                    )
                )
                for into, code in codes:
                    into["postgres"] = _child("postgres", mapping, code)
            finally:
                _drop(url, schema)
        else:
            for into, _ in codes:
                into["postgres"] = "skipped: HAMANASU_TEST_POSTGRES_URL is not set"
    _report(results, before)
    if before:
        before["commit"] = _commit(args.baseline)
        results["baseline"] = before
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "results": results,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    out = ROOT / "bench" / "results" / "data_load.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"load average {os.getloadavg()}; wrote {out}")


def _report(results: dict[str, object], before: dict[str, object]) -> None:
    """Print each source's figures against the goal (and the baseline's, when measured)."""
    for kind, goal in GOALS.items():
        got = results[kind]
        if not isinstance(got, dict):
            print(f"{kind:9s} {got}")
            continue
        got["goal_s"] = goal
        got["ratio_to_goal"] = round(got["seconds"] / goal, 2)
        print(
            f"{kind:9s} {got['rows']:>9,} rows {got['seconds']:7.2f} s "
            f"{got['rows_per_s']:>10,} rows/s cpu {got['cpu_s']:.2f} s "
            f"peak {got['peak_rss_mb']:.0f} MB (goal {goal} s)"
        )
        old = before.get(kind)
        if isinstance(old, dict):
            got["speedup_vs_baseline"] = round(old["seconds"] / got["seconds"], 1)
            print(
                f"{'':9s} baseline {old['seconds']:7.2f} s {old['rows_per_s']:>10,} rows/s "
                f"cpu {old['cpu_s']:.2f} s peak {old['peak_rss_mb']:.0f} MB: {got['speedup_vs_baseline']}x faster now"
            )


if __name__ == "__main__":
    main()
