"""Attacks on stored ledger files, checked through the real ``hamanasu audit`` command.

Each case mutates a real ledger file the way an attacker (or a failing disk) could and
runs ``hamanasu audit ...``: the answer is exit 1 with one ``error:`` line when the
ledger was read and does not hold, exit 2 with one line when it cannot be read at all,
and never a traceback. The cases in ``REAL_PROCESS`` and the tests after the tables run
``python -m hamanasu`` as a subprocess; the other cases call the same entry point in this
process (a traceback escaping it fails the test), saving an interpreter start each.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent.ledger import Ledger
from consent.signing import generate_key

from .conftest import Clock, tamper, usage_payload
from .conftest import audit_cli as _audit

N = 11  # three levels of complete subtrees, plus a ragged right edge
DEEP = 100_000  # far deeper than any JSON parser recurses


def _one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def signed(tmp_path: Path, node_key: Ed25519PrivateKey) -> dict[str, Path]:
    key = tmp_path / "node.key"
    generate_key(key, private_key=node_key)
    path = tmp_path / "ledger.db"
    with Ledger(path, node_key, clock=Clock()) as store:
        for r in range(N):
            store.append("job.usage", usage_payload(rnd=r))
    return {"ledger": path, "pub": tmp_path / "node.key.pub", "dir": tmp_path}


def _nested_entry(path: Path) -> None:
    """Entry 3 becomes deeply nested JSON, stored with its recomputed leaf hash."""
    data = b'{"at":' + b"[" * DEEP + b"]" * DEEP + b"}"
    leaf = hashlib.sha256(b"\x00" + data).digest()
    tamper(path)("UPDATE entries SET data = ?, leaf = ? WHERE idx = 3", (data, leaf))


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database, just text " * 200)


def _half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _sql(statement: str, params: tuple[object, ...] = ()) -> Callable[[Path], None]:
    return lambda path: tamper(path)(statement, params)


CANNOT_READ = {
    "heads table dropped": (_sql("DROP TABLE heads"), "no such table: heads"),
    "nodes table dropped": (_sql("DROP TABLE nodes"), "no such table: nodes"),
    "entries table dropped": (_sql("DROP TABLE entries"), "no such table: entries"),
    "leaf column dropped": (_sql("ALTER TABLE entries DROP COLUMN leaf"), "no such column: leaf"),
    "not SQLite": (_garbage, "not a readable ledger"),
    "file cut in half": (_half, "cannot read ledger"),
    "empty file": (lambda p: p.write_bytes(b""), "no such table: entries"),
}

FAILS = {
    "deeply nested entry": (_nested_entry, 3, "not a well-formed ledger entry"),
    "deeply nested signed head": (
        _sql("UPDATE heads SET sth = ? WHERE id = 2", ("[" * DEEP + "]" * DEEP,)),
        None,
        "signed head #2 is malformed",
    ),
    "stored head size lowered": (
        _sql("UPDATE heads SET tree_size = 3 WHERE id = 11"),
        None,
        "signed head #11 is stored as size 3, signed 11",
    ),
    "Merkle node row deleted": (
        _sql("DELETE FROM nodes WHERE level = 1 AND pos = 2"),
        4,
        "(level 1, position 2) is missing",
    ),
    "top Merkle node deleted": (
        _sql("DELETE FROM nodes WHERE level = 3 AND pos = 0"),
        0,
        "(level 3, position 0) is missing",
    ),
    "Merkle node row altered": (
        _sql("UPDATE nodes SET hash = ? WHERE level = 2 AND pos = 1", (b"\x07" * 32,)),
        4,
        "does not match the entries it covers",
    ),
    "Merkle node row added": (
        _sql("INSERT INTO nodes VALUES (1, 5, ?)", (b"\x07" * 32,)),
        None,
        "lies outside the tree",
    ),
    "Merkle node at an absurd level": (
        _sql("INSERT INTO nodes VALUES (?, 0, ?)", (10**15, b"\x07" * 32)),
        None,
        "lies outside the tree",
    ),
    "Merkle node position not a number": (
        _sql("INSERT INTO nodes VALUES (1, 'x', ?)", (b"\x07" * 32,)),
        None,
        "non-integer position",
    ),
}


#: Every table of the ledger format, and what each kind of change to it must give: the
#: exit code (1: read and does not hold; 2: cannot be read) and a fragment of the line.
TABLES = ("entries", "heads", "meta", "nodes")
TABLE_ATTACKS: dict[tuple[str, str], tuple[Callable[[Path], None], int, str]] = {
    ("entries", "drop"): (_sql("DROP TABLE entries"), 2, "no such table: entries"),
    ("entries", "delete"): (_sql("DELETE FROM entries WHERE idx = 5"), 1, "entry 5 is missing"),
    ("entries", "delete last"): (
        _sql("DELETE FROM entries WHERE idx = ?", (N - 1,)),
        1,
        "entries were deleted (truncated)",
    ),
    ("entries", "alter"): (
        _sql("UPDATE entries SET kind = 'consent.recorded' WHERE idx = 2"),
        1,
        "moved, reordered or relabelled",
    ),
    ("heads", "drop"): (_sql("DROP TABLE heads"), 2, "no such table: heads"),
    ("heads", "delete"): (
        _sql("DELETE FROM heads WHERE id = 4"),
        1,
        "signed head #4 is missing (the next stored head is #5)",
    ),
    ("heads", "delete last"): (
        _sql("DELETE FROM heads WHERE id = ?", (N,)),
        1,
        "not covered by any signed tree head",
    ),
    ("heads", "alter"): (
        _sql("UPDATE heads SET sth = replace(sth, '\"tree_size\":6', '\"tree_size\":5')"),
        1,
        "signed head #6",
    ),
    ("meta", "drop"): (_sql("DROP TABLE meta"), 2, "no such table: meta"),
    ("meta", "delete"): (_sql("DELETE FROM meta"), 2, "its meta table holds nothing"),
    ("meta", "alter"): (
        _sql("UPDATE meta SET value = 'hamanasu-ledger-9'"),
        2,
        "not a hamanasu-ledger-1 ledger",
    ),
    ("meta", "add"): (
        _sql("INSERT INTO meta VALUES ('trusted', 'yes')"),
        2,
        "not a hamanasu-ledger-1 ledger",
    ),
    ("nodes", "drop"): (_sql("DROP TABLE nodes"), 2, "no such table: nodes"),
    ("nodes", "delete"): (
        _sql("DELETE FROM nodes WHERE level = 1 AND pos = 0"),
        1,
        "(level 1, position 0) is missing",
    ),
    ("nodes", "alter"): (
        _sql("UPDATE nodes SET hash = ? WHERE level = 1 AND pos = 3", (b"\x01" * 32,)),
        1,
        "does not match the entries it covers",
    ),
}


#: Cases run as a real process: each kind of answer (exit 1, exit 2) of each test.
REAL_PROCESS = {("entries", "delete"), ("meta", "drop"), "not SQLite", "deeply nested entry"}


def _verify(runner: Callable[..., subprocess.CompletedProcess[str]], case: object, *args: object):
    """Run ``hamanasu audit verify ARGS``, as a process for the cases in REAL_PROCESS."""
    return _audit("verify", *args) if case in REAL_PROCESS else runner("audit", "verify", *args)


def test_the_table_attacks_cover_every_table_of_the_format(signed: dict[str, Path]) -> None:
    db = sqlite3.connect(signed["ledger"])
    stored = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert stored == set(TABLES)
    for table in TABLES:
        assert {op for t, op in TABLE_ATTACKS if t == table} >= {"drop", "delete", "alter"}


@pytest.mark.parametrize("table, change", sorted(TABLE_ATTACKS))
def test_every_change_to_every_table_is_caught_with_its_own_exit_code(
    signed: dict[str, Path], table: str, change: str, hamanasu_in_process
) -> None:
    mutate, code, fragment = TABLE_ATTACKS[table, change]
    mutate(signed["ledger"])
    result = _verify(hamanasu_in_process, (table, change), signed["ledger"], "--key", signed["pub"])
    _one_line(result, code, fragment)
    if code == 2:
        assert "cannot read ledger" in result.stderr and result.stdout == "", result.stdout


@pytest.mark.parametrize("case", sorted(CANNOT_READ))
def test_a_ledger_that_cannot_be_read_is_one_line_and_exit_2(
    signed: dict[str, Path], case: str, hamanasu_in_process
) -> None:
    mutate, fragment = CANNOT_READ[case]
    mutate(signed["ledger"])
    result = _verify(hamanasu_in_process, case, signed["ledger"], "--key", signed["pub"])
    _one_line(result, 2, fragment)


@pytest.mark.parametrize("case", sorted(FAILS))
def test_a_tampered_ledger_fails_in_one_line_with_exit_1(
    signed: dict[str, Path], case: str, hamanasu_in_process
) -> None:
    mutate, first_bad, fragment = FAILS[case]
    mutate(signed["ledger"])
    args = (signed["ledger"], "--key", signed["pub"], "--format", "json")
    result = _verify(hamanasu_in_process, case, *args)
    _one_line(result, 1, "ledger verification failed", fragment)
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["first_bad_index"] == first_bad


def test_the_untouched_ledger_verifies_through_the_cli(signed: dict[str, Path]) -> None:
    result = _audit("verify", signed["ledger"], "--key", signed["pub"], "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tree_size"] == N
    helped = _audit("verify", "--help")
    assert helped.returncode == 0
    assert "Exit 1: verification failed" in helped.stdout and "Exit 2: cannot read" in helped.stdout


def test_proof_and_usage_on_tampered_files_answer_in_one_line(signed: dict[str, Path]) -> None:
    ledger, pub = signed["ledger"], signed["pub"]
    tamper(ledger)("DELETE FROM nodes WHERE level = 1 AND pos = 1")
    _one_line(_audit("proof", ledger, "--index", 0, "--key", pub), 2, "(1, 1) is missing")
    _nested_entry(ledger)
    consents = signed["dir"] / "consents.db"
    sqlite3.connect(consents).close()
    disclosure = signed["dir"] / "disclosure.json"
    disclosure.write_text(
        json.dumps({"job_id": "job-1", "salt": "ab" * 16, "rounds": {"1": ["a"]}})
    )
    usage = ("usage", ledger, "--job", "job-1", "--disclosure", disclosure, "--consents", consents)
    _one_line(_audit(*usage), 1, "entry 3: job.usage entry is malformed")
    _one_line(_audit(*usage, "--key", pub), 1, "ledger verification failed")
    _garbage(ledger)
    _one_line(_audit(*usage), 2, "cannot read ledger")


def test_lost_wal_is_caught_by_an_earlier_head(signed: dict[str, Path]) -> None:
    """Appends committed only to the WAL vanish with it; a head saved earlier shows the loss.

    Without an external head the shorter ledger is self-consistent and verifies (what a
    lost WAL leaves looks like a ledger that simply stopped earlier): the heads a node
    pushed to the coordinator, or an auditor saved, are the reference.
    """
    ledger, pub, tmp = signed["ledger"], signed["pub"], signed["dir"]
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    store = Ledger(ledger, key, clock=Clock())
    store._db.execute("PRAGMA wal_autocheckpoint=0")  # keep new commits in the WAL
    for r in range(N, N + 5):
        store.append("job.usage", usage_payload(rnd=r))
    saved = tmp / "head.json"
    assert _audit("head", ledger, "--out", saved).returncode == 0
    assert json.loads(saved.read_text())["tree_size"] == N + 5
    survivor = tmp / "survivor.db"
    shutil.copyfile(ledger, survivor)  # the main file without its WAL: a lost WAL
    store.close()
    alone = _audit("verify", survivor, "--key", pub, "--format", "json")
    assert alone.returncode == 0 and json.loads(alone.stdout)["tree_size"] == N
    since = _audit("verify", survivor, "--key", pub, "--since", saved)
    _one_line(since, 1, f"covers {N + 5} entries but the ledger holds {N}", "truncated")


def test_head_and_proof_on_an_altered_stored_head_answer_in_one_line(
    signed: dict[str, Path],
) -> None:
    ledger, pub = signed["ledger"], signed["pub"]
    tamper(ledger)(
        "UPDATE heads SET sth = replace(sth, 'a', 'b') WHERE id = (SELECT max(id) FROM heads)"
    )
    out = signed["dir"] / "head.json"
    _one_line(_audit("head", ledger, "--out", out), 2, "is malformed")
    _one_line(_audit("proof", ledger, "--index", 0, "--key", pub), 2, "is malformed")
    _one_line(_audit("verify", ledger, "--key", pub), 1, "is malformed")
    assert not out.exists()
