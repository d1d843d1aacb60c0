"""``make bench`` runs ``python -m bench``: every benchmark module is found and named."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_bench_lists_every_benchmark_and_refuses_an_unknown_one():
    listed = subprocess.run(
        [sys.executable, "-m", "bench", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    expected = sorted(p.stem.removesuffix("_bench") for p in (ROOT / "bench").glob("*_bench.py"))
    assert listed.stdout.split() == expected and "training" in expected
    bad = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
