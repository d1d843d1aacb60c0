"""The coordinator verifies what nodes push about their ledgers (issue 7), and shows auditors.

A head is accepted only when its Ed25519 signature checks against the node's registered key,
it extends the head verified before (RFC 9162 consistency) and the root recomputed over the
mirrored entries equals its root. A failure is recorded with the time and reason and shown; a
node that rewrites, truncates or replaces history it signed is flagged. Role checks: only the
node's own service pushes (its human admins are refused); auditors (and the operator) read;
a denied call changes nothing.
Runs on SQLite and, with HAMANASU_TEST_POSTGRES_URL, PostgreSQL.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from consent.errors import LedgerVerificationError
from consent.ledger import Ledger
from consent.signing import SignedTreeHead, generate_key, load_private_key, load_public_key
from consent.verify import verify_entry, verify_ledger
from coordinator.api import bootstrap_operator, create_app, open_store
from coordinator.db import MIGRATIONS, make_engine, migrate
from nodes.audit_publish import AuditPublisher, push_audit_snapshot
from nodes.cli import init_node
from nodes.enforcement import EnforcementPoint

from .conftest import fast_settings

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class World:
    """A coordinator (SQLite or PostgreSQL), nodes n0 and n1, and n0's node state."""

    def __init__(self, app: Any, http: TestClient, tokens: dict[str, str], state: Path) -> None:
        self.app, self.http, self.tokens, self.state = app, http, tokens, state
        self.point = EnforcementPoint("n0", state)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def register_key(self, pem: str | None = None) -> None:
        pem = pem or self.point.state.public_key_path.read_text()
        r = self.http.put(
            "/nodes/n0/registration", json={"public_key_pem": pem}, headers=self.h("n0")
        )
        assert r.status_code == 200, r.text

    def reopen(self) -> EnforcementPoint:
        """A fresh enforcement point (as after a restart): the ledger file is read again."""
        self.point = EnforcementPoint("n0", self.state)
        return self.point

    def push(self) -> Any:
        def check(response: Any) -> Any:
            assert response.status_code < 400, response.text
            return response.json()

        client = TestClient(self.app, headers=self.h("n0"))
        return push_audit_snapshot(client, "n0", self.point, check)

    def status(self) -> dict[str, Any]:
        nodes = self.http.get("/audit/nodes", headers=self.h("auditor")).json()
        return next(n for n in nodes if n["node"] == "n0")

    def entries(self, **params: Any) -> dict[str, Any]:
        r = self.http.get("/audit/nodes/n0/ledger", params=params, headers=self.h("auditor"))
        assert r.status_code == 200, r.text
        return r.json()


def _world(settings: Any, engine: Any, schema: str | None, tmp_path: Path) -> Iterator[World]:
    store = open_store(settings, engine=engine, schema=schema)
    app = create_app(settings, store=store)
    op = bootstrap_operator(store).token
    init_node(tmp_path / "n0", "n0")
    with TestClient(app) as http:
        oh = {"Authorization": f"Bearer {op}"}
        tokens = {"operator": op}
        for n in ("n0", "n1"):
            assert http.post("/nodes", json={"name": n}, headers=oh).status_code == 201
        for who, role, node in (
            ("n0-admin", "node_admin", "n0"),
            ("n1-admin", "node_admin", "n1"),
            ("auditor", "auditor", None),
            ("researcher", "researcher", None),
        ):
            r = http.post("/principals", json={"name": who, "role": role, "node": node}, headers=oh)
            tokens[who] = r.json()["token"]["token"]
        for n in ("n0", "n1"):  # each node's service pushes with its own token
            r = http.post(f"/nodes/{n}/service-token", headers=oh)
            tokens[n] = r.json()["token"]
        yield World(app, http, tokens, tmp_path / "n0")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """On SQLite."""
    settings = fast_settings(tmp_path / "coord")
    engine = make_engine(settings.url())
    yield from _world(settings, engine, None, tmp_path)
    engine.dispose()


@pytest.fixture
def any_world(backend, tmp_path: Path) -> Iterator[World]:
    """On SQLite, then on PostgreSQL (when HAMANASU_TEST_POSTGRES_URL is set)."""
    settings, engine, schema = backend
    yield from _world(settings, engine, schema, tmp_path)


def _append(ledger: Ledger, n: int, start: int = 0, tag: str = "a") -> None:
    for i in range(start, start + n):
        ledger.append(
            "audit.note" if i % 3 else "job.note", {"i": i, "tag": tag}, T0 + timedelta(hours=i)
        )


def _unprotect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER entries_append_only_u")
    return db


# -- verified mirror, browsing and proofs -------------------------------------------------------
def test_pushed_ledger_is_verified_browsable_and_proves_inclusion(any_world: World) -> None:
    world = any_world
    world.register_key()
    ledger = world.point.ledger()
    key = load_public_key(world.point.state.public_key_path)
    verified = 0
    for grow in (5, 3, 5, 19):  # several pushes: the stored tree extends across them
        _append(ledger, grow, verified)
        receipt = world.push()
        assert receipt.status == "verified", receipt
        verified += grow
        status = world.status()
        assert status["verified_size"] == verified and status["head"]["tree_size"] == verified
        assert status["last_check"]["result"] == "verified" and not status["flagged"]
        assert status["public_key_id"] == status["head"]["key_id"]
        for index in range(verified):
            r = world.http.get(f"/audit/nodes/n0/ledger/{index}/proof", headers=world.h("auditor"))
            proof = r.json()
            assert [bytes.fromhex(p) for p in proof["proof"]] == ledger.inclusion_proof(index)
            verify_entry(
                base64.b64decode(proof["data"]),
                index,
                [bytes.fromhex(p) for p in proof["proof"]],
                SignedTreeHead.model_validate(proof["head"]),
                key,
            )
    assert (
        world.http.get("/audit/nodes/n0/ledger/32/proof", headers=world.h("auditor")).status_code
        == 404
    )
    page = world.entries(kind="job.note", limit=4, offset=2)
    assert page["total"] == 11 and [e["index"] for e in page["entries"]] == [6, 9, 12, 15]
    assert page["kinds"] == ["audit.note", "job.note"]
    page = world.entries(since="2026-03-01T12:00:00Z", until="2026-03-01T14:00:00+00:00")
    assert [e["index"] for e in page["entries"]] == [3, 4]
    assert world.entries(since="2026-03-01T21:00:00+09:00")["entries"][0]["index"] == 3
    newest = world.entries(newest_first=True, limit=2)["entries"]
    assert [e["index"] for e in newest] == [31, 30] and newest[0]["payload"] == {
        "i": 31,
        "tag": "a",
    }


# -- failures are recorded; rewriting signed history is flagged ----------------------------------
def test_tampered_entry_fails_is_recorded_and_flagged(any_world: World) -> None:
    world = any_world
    world.register_key()
    _append(world.point.ledger(), 8)
    db = _unprotect(world.point.state.ledger_path)
    data = db.execute("SELECT data FROM entries WHERE idx = 3").fetchone()[0]
    db.execute("UPDATE entries SET data = ? WHERE idx = 3", (data.replace(b'"i":3', b'"i":7'),))
    db.commit()
    receipt = world.push()
    assert receipt.status == "failed" and receipt.flagged
    assert "entry 4: hash chain broken" in receipt.reason
    status = world.status()
    assert status["verified_size"] == 0 and status["head"] is None and status["flagged"]
    assert status["last_check"]["result"] == "failed" and status["last_check"]["last_checked_at"]
    assert status["last_check"]["reason"] == receipt.reason
    assert world.entries()["total"] == 0  # nothing unverified is shown
    assert world.push().status == "failed"  # the node tries again: same outcome, one row
    checks = world.http.get("/audit/nodes/n0/checks", headers=world.h("auditor")).json()
    assert len(checks) == 1 and checks[0]["checks"] == 2 and checks[0]["flagged"]


def test_tampered_last_entry_does_not_hash_to_the_signed_root(world: World) -> None:
    world.register_key()
    _append(world.point.ledger(), 6)
    db = _unprotect(world.point.state.ledger_path)
    data = db.execute("SELECT data FROM entries WHERE idx = 5").fetchone()[0]
    db.execute(
        "UPDATE entries SET data = ? WHERE idx = 5", (data.replace(b'"tag":"a"', b'"tag":"b"'),)
    )
    db.commit()
    receipt = world.push()
    assert receipt.status == "failed" and receipt.flagged
    assert "do not hash to the root it signed" in receipt.reason


def _fork(world: World, entries: int, differ_at: int | None) -> None:
    """Replace n0's ledger by one signed with the same key whose entries differ from ``differ_at``."""
    path = world.point.state.ledger_path
    key = load_private_key(world.point.state.key_path)
    world.point.ledger().close()
    fork = path.with_name("fork.sqlite")
    with Ledger(fork, key) as other:
        for i in range(entries):
            tag = "b" if differ_at is not None and i >= differ_at else "a"
            other.append(
                "audit.note" if i % 3 else "job.note",
                {"i": i, "tag": tag},
                T0 + timedelta(hours=i),
            )
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    fork.rename(path)
    world.reopen()


@pytest.mark.parametrize(
    ("entries", "differ_at", "reason"),
    [
        (12, 3, "does not extend the verified head"),  # history rewritten, then extended
        (10, 3, "verified size 10 but another root"),  # rewritten at the same size
        (6, None, "truncated"),  # entries removed
    ],
)
def test_node_rewriting_signed_history_is_flagged(
    world: World, entries: int, differ_at: int | None, reason: str
) -> None:
    world.register_key()
    _append(world.point.ledger(), 10)
    assert world.push().status == "verified"
    before = world.entries(limit=500)["entries"]
    _fork(world, entries, differ_at)
    receipt = world.push()
    assert receipt.status == "failed" and receipt.flagged and reason in receipt.reason
    status = world.status()
    assert status["flagged"] and status["verified_size"] == 10
    assert status["last_check"]["result"] == "failed" and reason in status["last_check"]["reason"]
    assert status["head"]["tree_size"] == 10  # the head verified before still stands
    assert world.entries(limit=500)["entries"] == before  # and so do its entries


def test_a_node_that_lost_its_wal_is_flagged_behind_what_it_signed(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Appends committed only to the SQLite WAL vanish with it; what the node pushed stays.

    The shorter ledger is consistent with itself (its own heads went with the WAL), so only
    the heads the coordinator verified show the loss: the node is flagged as truncated,
    its verified head and entries still stand, and extending the shortened ledger later
    does not clear the flag.
    """
    world.register_key()
    ledger = world.point.ledger()
    _append(ledger, 6)
    ledger._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # entries 0..5 in the main file
    ledger._db.execute("PRAGMA wal_autocheckpoint=0")  # what follows stays in the WAL
    _append(ledger, 4, start=6)
    assert world.push().status == "verified" and world.status()["verified_size"] == 10
    path = world.point.state.ledger_path
    main_file = path.read_bytes()
    ledger.close()
    path.write_bytes(main_file)  # the host comes back without the WAL
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    assert world.reopen().ledger().size == 6
    with caplog.at_level("ERROR", logger="hamanasu.node.audit"):
        receipt = world.push()
    assert receipt.status == "failed" and receipt.flagged and "truncated" in receipt.reason
    assert "coordinator verified 10 ledger entries but this ledger holds 6" in caplog.text
    status = world.status()
    assert status["flagged"] and status["verified_size"] == 10
    # The head the coordinator verified is an auditor's reference for `audit verify --since`.
    reference = SignedTreeHead.model_validate(status["head"])
    public_key = load_public_key(world.point.state.public_key_path)
    with pytest.raises(LedgerVerificationError, match="truncated"):
        verify_ledger(path, public_key, since=reference)
    _append(world.point.ledger(), 6, start=6, tag="after")  # the node carries on: size 12
    receipt = world.push()
    assert receipt.status == "failed" and receipt.flagged
    assert world.status()["flagged"] and world.status()["verified_size"] == 10


def test_bad_signature_fails_without_flag_and_a_replaced_key_is_flagged(world: World) -> None:
    world.register_key()
    _append(world.point.ledger(), 4)
    publisher = AuditPublisher(world.point)
    head = publisher.head()
    sig = bytearray(base64.b64decode(head.signature))
    sig[0] ^= 1
    forged = head.model_copy(update={"signature": base64.b64encode(bytes(sig)).decode()})
    entries = [e.model_dump() for e in publisher.entries(0, 4)]
    http, h = world.http, world.h("n0")
    assert (
        http.post(
            "/nodes/n0/audit/entries", json={"start": 0, "entries": entries}, headers=h
        ).status_code
        == 200
    )
    body = {"head": forged.model_dump(mode="json"), "since_size": 0}
    receipt = http.put("/nodes/n0/audit/snapshot", json=body, headers=h).json()
    assert receipt["status"] == "failed" and not receipt["flagged"]
    assert "signature is invalid" in receipt["reason"]
    assert (
        world.status()["last_check"]["reason"] == receipt["reason"]
        and not world.status()["flagged"]
    )
    assert world.push().status == "verified"  # the genuine head checks out

    # The node comes back with another key and another history: the ledger was replaced.
    other = world.state / "keys" / "other.pem"
    generate_key(other)
    world.register_key((world.state / "keys" / "other.pem.pub").read_text())
    world.point.ledger().close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(world.point.state.ledger_path) + suffix).unlink(missing_ok=True)
    with Ledger(world.point.state.ledger_path, load_private_key(other)) as fresh:
        _append(fresh, 6, tag="z")
    world.reopen()
    receipt = world.push()
    assert (
        receipt.status == "failed" and receipt.flagged and "ledger was replaced" in receipt.reason
    )


def test_a_node_without_a_registered_key_is_not_verified(world: World) -> None:
    _append(world.point.ledger(), 3)
    receipt = world.push()
    assert receipt.status == "failed" and "no ledger public key" in receipt.reason
    assert world.status()["last_check"]["result"] == "failed"


# -- bad input, role checks ----------------------------------------------------------------------
def test_snapshot_with_a_small_consent_count_is_refused_and_stores_nothing(world: World) -> None:
    body = {
        "consent": {
            "at": "2026-03-01T00:00:00Z",
            "min_cell_count": 10,
            "counts": [{"purpose": "GRU", "count": 4, "suppressed": False}],
        }
    }
    r = world.http.put("/nodes/n0/audit/snapshot", json=body, headers=world.h("n0"))
    assert r.status_code == 422 and "minimum cell" in r.text
    summary = world.http.get("/audit/nodes/n0/consent", headers=world.h("auditor")).json()
    assert summary["summary"] is None and summary["received_at"] is None


def test_entries_must_continue_where_the_coordinator_stands(world: World) -> None:
    _append(world.point.ledger(), 3)
    entries = [e.model_dump() for e in AuditPublisher(world.point).entries(1, 3)]
    r = world.http.post(
        "/nodes/n0/audit/entries", json={"start": 1, "entries": entries}, headers=world.h("n0")
    )
    assert (
        r.status_code == 409
        and r.json()["field"] == "start"
        and "from index 0" in r.json()["detail"]
    )
    r = world.http.post(
        "/nodes/n0/audit/entries", json={"start": 0, "entries": entries}, headers=world.h("n0")
    )
    assert r.status_code == 422  # indices 1, 2 do not start at 0


def test_role_checks_401_403_with_clear_bodies_and_no_change(world: World) -> None:
    http = world.http
    snapshot = {"head": None}
    r = http.put("/nodes/n0/audit/snapshot", json=snapshot)
    assert (
        r.status_code == 401
        and r.json()["code"] == "unauthorized"
        and "bearer" in r.json()["detail"]
    )
    for who, path in (
        ("researcher", "/nodes/n0/audit/snapshot"),
        ("auditor", "/nodes/n0/audit/snapshot"),
        ("operator", "/nodes/n0/audit/snapshot"),
        ("n0-admin", "/nodes/n0/audit/snapshot"),
        ("n1", "/nodes/n0/audit/snapshot"),
    ):
        r = http.put(path, json=snapshot, headers=world.h(who))
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (who, r.text)
    assert "bound to node 'n1', not 'n0'" in r.json()["detail"]
    assert world.status()["snapshot_at"] is None  # nothing changed
    assert http.get("/nodes/n0/audit/state", headers=world.h("n1")).status_code == 403
    for who in ("n0", "researcher"):
        for path in (
            "/audit/nodes",
            "/audit/nodes/n0/ledger",
            "/audit/nodes/n0/ledger/0/proof",
            "/audit/consent",
            "/audit/budget",
            "/audit/nodes/n0/checks",
        ):
            r = http.get(path, headers=world.h(who))
            assert r.status_code == 403 and "needs auditor or operator" in r.json()["detail"], (
                who,
                path,
            )
    assert http.get("/audit/nodes").status_code == 401
    for who in ("auditor", "n1", "n1-admin", "researcher"):
        assert http.get("/nodes/n0/budget", headers=world.h(who)).status_code == 403, who
    for who in ("n0", "n0-admin"):  # the node's service and its human admins read its budget
        assert http.get("/nodes/n0/budget", headers=world.h(who)).json() == {
            "node": "n0",
            "received_at": None,
            "rows": [],
        }
    assert http.get("/audit/nodes", headers=world.h("operator")).status_code == 200
    assert http.get("/audit/nodes/nope/ledger", headers=world.h("auditor")).status_code == 404


# -- the migration ---------------------------------------------------------------------------------
def test_migrations_0003_and_0004_apply_over_0002_and_revert(backend) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect, text

    import coordinator.audit_tables  # noqa: F401 - registers the tables on Base.metadata
    from coordinator.models import Base

    _, engine, schema = backend
    migrate(engine, "0002", schema=schema)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO nodes (name, registered_at, domains) VALUES ('n0', '2026-01-01', '{}')"
            )
        )
    migrate(engine, schema=schema)
    assert {
        "node_audit_state",
        "node_ledger_entries",
        "node_ledger_tree",
        "node_ledger_checks",
    } <= set(inspect(engine).get_table_names(schema=schema))
    with engine.connect() as conn:
        head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.execute(text("SELECT supernode_key FROM nodes")).scalar() is None
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["schema"] = schema
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert "node_ledger_entries" not in inspect(engine).get_table_names(schema=schema)
    assert "supernode_key" not in {c["name"] for c in inspect(engine).get_columns("nodes", schema)}
    migrate(engine, schema=schema)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM nodes")).scalar() == "n0"


def test_a_node_service_token_pushes_for_its_own_node_only(world: World) -> None:
    """The service's own token (not its admin's) publishes, pushes and syncs; n1 is refused."""
    me = world.http.get("/me", headers=world.h("n0")).json()
    assert (me["role"], me["node"]) == ("node_service", "n0")
    world.register_key()
    _append(world.point.ledger(), 4)
    assert world.push().status == "verified"
    assert world.status()["verified_size"] == 4
    for method, path in (
        ("GET", "/nodes/n1/audit/state"),
        ("GET", "/nodes/n1/budget"),
        ("PUT", "/nodes/n1/registration"),
    ):
        body = {"public_key_pem": "x"} if method == "PUT" else None
        r = world.http.request(method, path, json=body, headers=world.h("n0"))
        assert r.status_code == 403, (path, r.text)
