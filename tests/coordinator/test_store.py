"""Store tests, run on SQLite and (when HAMANASU_TEST_POSTGRES_URL is set) PostgreSQL."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from sqlalchemy import inspect

from coordinator.auth import TokenVerifier
from coordinator.db import migrate
from coordinator.errors import Conflict, InvalidSpec, NotFound, Unauthorized
from coordinator.runner import RunResult
from coordinator.schemas import NodeCreate, PrincipalCreate
from coordinator.store import RESTART_REASON, Store
from federation.api_models import DecisionCreate, DecisionReason, NodeRegistration
from federation.spec import parse_job_spec

SPEC = {
    "kind": "train",
    "features": ["maternal_age"],
    "label": "lbw",
    "rounds": 2,
    "min_nodes": 2,
    "privacy": {"epsilon": 1.0},
}


def _setup(store: Store, n_nodes: int = 2) -> tuple:
    for i in range(n_nodes):
        store.register_node(NodeCreate(name=f"n{i}", max_epsilon_per_job=3.0))
    researcher, _ = store.create_principal(PrincipalCreate(name="aki", role="researcher"))
    return researcher, [f"n{i}" for i in range(n_nodes)]


def test_migrate_schema_twice_is_idempotent(store: Store, backend) -> None:
    _, engine, schema = backend
    migrate(engine, schema=schema)
    tables = set(inspect(engine).get_table_names(schema=schema))
    assert {
        "principals",
        "tokens",
        "nodes",
        "jobs",
        "job_events",
        "approvals",
        "results",
        "alembic_version",
    } <= tables


def test_authenticate_token_unknown_or_revoked_fails(store: Store) -> None:
    p, tok = store.create_principal(PrincipalCreate(name="op", role="operator"))
    assert store.authenticate(tok.token).id == p.id
    for bad in [
        "",
        "nonsense",
        tok.token[:-1] + ("A" if tok.token[-1] != "A" else "B"),
        "hmn_000000000000_" + "x" * 43,
    ]:
        with pytest.raises(Unauthorized):
            store.authenticate(bad)
    store.revoke_token(tok.prefix)
    with pytest.raises(Unauthorized):
        store.authenticate(tok.token)


def test_store_token_only_as_keyed_hash(store: Store) -> None:
    _, tok = store.create_principal(PrincipalCreate(name="op", role="operator"))
    from sqlalchemy import text

    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT prefix, hash FROM tokens"))]
    assert rows and all(tok.token not in "".join(map(str, r)) for r in rows)
    assert rows[0][1].startswith("blake2b-keyed$") and len(rows[0][1]) == 14 + 64
    # the digest is keyed: the database alone does not let anyone test a guess
    assert hashlib.blake2b(tok.token.encode(), digest_size=32).hexdigest() not in rows[0][1]
    assert tok.token not in repr(tok)


def test_legacy_argon2_hash_verifies_once_then_is_replaced_by_the_keyed_one(
    store: Store,
) -> None:
    from argon2 import PasswordHasher
    from sqlalchemy import text

    principal, tok = store.create_principal(PrincipalCreate(name="op", role="operator"))
    legacy = PasswordHasher(time_cost=1, memory_cost=19456).hash(tok.token)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE tokens SET hash = :h"), {"h": legacy})
    with pytest.raises(Unauthorized):
        store.authenticate(tok.token[:-1] + ("A" if tok.token[-1] != "A" else "B"))
    assert store.authenticate(tok.token).id == principal.id
    with store.engine.connect() as conn:
        stored = conn.execute(text("SELECT hash FROM tokens")).scalar()
    assert stored == store.hasher.hash(tok.token)
    store.verifier.forget(prefix=tok.prefix)
    assert store.authenticate(tok.token).id == principal.id


def test_token_key_file_is_private_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    from coordinator.auth import TOKEN_KEY_FILE, load_token_key

    key = load_token_key(tmp_path)
    path = tmp_path / TOKEN_KEY_FILE
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token_key(tmp_path) == key  # kept across restarts
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600") as err:
        load_token_key(tmp_path)
    assert key.hex() not in str(err.value)


def test_bad_token_throttle_counts_per_client_within_its_window() -> None:
    from coordinator.auth import BadTokenThrottle

    now = [0.0]
    throttle = BadTokenThrottle(limit=3, window=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 60.0
    assert throttle.retry_after("10.0.0.2") == 0  # another client is not affected
    now[0] = 59.0
    assert throttle.retry_after("10.0.0.1") == 1.0
    now[0] = 60.0
    assert throttle.retry_after("10.0.0.1") == 0


def test_create_principal_duplicate_name_conflicts(store: Store) -> None:
    store.create_principal(PrincipalCreate(name="op", role="operator"))
    with pytest.raises(Conflict):
        store.create_principal(PrincipalCreate(name="op", role="auditor"))
    with pytest.raises(NotFound):
        store.create_principal(PrincipalCreate(name="adm", role="node_admin", node="nowhere"))


def test_supernode_keys_are_kept_per_node_and_survive_reopening(store: Store) -> None:
    _setup(store, 3)
    assert store.supernode_keys() == {}
    store.set_supernode_key("n2", "ecdsa-sha2-nistp384 AAAAkey2 n2\n")
    store.set_supernode_key("n0", "ecdsa-sha2-nistp384 AAAAkey0")
    with pytest.raises(NotFound):
        store.set_supernode_key("zz", "ecdsa-sha2-nistp384 AAAAkey")
    reopened = Store(store.engine, store.hasher, TokenVerifier(store.hasher, 0), store.clock)
    assert reopened.supernode_keys() == {
        "n0": "ecdsa-sha2-nistp384 AAAAkey0",
        "n2": "ecdsa-sha2-nistp384 AAAAkey2 n2",
    }


def test_create_job_unknown_node_or_epsilon_above_caps_stores_nothing(store: Store) -> None:
    researcher, _ = _setup(store)
    with pytest.raises(InvalidSpec) as err:
        store.create_job(researcher, parse_job_spec({**SPEC, "nodes": ["n0", "zz"]}))
    assert err.value.field == "nodes"
    with pytest.raises(InvalidSpec) as err:
        store.create_job(researcher, parse_job_spec({**SPEC, "privacy": {"epsilon": 5.0}}))
    assert err.value.field == "privacy.epsilon"
    store.publish_node("n1", NodeRegistration(domains={"births": ["maternal_age"]}))
    with pytest.raises(InvalidSpec) as err:
        store.create_job(researcher, parse_job_spec(SPEC))
    assert err.value.field == "label"
    assert store.list_jobs() == [] and store.approvals() == []


def test_decide_job_approvals_then_run_to_result(store: Store) -> None:
    researcher, nodes = _setup(store, 3)
    job = store.create_job(researcher, parse_job_spec(SPEC))
    assert job.state == "awaiting_approval" and [a.status for a in job.approvals] == ["pending"] * 3
    _, started = store.decide(job.id, "n0", DecisionCreate(outcome="approve"), "n0-admin")
    assert not started
    store.decide(job.id, "n1", DecisionCreate(outcome="needs_approval"), "n1-admin")
    _, started = store.decide(
        job.id, "n2", DecisionCreate(outcome="approve", source="admin"), "n2-admin"
    )
    assert started
    spec, run_nodes = store.job_spec(job.id)
    assert run_nodes == ["n0", "n2"] and spec.rounds == 2
    with pytest.raises(Conflict):
        store.decide(job.id, "n1", DecisionCreate(outcome="approve"), "x")
    assert store.start(job.id) and not store.start(job.id)
    store.progress(job.id, 1, {"auc": 0.6})
    assert store.get_job(job.id)[0].round == 1
    assert store.finish(
        job.id,
        RunResult(
            "succeeded",
            "2 rounds",
            report={"a": 1},
            model={"p": [1.0]},
            epsilon_by_node={"n0": 0.9, "n2": 0.8},
            plot_png=b"\x89PNG",
        ),
    )
    done = store.get_job(job.id)[0]
    assert done.state == "succeeded" and done.has_result and done.finished_at is not None
    assert store.result(job.id).epsilon_by_node == {"n0": 0.9, "n2": 0.8}
    assert store.plot(job.id) == b"\x89PNG"
    assert [e.node for e in store.epsilon_by_node()] == ["n0", "n2"]
    assert [e.state for e in store.events(job.id)] == [
        "submitted",
        "awaiting_approval",
        "approved",
        "running",
        "running",
        "succeeded",
    ]


def test_decide_job_rejections_fail_it_with_reasons(store: Store) -> None:
    researcher, _ = _setup(store, 2)
    job = store.create_job(researcher, parse_job_spec(SPEC))
    with pytest.raises(InvalidSpec):
        store.decide(job.id, "n0", DecisionCreate(outcome="reject"), "x")
    store.decide(
        job.id,
        "n0",
        DecisionCreate(
            outcome="reject", reasons=[DecisionReason(code="commercial_not_allowed", message="no")]
        ),
        "n0-admin",
    )
    failed = store.get_job(job.id)[0]
    assert failed.state == "failed" and "commercial_not_allowed" in failed.reason


def test_recover_running_job_fails_it_once(store: Store) -> None:
    researcher, _ = _setup(store, 2)
    job = store.create_job(researcher, parse_job_spec(SPEC))
    for n in ("n0", "n1"):
        store.decide(job.id, n, DecisionCreate(outcome="approve"), n)
    other = store.create_job(researcher, parse_job_spec(SPEC))
    for n in ("n0", "n1"):
        store.decide(other.id, n, DecisionCreate(outcome="approve"), n)
    store.start(job.id)
    assert store.recover() == [other.id]  # approved, never started: run it again
    j = store.get_job(job.id)[0]
    assert j.state == "failed" and j.reason == RESTART_REASON
    assert store.recover() == [other.id]
    assert [e.state for e in store.events(job.id)].count("failed") == 1


def test_cancel_finished_job_conflicts(store: Store) -> None:
    researcher, _ = _setup(store, 2)
    job = store.create_job(researcher, parse_job_spec(SPEC))
    assert store.cancel(job.id, "aki").state == "cancelled"
    with pytest.raises(Conflict):
        store.cancel(job.id, "aki")
    with pytest.raises(NotFound):
        store.cancel("nope", "aki")
    assert not store.start(job.id)


def test_get_job_and_list_jobs_read_each_jobs_own_approvals_and_owner(store: Store) -> None:
    researcher, _ = _setup(store, 3)
    other, _ = store.create_principal(PrincipalCreate(name="ren", role="researcher"))
    a = store.create_job(researcher, parse_job_spec(SPEC))
    b = store.create_job(other, parse_job_spec({**SPEC, "nodes": ["n1", "n2"]}))
    store.decide(a.id, "n2", DecisionCreate(outcome="approve"), "n2-admin")
    store.decide(
        b.id,
        "n1",
        DecisionCreate(outcome="reject", reasons=[DecisionReason(code="x", message="no")]),
        "n1-admin",
    )
    got_a, owner_a = store.get_job(a.id)
    got_b, owner_b = store.get_job(b.id)
    assert (owner_a, owner_b) == (researcher.id, other.id)
    assert (got_a.owner, got_b.owner) == ("aki", "ren")
    assert [(x.node, x.status) for x in got_a.approvals] == [
        ("n0", "pending"),
        ("n1", "pending"),
        ("n2", "approved"),
    ]
    assert [(x.node, x.status) for x in got_b.approvals] == [("n1", "rejected"), ("n2", "pending")]
    assert got_b.approvals[0].reasons[0].message == "no" and got_b.approvals[0].decided_by
    assert all(x.job_id == b.id for x in got_b.approvals)
    listed = {j.id: j for j in store.list_jobs()}
    assert listed == {a.id: got_a, b.id: got_b}
    assert [j.id for j in store.list_jobs(owner_id=other.id)] == [b.id]
    assert store.list_jobs(owner_id=other.id, state="succeeded") == []
    with pytest.raises(NotFound):
        store.get_job("no-such-job")


def test_cached_principal_only_for_a_verified_token(store: Store) -> None:
    p, tok = store.create_principal(PrincipalCreate(name="op", role="operator"))
    assert store.cached_principal(tok.token) is None  # not verified yet
    assert store.cached_principal("hmn_" + tok.prefix + "_" + "x" * 43) is None
    assert store.authenticate(tok.token).id == p.id
    cached = store.cached_principal(tok.token)
    assert cached is not None and cached.id == p.id
    store.revoke_token(tok.prefix)
    assert store.cached_principal(tok.token) is None
    with pytest.raises(Unauthorized):
        store.authenticate(tok.token)


def test_token_revoked_by_another_process_stops_working_after_the_cache_period(
    store: Store,
) -> None:
    now = [0.0]
    ttl = 60.0
    mine = Store(store.engine, store.hasher, TokenVerifier(store.hasher, ttl, lambda: now[0]))
    other = Store(store.engine, store.hasher, TokenVerifier(store.hasher, ttl, lambda: now[0]))
    p, tok = mine.create_principal(PrincipalCreate(name="op", role="operator"))
    assert mine.authenticate(tok.token).id == p.id
    other.revoke_token(tok.prefix)  # another worker: it cannot clear this process's cache
    with pytest.raises(Unauthorized):
        other.authenticate(tok.token)
    now[0] = ttl - 1
    assert mine.authenticate(tok.token).id == p.id  # still remembered within the period
    now[0] = ttl + 1
    with pytest.raises(Unauthorized):
        mine.authenticate(tok.token)


def test_verification_racing_a_revocation_is_not_cached(store: Store) -> None:
    p, tok = store.create_principal(PrincipalCreate(name="op", role="operator"))
    verifier = store.verifier
    generation = verifier.generation  # read before the token row, as authenticate does
    token_hash = store.hasher.hash(tok.token)
    verifier.forget(prefix="someone-else")  # any revocation between the read and the check
    assert verifier.verify(tok.token, token_hash, p.id, tok.prefix, generation)
    assert verifier.cached(tok.token) is None
    assert verifier.verify(tok.token, token_hash, p.id, tok.prefix, verifier.generation)
    assert verifier.cached(tok.token) == p.id
