"""Mutation tests: every way of rewriting a stored ledger is detected and located."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent.errors import LedgerVerificationError, ProofError, SignatureError
from consent.ledger import Ledger
from consent.merkle import hash_leaf
from consent.verify import verify_consistency, verify_entry, verify_ledger

from .conftest import Clock, tamper, usage_payload

N = 6


@pytest.fixture
def built(tmp_path: Path, node_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "ledger.db"
    with Ledger(path, node_key, clock=Clock()) as store:
        for r in range(N):
            store.append("job.usage", usage_payload(rnd=r))
    return path


def _fails(path: Path, key: Ed25519PrivateKey, **kw: object) -> LedgerVerificationError:
    with pytest.raises(LedgerVerificationError) as info:
        verify_ledger(path, key.public_key(), **kw)  # type: ignore[arg-type]
    return info.value


def _column(path: Path, column: str, index: int) -> bytes:
    db = sqlite3.connect(path)
    (value,) = db.execute(f"SELECT {column} FROM entries WHERE idx = ?", (index,)).fetchone()
    db.close()
    return bytes(value)


def test_an_untouched_ledger_verifies(built: Path, node_key: Ed25519PrivateKey) -> None:
    report = verify_ledger(built, node_key.public_key())
    assert report.tree_size == N and report.heads_checked == N
    assert report.entries_by_kind == {"job.usage": N}
    assert report.latest_head is not None and report.latest_head.tree_size == N


@pytest.mark.parametrize("index", [0, N // 2, N - 1])
def test_flipping_any_byte_of_an_entry_is_located(
    built: Path, node_key: Ed25519PrivateKey, index: int
) -> None:
    run = tamper(built)
    original = _column(built, "data", index)
    for pos in range(len(original)):
        changed = bytearray(original)
        changed[pos] ^= 0x01
        run("UPDATE entries SET data = ? WHERE idx = ?", (bytes(changed), index))
        assert _fails(built, node_key).index == index, pos
    run("UPDATE entries SET data = ? WHERE idx = ?", (original, index))
    verify_ledger(built, node_key.public_key())


@pytest.mark.parametrize("index", [0, N - 1])
def test_flipping_any_byte_of_a_stored_leaf_hash_is_located(
    built: Path, node_key: Ed25519PrivateKey, index: int
) -> None:
    run = tamper(built)
    original = _column(built, "leaf", index)
    for pos in range(32):
        changed = bytearray(original)
        changed[pos] ^= 0x80
        run("UPDATE entries SET leaf = ? WHERE idx = ?", (bytes(changed), index))
        assert _fails(built, node_key).index == index
    run("UPDATE entries SET leaf = ? WHERE idx = ?", (original, index))


@pytest.mark.parametrize("index", [1, N - 1])
def test_rewriting_an_entry_with_a_recomputed_leaf_is_located(
    built: Path, node_key: Ed25519PrivateKey, index: int
) -> None:
    data = _column(built, "data", index).replace(b'"epsilon":0.5', b'"epsilon":0.1')
    tamper(built)(
        "UPDATE entries SET data = ?, leaf = ? WHERE idx = ?", (data, hash_leaf(data), index)
    )
    error = _fails(built, node_key)
    assert error.index == index or (error.index, error.last_index) == (index, index + 1)


def test_deleting_an_entry_is_located(built: Path, node_key: Ed25519PrivateKey) -> None:
    tamper(built)("DELETE FROM entries WHERE idx = 2")
    error = _fails(built, node_key)
    assert error.index == 2 and "missing" in error.reason


def test_deleting_and_renumbering_is_located(built: Path, node_key: Ed25519PrivateKey) -> None:
    run = tamper(built)
    run("DELETE FROM entries WHERE idx = 2")
    run("UPDATE entries SET idx = idx - 1 WHERE idx > 2")
    assert _fails(built, node_key).index == 2


def test_reordering_entries_is_located(built: Path, node_key: Ed25519PrivateKey) -> None:
    run = tamper(built)
    run("UPDATE entries SET idx = -1 WHERE idx = 1")
    run("UPDATE entries SET idx = 1 WHERE idx = 3")
    run("UPDATE entries SET idx = 3 WHERE idx = -1")
    assert _fails(built, node_key).index == 1


def test_truncating_the_ledger_is_located(built: Path, node_key: Ed25519PrivateKey) -> None:
    tamper(built)("DELETE FROM entries WHERE idx >= 4")
    error = _fails(built, node_key)
    assert (error.index, error.last_index) == (4, N - 1) and "truncated" in error.reason


def test_truncating_and_re_appending_is_located(built: Path, node_key: Ed25519PrivateKey) -> None:
    run = tamper(built)
    run("DELETE FROM entries WHERE idx >= 3")
    run("DELETE FROM nodes")
    run("DELETE FROM heads WHERE tree_size >= 3")
    # the node operator re-appends other entries with its own key
    db = sqlite3.connect(built)
    db.execute("DELETE FROM heads")
    db.commit()
    db.close()
    shutil.copy(built, built.with_suffix(".bak"))
    # rebuild a self-consistent ledger holding entries 0..2, then append different ones
    fresh = built.parent / "forged.db"
    with Ledger(fresh, node_key, clock=Clock()) as forged:
        for r in range(3):
            forged.append("job.usage", usage_payload(rnd=r))
        forged.append_many([("job.usage", usage_payload(rnd=r, n_subjects=1)) for r in range(3, N)])
    saved_head_path = built.parent / "saved"
    # the auditor's head saved before the rewrite
    orig = built.parent / "orig.db"
    with Ledger(orig, node_key, clock=Clock()) as honest:
        for r in range(N):
            honest.append("job.usage", usage_payload(rnd=r))
        saved = honest.latest_head()
    assert saved is not None
    saved_head_path.write_text(saved.model_dump_json())
    verify_ledger(fresh, node_key.public_key())  # self-consistent without the saved head
    error = _fails(fresh, node_key, since=saved)
    assert error.index is not None and error.index <= 3 <= error.last_index
    assert "rewritten or forked" in error.reason


def test_re_appending_under_old_heads_is_located_exactly(
    built: Path, node_key: Ed25519PrivateKey
) -> None:
    run = tamper(built)
    run("DELETE FROM entries WHERE idx >= 4")
    run("DELETE FROM nodes WHERE level >= 1")
    db = sqlite3.connect(built)
    db.execute("PRAGMA foreign_keys=OFF")
    db.close()
    # heads of sizes 5 and 6 remain; re-append through raw rows copied from a forged ledger
    forged = built.parent / "forged.db"
    with Ledger(forged, node_key, clock=Clock()) as other:
        for r in range(4):
            other.append("job.usage", usage_payload(rnd=r))
        other.append_many(
            [("job.usage", usage_payload(rnd=9)), ("job.usage", usage_payload(rnd=10))]
        )
    src = sqlite3.connect(forged)
    rows = src.execute("SELECT * FROM entries WHERE idx >= 4").fetchall()
    nodes = src.execute("SELECT * FROM nodes").fetchall()
    src.close()
    db = sqlite3.connect(built)
    db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?)", rows)
    db.execute("DELETE FROM nodes")
    db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", nodes)
    db.commit()
    db.close()
    error = _fails(built, node_key)
    assert (error.index, error.last_index) == (4, 4)


def test_tampered_merkle_nodes_are_located(built: Path, node_key: Ed25519PrivateKey) -> None:
    tamper(built)("UPDATE nodes SET hash = ? WHERE level = 1 AND pos = 1", (b"\x00" * 32,))
    error = _fails(built, node_key)
    assert (error.index, error.last_index) == (2, 3)


def test_a_forged_or_foreign_head_fails(
    built: Path, node_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    db = sqlite3.connect(built)
    (sth,) = db.execute("SELECT sth FROM heads ORDER BY id LIMIT 1").fetchone()
    db.close()
    tamper(built)(
        "UPDATE heads SET sth = ? WHERE id = 1", (sth.replace('"tree_size":1', '"tree_size":2'),)
    )
    assert "signature" in _fails(built, node_key).reason
    with pytest.raises(LedgerVerificationError):
        verify_ledger(built, other_key.public_key())


def test_entries_after_the_last_signed_head_fail(
    tmp_path: Path, node_key: Ed25519PrivateKey
) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, node_key) as store:
        store.append("job.usage", usage_payload())
    with Ledger(path) as unsigned:  # opened without the key
        unsigned.append("job.usage", usage_payload(rnd=2))
    error = _fails(path, node_key)
    assert (error.index, error.last_index) == (1, 1) and "not covered" in error.reason


def test_since_head_consistency(tmp_path: Path, node_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, node_key, clock=Clock()) as store:
        store.append_many([("job.usage", usage_payload(rnd=r)) for r in range(3)])
        old = store.sign_head()
        store.append_many([("job.usage", usage_payload(rnd=r)) for r in range(3, 9)])
        new = store.latest_head()
        assert new is not None
        report = verify_ledger(path, node_key.public_key(), since=old)
        assert report.since_tree_size == 3
        verify_consistency(old, new, store.consistency_proof(3, 9), node_key.public_key())
        with pytest.raises(ProofError):
            verify_consistency(old, new, store.consistency_proof(2, 9))
        proof = store.inclusion_proof(4, 9)
        verify_entry(store.entry_bytes(4), 4, proof, new, node_key.public_key())
        with pytest.raises(ProofError):
            verify_entry(store.entry_bytes(5), 4, proof, new, node_key.public_key())
        with pytest.raises(SignatureError):
            verify_entry(
                store.entry_bytes(4),
                4,
                proof,
                new.model_copy(update={"tree_size": 8}),
                node_key.public_key(),
            )
    too_big = new.model_copy(update={"tree_size": 12})
    with pytest.raises(LedgerVerificationError):
        verify_ledger(path, node_key.public_key(), since=too_big)


def test_missing_or_foreign_files_fail_cleanly(tmp_path: Path, node_key: Ed25519PrivateKey) -> None:
    with pytest.raises(LedgerVerificationError, match="does not exist"):
        verify_ledger(tmp_path / "nope.db", node_key.public_key())
    (tmp_path / "x.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(LedgerVerificationError, match="not a readable ledger"):
        verify_ledger(tmp_path / "x.db", node_key.public_key())


def test_an_entry_rewritten_as_text_is_located(built: Path, node_key: Ed25519PrivateKey) -> None:
    text = _column(built, "data", 2).decode()
    tamper(built)("UPDATE entries SET data = ? WHERE idx = 2", (text,))
    err = _fails(built, node_key)
    assert err.index == 2 and "not stored as bytes" in str(err)
