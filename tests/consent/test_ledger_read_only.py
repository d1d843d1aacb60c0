"""``hamanasu audit head`` and ``audit proof`` only read the ledger.

An auditor examines a node's ledger (often the files copied from a node that stopped,
WAL included): reading it must leave every byte and every modification time as it was,
and a file the auditor may not write must do.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent.errors import LedgerUnreadableError
from consent.ledger import Ledger
from consent.signing import generate_key

from .conftest import Clock, tamper, usage_payload
from .conftest import audit_cli as _audit

N = 7


def _state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time of the ledger file and of its WAL when it holds any.

    SQLite's ``-shm`` file is the WAL's shared-memory index, not ledger content, and a
    reader may leave an empty WAL behind where there was none: neither changes the ledger.
    """
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
        if p.name == "ledger.db" or (p.name == "ledger.db-wal" and p.stat().st_size > 0)
    }


@pytest.fixture
def copied(tmp_path: Path, node_key: Ed25519PrivateKey) -> dict[str, Path]:
    """A node's ledger as copied from a node that stopped: the file and its WAL, whose
    newest commits were never checkpointed into the file."""
    generate_key(tmp_path / "node.key", private_key=node_key)
    live = tmp_path / "live.db"
    writer = Ledger(live, node_key, clock=Clock())
    writer._db.execute("PRAGMA wal_autocheckpoint=0")  # keep every commit in the WAL
    for r in range(N):
        writer.append("job.usage", usage_payload(rnd=r))
    audit = tmp_path / "audit"
    audit.mkdir()
    shutil.copyfile(live, audit / "ledger.db")
    shutil.copyfile(f"{live}-wal", audit / "ledger.db-wal")
    writer.close()
    return {"ledger": audit / "ledger.db", "pub": tmp_path / "node.key.pub", "dir": tmp_path}


def test_head_and_proof_leave_the_ledger_and_its_wal_untouched(copied: dict[str, Path]) -> None:
    folder = copied["ledger"].parent
    before = _state(folder)
    assert set(before) == {"ledger.db", "ledger.db-wal"} and before["ledger.db-wal"][0]
    head = _audit("head", copied["ledger"], "--out", copied["dir"] / "head.json")
    assert head.returncode == 0, head.stderr
    assert json.loads((copied["dir"] / "head.json").read_text())["tree_size"] == N
    proof = _audit(
        "proof", copied["ledger"], "--index", 4, "--key", copied["pub"], "--format", "json"
    )
    assert proof.returncode == 0, proof.stderr
    assert json.loads(proof.stdout)["tree_size"] == N
    assert _state(folder) == before


def test_head_and_proof_work_on_a_file_nobody_may_write(copied: dict[str, Path]) -> None:
    folder = copied["ledger"].parent
    for p in folder.iterdir():
        p.chmod(0o444)
    folder.chmod(0o555)
    try:
        before = _state(folder)
        head = _audit("head", copied["ledger"], "--out", copied["dir"] / "head.json")
        assert head.returncode == 0, head.stderr
        proof = _audit("proof", copied["ledger"], "--index", 0, "--key", copied["pub"])
        assert proof.returncode == 0, proof.stderr
        assert _state(folder) == before
        assert stat.S_IMODE(copied["ledger"].stat().st_mode) == 0o444
    finally:
        folder.chmod(0o755)


def test_a_read_only_ledger_refuses_writes_even_to_a_superuser(copied: dict[str, Path]) -> None:
    """Permission bits do not bind root; SQLite's read-only mode does, for every user."""
    with Ledger(copied["ledger"], read_only=True) as store:
        assert store.size == N and store.latest_head() is not None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store._db.execute("INSERT INTO meta VALUES ('x', 'y')")
    assert os.access(copied["ledger"], os.R_OK)


def test_a_read_only_open_of_a_ledger_without_its_format_marker_is_unreadable(
    copied: dict[str, Path],
) -> None:
    tamper(copied["ledger"])("DROP TABLE meta")
    before = _state(copied["ledger"].parent)
    with pytest.raises(LedgerUnreadableError, match="no such table: meta"):
        Ledger(copied["ledger"], read_only=True)
    head = _audit("head", copied["ledger"], "--out", copied["dir"] / "head.json")
    assert head.returncode == 2 and head.stderr.startswith("error: cannot read ledger")
    assert head.stderr.count("\n") == 1, head.stderr
    assert _state(copied["ledger"].parent) == before  # the table was not quietly made again
