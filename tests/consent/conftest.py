from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent.ledger import Ledger

VECTORS = Path(__file__).parent / "vectors"
ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def node_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(tmp_path: Path, node_key: Ed25519PrivateKey, clock: Clock) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db", node_key, clock=clock) as store:
        yield store


def usage_payload(job: str = "job-1", rnd: int = 1, **extra: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "job_id": job,
        "round": rnd,
        "purpose": ["HMB"],
        "requester": "hokudai",
        "requester_type": "academic",
        "n_subjects": 3,
        "subject_commitment": "ab" * 32,
        "epsilon": 0.5,
        "delta": 1e-6,
        "domain": "births",
    }
    payload.update(extra)
    return payload


def tamper(path: Path) -> Callable[[str, tuple[object, ...]], None]:
    """Return a function running raw SQL on the ledger with its guard triggers dropped."""

    def run(sql: str, params: tuple[object, ...] = ()) -> None:
        db = sqlite3.connect(path)
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            db.execute(f"DROP TRIGGER {name}")
        db.execute(sql, params)
        db.commit()
        db.close()

    return run


def audit_cli(*args: object) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hamanasu audit ARGS`` in a subprocess; return its result."""
    return subprocess.run(
        [sys.executable, "-m", "hamanasu", "audit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
