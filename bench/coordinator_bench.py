"""Coordinator status reads: requests per second and latency percentiles on loopback.

The bench starts ``hamanasu coordinator serve`` (uvicorn, one worker, access log off) as
its own process, sets up a consortium through the HTTP API (an operator, three nodes, a
researcher, 20 jobs, one node's approval recorded on each), then drives
``GET /jobs/{id}`` with the researcher's bearer token from a separate load-generator
process: ``wrk`` (C, one thread, ``--clients`` keep-alive connections) when installed,
else a Python process with asyncio httpx clients. It measures SQLite (a file under a
temporary data folder) and PostgreSQL (a fresh database created on the server given by
``--postgres`` and dropped afterwards), each ``--runs`` times::

    .venv/bin/python bench/coordinator_bench.py [--clients 8] [--seconds 10] [--runs 2]
        [--backend sqlite|postgres|both] [--postgres URL] [--load wrk|httpx]
        [--baseline DIR --baseline-label COMMIT] [--access-log] [--no-write]

With ``--baseline DIR`` (an older tree: ``git archive COMMIT | tar -x -C DIR``) a second
server runs that code beside this one and the load runs alternate between the two, so
the reported ratios compare them under the same machine load.

Writes bench/results/coordinator.json (unless ``--no-write``). Goal (2 cores): ≥ 500
reads/s, p99 ≤ 50 ms. The machine's cores are shared by the server, the load generator
and anything else running, so figures are noisy: compare runs made together.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL = {"reads_per_second": 500, "p99_ms": 50}
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system, all threads) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _postgres_database(admin_url: str) -> Iterator[str]:
    """Create a throw-away database on the server of ``admin_url``; yield its URL."""
    import psycopg
    from sqlalchemy import make_url

    url = make_url(admin_url)
    name = f"hmn_bench_{uuid.uuid4().hex[:10]}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _server(
    code: Path, data_dir: Path, database_url: str | None, access_log: bool = False
) -> Iterator[tuple[str, str, int]]:
    """Initialise a database and start ``coordinator serve``, both from the tree ``code``.

    Yields:
        The server's URL, the first operator's token and the server's pid.
    """
    env = {**os.environ, "HAMANASU_ACCESS_LOG": str(access_log).lower(), "PYTHONPATH": str(code)}
    env.pop("HAMANASU_CONFIG", None)
    if database_url:
        env["HAMANASU_DATABASE_URL"] = database_url
    cli = [sys.executable, "-m", "hamanasu", "coordinator"]
    token_file = data_dir / "operator.token"
    subprocess.run(
        [*cli, "init", "--data-dir", str(data_dir), "--token-out", str(token_file)],
        cwd=code,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    op = token_file.read_text().strip()
    port = _port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*cli, "serve", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=code,
        env=env,
    )
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"coordinator serve exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url, op, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _consortium(url: str, op: str, jobs: int = 20) -> tuple[str, list[str]]:
    """Register nodes, a researcher and a node admin; submit jobs, approve each on one node.

    Returns:
        The researcher's token and the job ids.
    """
    from coordinator.client import CoordinatorClient

    c = CoordinatorClient(url, op)
    for n in ("n0", "n1", "n2"):
        c.register_node(n)
    c.register_organisation("bench-university", "academic", {"bench": False})
    researcher = c.create_principal("bench", "researcher", None, "bench-university").token.token
    admin = c.create_principal("bench-admin", "node_admin", "n0").token.token
    r = CoordinatorClient(url, researcher)
    spec = {
        "kind": "train",
        "features": ["a"],
        "label": "y",
        "min_nodes": 2,
        "privacy": {"epsilon": 1.0},
    }
    ids = [r.submit(spec).id for _ in range(jobs)]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as h:
        for job_id in ids:
            resp = h.post(f"/nodes/n0/jobs/{job_id}/decision", json={"outcome": "approve"})
            resp.raise_for_status()
    # Warm-up: the first read verifies the token (a keyed hash); later ones hit the cache.
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {researcher}"}) as h:
        for job_id in ids:
            h.get(f"/jobs/{job_id}").raise_for_status()
    return researcher, ids


_WRK_LUA = """
ids = {%s}
i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/jobs/" .. ids[(i %% #ids) + 1], {["Authorization"] = "Bearer %s"})
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"seconds\\": %%f, \\"non2xx\\": %%d, "
    .. "\\"errors\\": %%d, \\"p50\\": %%f, \\"p90\\": %%f, \\"p99\\": %%f, \\"max\\": %%f}\\n",
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
"""


def _load_wrk(url: str, token: str, ids: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """Drive the server with wrk; return requests, seconds, errors and latency (ms)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_LUA % (", ".join(f'"{i}"' for i in ids), token))
        script = f.name
    try:
        os.chmod(script, 0o600)  # it holds the researcher's token
        out = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "-s", script, url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    m = re.search(r"^JSON (\{.*\})$", out, re.M)
    if m is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    raw = json.loads(m.group(1))
    return {
        "requests": raw["requests"],
        "seconds": round(raw["seconds"], 2),
        "errors": raw["non2xx"] + raw["errors"],
        "latency_ms": {k: round(raw[k], 2) for k in ("p50", "p90", "p99", "max")},
    }


def _httpx_worker(
    url: str, token: str, ids: list[str], clients: int, seconds: float, q: Any
) -> None:
    """Load generator process: ``clients`` asyncio httpx connections for ``seconds``."""
    import asyncio

    latencies: list[float] = []
    errors = [0]

    async def one(i: int, h: httpx.AsyncClient, stop_at: float) -> None:
        k = i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            resp = await h.get(f"/jobs/{ids[k % len(ids)]}")
            latencies.append(time.perf_counter() - t0)
            errors[0] += resp.status_code != 200
            k += 1

    async def drive() -> None:
        async with httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            limits=httpx.Limits(max_connections=clients),
        ) as h:
            stop_at = time.perf_counter() + seconds
            await asyncio.gather(*(one(i, h, stop_at) for i in range(clients)))

    started = time.perf_counter()
    asyncio.run(drive())
    q.put((latencies, errors[0], time.perf_counter() - started))


def _load_httpx(
    url: str, token: str, ids: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    """Drive the server from a separate Python process; return figures as :func:`_load_wrk`."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_httpx_worker, args=(url, token, ids, clients, seconds, q))
    p.start()
    latencies, errors, wall = q.get(timeout=seconds + 120)
    p.join(30)
    latencies.sort()

    def pct(x: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(x * len(latencies)))] * 1000, 2)

    return {
        "requests": len(latencies),
        "seconds": round(wall, 2),
        "errors": errors,
        "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)},
    }


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Measure ``args.runs`` load runs on ``backend``: this tree, and the baseline if given.

    Both servers (each with its own database) are up at once and the load runs alternate
    between them, so a pair of runs sees the same machine load.

    Returns:
        The runs of each tree: ``{"current": [...], "baseline": [...]}``.
    """
    trees = {"current": ROOT}
    if args.baseline:
        trees["baseline"] = Path(args.baseline).resolve()
    load = _load_wrk if args.load == "wrk" else _load_httpx
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    tmp = Path(tempfile.mkdtemp(prefix="hmn-bench-"))
    try:
        with ExitStack() as stack:
            servers = {}
            for label, code in trees.items():
                db_url = stack.enter_context(
                    _postgres_database(args.postgres) if backend == "postgres" else _nullctx()
                )
                data_dir = tmp / label
                data_dir.mkdir(mode=0o700)
                url, op, pid = stack.enter_context(_server(code, data_dir, db_url, args.access_log))
                servers[label] = (url, pid, *_consortium(url, op))
            if args.hold:
                for label, (url, _, token, ids) in servers.items():
                    token_file = tmp / f"{label}.token"  # never printed: a 0600 file
                    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w") as fh:
                        fh.write(token + "\n")
                    print(f"{label}: {url}  token in {token_file}  job {ids[0]}", flush=True)
                print("(Ctrl-C ends)", flush=True)
                try:
                    while True:
                        time.sleep(1)
                except KeyboardInterrupt:
                    return runs
            for _ in range(args.runs):
                for label, (url, pid, token, ids) in servers.items():
                    cpu0 = _cpu_seconds(pid)
                    r = load(url, token, ids, args.clients, args.seconds)
                    # CPU the server spent per request: less moved than reads/s by what
                    # else runs on the machine (not immune: caches and cores are shared).
                    cpu = _cpu_seconds(pid) - cpu0
                    r["server_cpu_ms_per_request"] = round(cpu * 1000 / max(1, r["requests"]), 3)
                    r["reads_per_second"] = round(r["requests"] / r["seconds"], 1)
                    r["meets_goal"] = (
                        r["reads_per_second"] >= GOAL["reads_per_second"]
                        and r["latency_ms"]["p99"] <= GOAL["p99_ms"]
                        and r["errors"] == 0
                    )
                    print(
                        f"{backend:9s} {label:9s} {r['reads_per_second']:8.1f} reads/s  "
                        f"p50 {r['latency_ms']['p50']:6.2f} ms  "
                        f"p99 {r['latency_ms']['p99']:6.2f} ms  "
                        f"server CPU {r['server_cpu_ms_per_request']:.3f} ms/req  "
                        f"errors {r['errors']}",
                        flush=True,
                    )
                    runs[label].append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return runs


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "reads_per_second": [r["reads_per_second"] for r in runs],
        "p50_ms": [r["latency_ms"]["p50"] for r in runs],
        "p99_ms": [r["latency_ms"]["p99"] for r in runs],
        "server_cpu_ms_per_request": [r["server_cpu_ms_per_request"] for r in runs],
        "meets_goal": bool(runs) and all(r["meets_goal"] for r in runs),
    }


@contextmanager
def _nullctx() -> Iterator[None]:
    yield None


def main() -> None:
    """Run the bench; print a line per run and write bench/results/coordinator.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8, help="concurrent keep-alive connections")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each load run")
    ap.add_argument("--runs", type=int, default=2, help="load runs per backend")
    ap.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    ap.add_argument("--postgres", default=os.environ.get("HAMANASU_TEST_POSTGRES_URL", DEFAULT_PG))
    ap.add_argument("--load", choices=("wrk", "httpx"), default=None)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--access-log", action="store_true", help="serve with uvicorn's access log on")
    ap.add_argument(
        "--hold", action="store_true", help="set up the servers and keep them (profiling)"
    )
    ap.add_argument(
        "--baseline",
        default=None,
        help="a folder holding an older tree (git archive COMMIT | tar -x -C DIR): its server "
        "runs beside this one, load runs alternate, ratios are reported",
    )
    ap.add_argument("--baseline-label", default=None, help="what the baseline is (e.g. a commit)")
    args = ap.parse_args()
    if args.load is None:
        args.load = "wrk" if shutil.which("wrk") else "httpx"
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    load_before = os.getloadavg()[0]
    results = {b: bench_backend(b, args) for b in backends}
    load_after = os.getloadavg()[0]
    if args.hold:
        return
    out: dict[str, Any] = {
        "what": "GET /jobs/{id} (status with 3 approvals) by a researcher with a bearer token; "
        "hamanasu coordinator serve (uvicorn, 1 worker, access log "
        f"{'on' if args.access_log else 'off'}) in its own process",
        "load_generator": (
            f"wrk, 1 thread, {args.clients} keep-alive connections (own process)"
            if args.load == "wrk"
            else f"httpx asyncio, {args.clients} connections (own process)"
        ),
        "workers": 1,
        "access_log": args.access_log,
        "cpus": os.cpu_count(),
        # The machine's 1-minute load average before and after: above the CPU count, the
        # server, the database and wrk were waiting for cores taken by other work.
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "python": platform.python_version(),
        "clients": args.clients,
        "seconds_per_run": args.seconds,
        "goal": GOAL,
        "baseline": args.baseline_label,
        "backends": {},
    }
    for b, by_tree in results.items():
        entry: dict[str, Any] = {"runs": by_tree["current"], **_summary(by_tree["current"])}
        if "baseline" in by_tree:
            base = by_tree["baseline"]
            entry["baseline"] = {"runs": base, **_summary(base)}
            # Paired runs (alternating, same machine load): current / baseline.
            entry["ratio_to_baseline"] = {
                "reads_per_second": [
                    round(c["reads_per_second"] / max(0.1, o["reads_per_second"]), 2)
                    for c, o in zip(by_tree["current"], base, strict=True)
                ],
                "server_cpu_ms_per_request": [
                    round(
                        c["server_cpu_ms_per_request"] / max(1e-6, o["server_cpu_ms_per_request"]),
                        2,
                    )
                    for c, o in zip(by_tree["current"], base, strict=True)
                ],
            }
        out["backends"][b] = entry
    out["meets_goal"] = all(v["meets_goal"] for v in out["backends"].values())
    if not args.no_write:
        path = ROOT / "bench" / "results" / "coordinator.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps(
            {
                b: {
                    k: ({kk: vv for kk, vv in v.items() if kk != "runs"} if k == "baseline" else v)
                    for k, v in d.items()
                    if k != "runs"
                }
                for b, d in out["backends"].items()
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
