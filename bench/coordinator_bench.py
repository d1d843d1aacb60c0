"""Coordinator status reads: requests per second and latency percentiles against a real
uvicorn process on loopback, with concurrent httpx clients (asyncio, one connection each) (bounded count and time).

    .venv/bin/python bench/coordinator_bench.py [--clients 16] [--seconds 10]

Writes bench/results/coordinator.json. Goal (2 cores): ≥ 500 reads/s, p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=50_000)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from coordinator.api import bootstrap_operator, open_store
    from coordinator.client import CoordinatorClient
    from coordinator.settings import load_settings

    tmp = Path(tempfile.mkdtemp(prefix="hmn-bench-"))
    op = bootstrap_operator(open_store(load_settings(data_dir=tmp))).token
    port = _port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hamanasu",
            "coordinator",
            "serve",
            "--data-dir",
            str(tmp),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=ROOT,
        env={**os.environ, "HAMANASU_ACCESS_LOG": "false"},
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        c = CoordinatorClient(url, op)
        for n in ("n0", "n1"):
            c.register_node(n)
        researcher = c.create_principal("bench", "researcher").token.token
        r = CoordinatorClient(url, researcher)
        job_ids = [
            r.submit(
                {"kind": "train", "features": ["a"], "label": "y", "privacy": {"epsilon": 1.0}}
            ).id
            for _ in range(20)
        ]
        latencies: list[float] = []
        errors = [0]
        stop_at = time.perf_counter() + args.seconds
        # Warm-up: verify the token once per process (argon2), then hit the cache.
        httpx.get(f"{url}/jobs/{job_ids[0]}", headers={"Authorization": f"Bearer {researcher}"})

        async def worker(i: int, h: httpx.AsyncClient) -> None:
            k = i
            while time.perf_counter() < stop_at and len(latencies) < args.max_requests:
                t0 = time.perf_counter()
                resp = await h.get(f"/jobs/{job_ids[k % len(job_ids)]}")
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    errors[0] += 1
                k += 1

        async def drive() -> None:
            limits = httpx.Limits(max_connections=args.clients)
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {researcher}"}, limits=limits
            ) as h:
                await asyncio.gather(*(worker(i, h) for i in range(args.clients)))

        started = time.perf_counter()
        asyncio.run(drive())
        wall = time.perf_counter() - started
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    out = {
        "what": "GET /jobs/{id} (status with approvals) by a researcher, uvicorn 1 worker, SQLite WAL",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "clients": args.clients,
        "requests": len(latencies),
        "errors": errors[0],
        "seconds": round(wall, 2),
        "reads_per_second": round(len(latencies) / wall, 1),
        "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0)},
        "goal": {"reads_per_second": 500, "p99_ms": 50},
    }
    out["meets_goal"] = out["reads_per_second"] >= 500 and out["latency_ms"]["p99"] <= 50
    path = ROOT / "bench" / "results" / "coordinator.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
