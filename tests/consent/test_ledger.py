from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consent.canonical import canonical_json, parse_canonical
from consent.errors import (
    ConsentError,
    IdentifierInPayloadError,
    KeyFileError,
    LedgerError,
    SignatureError,
)
from consent.ledger import Ledger, subject_commitment
from consent.merkle import hash_leaf, root_of, verify_consistency_proof, verify_inclusion_proof
from consent.signing import SignedTreeHead, generate_key, load_private_key, load_public_key

from .conftest import T0, Clock, usage_payload


def test_append_returns_indices_and_entries_read_back(ledger: Ledger) -> None:
    assert ledger.size == 0 and ledger.root() == hashlib.sha256(b"").digest()
    assert ledger.append("job.usage", usage_payload()) == 0
    assert ledger.append_many([("budget.charged", {"job_id": "job-1", "epsilon": 0.5})] * 3) == [
        1,
        2,
        3,
    ]
    entries = list(ledger.entries())
    assert [e.kind for e in entries] == ["job.usage"] + ["budget.charged"] * 3
    assert entries[0].payload["purpose"] == ["HMB"]
    assert [e.index for e in ledger.entries(kind="budget.charged")] == [1, 2, 3]
    assert [e.index for e in ledger.entries(since=2)] == [2, 3]


def test_entries_are_canonical_json_with_index_and_chain(ledger: Ledger) -> None:
    ledger.append("job.usage", usage_payload(), at=T0)
    ledger.append("job.usage", usage_payload(rnd=2), at=T0)
    first, second = (ledger.entry_bytes(i) for i in (0, 1))
    obj = json.loads(first)
    assert rfc8785.dumps(obj) == first
    assert (
        obj["index"] == 0
        and obj["prev"] == "00" * 32
        and obj["at"] == "2025-04-01T09:00:00.000000Z"
    )
    assert json.loads(second)["prev"] == hash_leaf(first).hex()
    assert ledger.leaf_hash(1) == hash_leaf(second)


def test_roots_and_proofs_agree_with_a_recomputed_tree(ledger: Ledger) -> None:
    ledger.append_many([("budget.reserved", {"epsilon": i / 10}) for i in range(37)])
    leaves = [hash_leaf(ledger.entry_bytes(i)) for i in range(37)]
    assert ledger.root() == root_of(leaves)
    for size in (1, 2, 5, 16, 17, 37):
        assert ledger.root(size) == root_of(leaves[:size])
        for index in range(size):
            verify_inclusion_proof(
                leaves[index],
                index,
                size,
                ledger.inclusion_proof(index, size),
                root_of(leaves[:size]),
            )
    for old in range(0, 38, 3):
        verify_consistency_proof(
            old, 37, root_of(leaves[:old]), ledger.root(), ledger.consistency_proof(old)
        )
    with pytest.raises(LedgerError):
        ledger.inclusion_proof(37)
    with pytest.raises(LedgerError):
        ledger.consistency_proof(10, 40)


def test_every_append_is_followed_by_a_signed_head(
    ledger: Ledger, node_key: Ed25519PrivateKey
) -> None:
    ledger.append("job.usage", usage_payload())
    ledger.append_many([("job.usage", usage_payload(rnd=r)) for r in range(2, 5)])
    heads = ledger.heads()
    assert [h.tree_size for h in heads] == [1, 4]
    for h in heads:
        h.verify(node_key.public_key())
    head = ledger.sign_head(at=T0)
    assert head.tree_size == 4 and head.root_hash == ledger.root().hex()
    assert SignedTreeHead.model_validate_json(head.model_dump_json()) == head
    assert ledger.latest_head() == head


def test_signed_head_tampering_and_wrong_key_are_refused(
    ledger: Ledger, other_key: Ed25519PrivateKey
) -> None:
    ledger.append("job.usage", usage_payload())
    head = ledger.latest_head()
    assert head is not None
    with pytest.raises(SignatureError):
        head.verify(other_key.public_key())
    for change in ({"tree_size": 2}, {"root_hash": "00" * 32}, {"timestamp": T0}):
        with pytest.raises(SignatureError):
            head.model_copy(update=change).verify(ledger._key.public_key())  # type: ignore[union-attr]


def test_a_bad_entry_rejects_the_whole_batch(ledger: Ledger) -> None:
    ledger.append("job.usage", usage_payload())
    root = ledger.root()
    with pytest.raises(LedgerError, match="epsilon"):
        ledger.append_many(
            [("job.usage", usage_payload(rnd=2)), ("job.usage", usage_payload(epsilon=-1))]
        )
    assert ledger.size == 1 and ledger.root() == root and len(ledger.heads()) == 1


@pytest.mark.parametrize(
    "key", ["name", "Address", "birth_date", "phone", "e-mail", "dateOfBirth", "my_number"]
)
def test_direct_identifiers_are_refused(ledger: Ledger, key: str) -> None:
    with pytest.raises(IdentifierInPayloadError, match="identifier"):
        ledger.append("note.added", {"nested": [{key: "x"}]})
    assert ledger.size == 0


def test_email_values_and_bad_kinds_are_refused(ledger: Ledger) -> None:
    with pytest.raises(IdentifierInPayloadError, match="e-mail"):
        ledger.append("job.usage", usage_payload(requester="someone@hokudai.ac.jp"))
    with pytest.raises(LedgerError, match="kind"):
        ledger.append("Job Usage", {})
    with pytest.raises(LedgerError):
        ledger.append("note.added", {"x": float("nan")})
    with pytest.raises(LedgerError, match="subject"):
        ledger.append("consent.granted", {"subject": "a b"})


def test_reopening_continues_the_same_tree(tmp_path: Path, node_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, node_key, clock=Clock()) as first:
        first.append_many([("budget.charged", {"epsilon": 0.1})] * 5)
        root5 = first.root()
    with Ledger(path, node_key, clock=Clock()) as second:
        assert second.size == 5 and second.root() == root5
        second.append("budget.charged", {"epsilon": 0.1})
        assert second.root(5) == root5
        verify_consistency_proof(5, 6, root5, second.root(), second.consistency_proof(5))


def test_two_connections_append_to_one_tree(tmp_path: Path, node_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "l.db"
    a, b = Ledger(path, node_key), Ledger(path, node_key)
    a.append("budget.charged", {"epsilon": 0.1})
    b.append("budget.charged", {"epsilon": 0.2})
    a.append("budget.charged", {"epsilon": 0.3})
    leaves = [hash_leaf(a.entry_bytes(i)) for i in range(3)]
    assert a.root() == b.root() == root_of(leaves)
    a.close()
    b.close()


def test_a_truncated_ledger_refuses_to_open(tmp_path: Path, node_key: Ed25519PrivateKey) -> None:
    from .conftest import tamper

    path = tmp_path / "l.db"
    with Ledger(path, node_key) as store:
        store.append_many([("budget.charged", {"epsilon": 0.1})] * 4)
    tamper(path)("DELETE FROM entries WHERE idx = 3")
    with pytest.raises(LedgerError, match="truncated"):
        Ledger(path, node_key)


def test_subject_commitment_construction() -> None:
    salt = bytes(range(16))
    expected = hashlib.sha256(
        b"".join(sorted(hashlib.sha256(salt + s.encode()).digest() for s in ("b2", "a1")))
    ).hexdigest()
    assert subject_commitment(["a1", "b2"], salt) == expected
    assert subject_commitment(["b2", "a1", "a1"], salt) == expected  # order and duplicates
    assert subject_commitment(["a1", "b2"], bytes(range(1, 17))) != expected
    assert subject_commitment([], salt) == hashlib.sha256(b"").hexdigest()
    with pytest.raises(ConsentError, match="salt"):
        subject_commitment(["a1"], b"short")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fast_canonical_json_equals_rfc8785(value: object) -> None:
    try:
        want = rfc8785.dumps(value)
    except Exception:
        with pytest.raises(Exception):  # noqa: B017 - the same refusal either way
            canonical_json(value)
        return
    assert canonical_json(value) == want


def test_key_files(tmp_path: Path, node_key: Ed25519PrivateKey) -> None:
    key = generate_key(tmp_path / "node.key", private_key=node_key)
    assert stat.S_IMODE(os.stat(tmp_path / "node.key").st_mode) == 0o600
    assert load_private_key(tmp_path / "node.key").private_bytes_raw() == key.private_bytes_raw()
    assert (
        load_public_key(tmp_path / "node.key.pub").public_bytes_raw()
        == key.public_key().public_bytes_raw()
    )
    with pytest.raises(KeyFileError, match="exists"):
        generate_key(tmp_path / "node.key")
    os.chmod(tmp_path / "node.key", 0o644)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        load_private_key(tmp_path / "node.key")
    assert "PRIVATE KEY" not in str(info.value)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(KeyFileError):
        load_public_key(tmp_path / "junk.pem")


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from([None, 1, 2]))
def test_parse_canonical_agrees_with_rfc8785(value: object, indent: int | None) -> None:
    try:
        text = json.dumps(value, indent=indent, sort_keys=indent == 2, ensure_ascii=indent == 1)
    except ValueError:
        return
    data = text.encode()
    parsed, canonical = parse_canonical(data)
    try:
        # JSON numbers are doubles: integers beyond 2**53 are read as such
        big = lambda t: int(t) if abs(int(t)) < 2**53 else float(t)  # noqa: E731
        want = rfc8785.dumps(json.loads(data, parse_int=big)) == data
    except Exception:
        want = False
    assert canonical is want
    try:
        canon = canonical_json(value)
    except Exception:
        return
    parsed, ok = parse_canonical(canon)
    assert ok and canonical_json(parsed) == canon


def test_verification_flags_non_canonical_entries(
    tmp_path: Path, node_key: Ed25519PrivateKey
) -> None:
    from consent.errors import LedgerVerificationError
    from consent.verify import verify_ledger

    from .conftest import tamper

    path = tmp_path / "l.db"
    with Ledger(path, node_key) as store:
        store.append("budget.charged", {"epsilon": 0.5})
    data = json.loads(Ledger(path).entry_bytes(0))
    spaced = json.dumps(data, indent=1).encode()
    tamper(path)("UPDATE entries SET data = ?, leaf = ? WHERE idx = 0", (spaced, hash_leaf(spaced)))
    with pytest.raises(LedgerVerificationError) as info:
        verify_ledger(path, node_key.public_key())
    assert info.value.index == 0
