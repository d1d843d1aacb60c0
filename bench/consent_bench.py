"""Benchmarks of the consent package (figures, not tests).

Run: ``.venv/bin/python bench/consent_bench.py [--quick]``. Prints each figure and writes
``bench/results/consent.json``.

* ledger appends per second, batched (``append_many``, 10,000 per batch) and one by one
* full verification of a ledger of N entries (1,000,000; 100,000 with --quick)
* inclusion and consistency proof time from the stored tree
* vectorised consent evaluation for 1,000,000 subjects (dict of consents and registry)
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consent.evaluate import evaluate_many  # noqa: E402
from consent.ledger import Ledger, subject_commitment  # noqa: E402
from consent.model import Consent, Provision, UseRequest  # noqa: E402
from consent.registry import ConsentRegistry  # noqa: E402
from consent.verify import verify_inclusion, verify_ledger  # noqa: E402

T0 = datetime(2025, 4, 1, tzinfo=UTC)


def usage(i: int) -> tuple[str, dict[str, object]]:
    return (
        "job.usage",
        {
            "job_id": f"job-{i // 100}",
            "round": i % 100,
            "purpose": ["HMB", "IRB"],
            "requester": "hokudai",
            "requester_type": "academic",
            "domain": "births",
            "n_subjects": 1000 + i % 50,
            "subject_commitment": f"{i:064x}",
            "epsilon": 0.25,
            "delta": 1e-6,
        },
    )


def bench_ledger(n: int, work: Path, results: dict[str, object]) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    path = work / "ledger.db"
    batch = 10_000
    ledger = Ledger(path, key, clock=lambda: T0)
    start = time.perf_counter()
    for lo in range(0, n, batch):
        ledger.append_many([usage(i) for i in range(lo, min(n, lo + batch))])
    elapsed = time.perf_counter() - start
    results["appends_per_second_batched"] = round(n / elapsed)
    results["ledger_entries"] = n
    print(f"appends, batched by {batch}: {n / elapsed:,.0f}/s ({n:,} entries in {elapsed:.1f} s)")

    single = 300
    start = time.perf_counter()
    for i in range(single):
        ledger.append(*usage(n + i))
    elapsed = time.perf_counter() - start
    results["appends_per_second_single"] = round(single / elapsed)
    print(f"appends, one transaction + signed head each: {single / elapsed:,.0f}/s")
    size = ledger.size

    rng = random.Random(7)
    picks = [rng.randrange(size) for _ in range(1000)]
    root = ledger.root()
    start = time.perf_counter()
    proofs = [ledger.inclusion_proof(i, size) for i in picks]
    gen = (time.perf_counter() - start) / len(picks)
    start = time.perf_counter()
    for i, p in zip(picks, proofs, strict=True):
        verify_inclusion(ledger.leaf_hash(i), i, size, p, root)
    check = (time.perf_counter() - start) / len(picks)
    start = time.perf_counter()
    for _ in range(100):
        ledger.consistency_proof(rng.randrange(1, size), size)
    cons = (time.perf_counter() - start) / 100
    results["inclusion_proof_ms"] = round(gen * 1e3, 3)
    results["inclusion_verify_ms"] = round(check * 1e3, 3)
    results["consistency_proof_ms"] = round(cons * 1e3, 3)
    print(
        f"inclusion proof in a tree of {size:,}: {gen * 1e3:.3f} ms to make, "
        f"{check * 1e3:.3f} ms to check; consistency proof {cons * 1e3:.3f} ms"
    )
    ledger.close()

    start = time.perf_counter()
    report = verify_ledger(path, key.public_key())
    full = time.perf_counter() - start
    start = time.perf_counter()
    verify_ledger(path, key.public_key(), check_canonical=False)
    fast = time.perf_counter() - start
    results["full_verification_seconds"] = round(full, 2)
    results["full_verification_without_canonical_check_seconds"] = round(fast, 2)
    results["verified_entries"] = report.tree_size
    print(
        f"full verification of {report.tree_size:,} entries ({report.heads_checked} signed "
        f"heads): {full:.1f} s (without the RFC 8785 re-encoding check: {fast:.1f} s)"
    )


def bench_consents(n: int, work: Path, results: dict[str, object]) -> None:
    shapes = [
        Consent(
            id="s",
            subject="x",
            status="active",
            decision="deny",
            recorded_at=T0,
            provisions=(Provision(purposes=("HMB", "GRU", "NCU"), domains=("births",)),),
        ),
        Consent(id="s", subject="x", status="active", decision="permit", recorded_at=T0),
        Consent(id="s", subject="x", status="inactive", decision="permit", recorded_at=T0),
        Consent(
            id="s",
            subject="x",
            status="active",
            decision="permit",
            recorded_at=T0,
            provisions=(
                Provision(purposes=("GRU",), domains=("purchases",)),
                Provision(purposes=("NCU",)),
            ),
        ),
        Consent(id="s", subject="x", status="active", decision="deny", recorded_at=T0),
    ]
    rng = random.Random(11)
    subjects = [f"{i:016x}" for i in range(n)]
    picks = [rng.randrange(len(shapes)) for _ in range(n)]
    by_subject = {s: shapes[p] for s, p in zip(subjects, picks, strict=True)}
    request = UseRequest(codes=["HMB"], time=T0 + timedelta(days=30), domain="births")
    start = time.perf_counter()
    allowed = evaluate_many(by_subject, subjects, request)
    elapsed = time.perf_counter() - start
    results["evaluate_many_dict_seconds"] = round(elapsed, 3)
    results["evaluate_many_subjects"] = n
    print(
        f"evaluate_many over {n:,} subjects (dict): {elapsed:.2f} s, "
        f"{int(allowed.sum()):,} permitted"
    )

    registry = ConsentRegistry(work / "consents.db")
    start = time.perf_counter()
    registry.import_consents(
        [
            shapes[p].model_copy(update={"subject": s, "id": f"c{i}"})
            for i, (s, p) in enumerate(zip(subjects, picks, strict=True))
        ]
    )
    imported = time.perf_counter() - start
    start = time.perf_counter()
    first = registry.permitted(subjects, request)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    again = registry.permitted(subjects, request.model_copy(update={"domain": "purchases"}))
    warm = time.perf_counter() - start
    assert (first == allowed).all() and again.dtype == bool
    results["registry_import_seconds"] = round(imported, 1)
    results["registry_permitted_cold_seconds"] = round(cold, 3)
    results["registry_permitted_warm_seconds"] = round(warm, 3)
    print(
        f"registry: import {n:,} consents {imported:.1f} s; permitted() {cold:.2f} s cold "
        f"(loads the index), {warm:.2f} s warm"
    )
    salt = bytes(range(16))
    start = time.perf_counter()
    subject_commitment(subjects, salt)
    results["subject_commitment_seconds"] = round(time.perf_counter() - start, 3)
    print(f"subject commitment over {n:,} pseudonyms: {results['subject_commitment_seconds']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 entries/subjects")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    results: dict[str, object] = {
        "quick": args.quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "goals": {
            "appends_per_second_batched": ">= 20000",
            "full_verification_seconds": "<= 15 (1,000,000 entries)",
            "evaluate_many_dict_seconds": "<= 2 (1,000,000)",
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        bench_ledger(n, Path(tmp), results)
        bench_consents(n, Path(tmp), results)
    out = ROOT / "bench" / "results" / "consent.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
