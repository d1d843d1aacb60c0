from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent.errors import ProofError
from consent.merkle import (
    EMPTY_ROOT,
    PerfectNode,
    consistency_proof,
    frontier,
    hash_children,
    hash_leaf,
    inclusion_proof,
    level_lookup,
    levels_from_leaves,
    push_leaf,
    root_from_frontier,
    root_of,
    subtree_hashes,
    verify_consistency_proof,
    verify_inclusion_proof,
)

from .conftest import VECTORS

V = json.loads((VECTORS / "rfc9162.json").read_text())
LEAVES = [hash_leaf(bytes.fromhex(x)) for x in V["leaves"]]


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == V["roots"]["0"]
    assert root_of([]) == EMPTY_ROOT


def test_leaf_and_node_prefixes() -> None:
    assert hash_leaf(b"").hex() == V["roots"]["1"]
    assert root_of(LEAVES[:2]) == hash_children(LEAVES[0], LEAVES[1])


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_reference(size: int) -> None:
    assert root_of(LEAVES[:size]).hex() == V["roots"][str(size)]


@pytest.mark.parametrize("case", V["inclusion"], ids=lambda c: f"{c['index']}-of-{c['size']}")
def test_inclusion_proofs_match_reference(case: dict) -> None:
    proof = inclusion_proof(case["index"], case["size"], LEAVES[: case["size"]])
    assert [p.hex() for p in proof] == case["proof"]
    root = bytes.fromhex(V["roots"][str(case["size"])])
    verify_inclusion_proof(LEAVES[case["index"]], case["index"], case["size"], proof, root)


@pytest.mark.parametrize("case", V["consistency"], ids=lambda c: f"{c['old']}-to-{c['new']}")
def test_consistency_proofs_match_reference(case: dict) -> None:
    proof = consistency_proof(case["old"], case["new"], LEAVES[: case["new"]])
    assert [p.hex() for p in proof] == case["proof"]
    old, new = (bytes.fromhex(V["roots"][str(case[k])]) for k in ("old", "new"))
    verify_consistency_proof(case["old"], case["new"], old, new, proof)


def test_inclusion_proof_failures_raise() -> None:
    proof = inclusion_proof(5, 8, LEAVES)
    root = bytes.fromhex(V["roots"]["8"])
    with pytest.raises(ProofError):
        verify_inclusion_proof(LEAVES[4], 5, 8, proof, root)  # wrong leaf
    with pytest.raises(ProofError):
        verify_inclusion_proof(LEAVES[5], 4, 8, proof, root)  # wrong index
    with pytest.raises(ProofError):
        verify_inclusion_proof(LEAVES[5], 5, 8, proof[:-1], root)  # too short
    with pytest.raises(ProofError):
        verify_inclusion_proof(LEAVES[5], 5, 8, [*proof, proof[0]], root)  # too long
    with pytest.raises(ProofError):
        verify_inclusion_proof(LEAVES[5], 5, 8, proof, EMPTY_ROOT)
    with pytest.raises(ProofError):
        verify_inclusion_proof(LEAVES[5], 8, 8, proof, root)  # index out of range


def test_consistency_proof_failures_raise() -> None:
    r6, r8 = (bytes.fromhex(V["roots"][k]) for k in ("6", "8"))
    proof = consistency_proof(6, 8, LEAVES)
    with pytest.raises(ProofError):
        verify_consistency_proof(6, 8, r8, r8, proof)  # forked old root
    with pytest.raises(ProofError):
        verify_consistency_proof(6, 8, r6, r6, proof)  # wrong new root
    with pytest.raises(ProofError):
        verify_consistency_proof(6, 8, r6, r8, proof[1:])
    with pytest.raises(ProofError):
        verify_consistency_proof(8, 6, r8, r6, proof)
    with pytest.raises(ProofError):
        verify_consistency_proof(8, 8, r8, r6, [])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.data())
def test_every_proof_verifies_and_a_flipped_leaf_fails(
    leaves_data: list[bytes], data: st.DataObject
) -> None:
    leaves = [hash_leaf(d) for d in leaves_data]
    n = len(leaves)
    root = root_of(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(i, n, leaves)
    verify_inclusion_proof(leaves[i], i, n, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion_proof(hash_leaf(b"other" + leaves_data[i]), i, n, proof, root)
    m = data.draw(st.integers(1, n))
    verify_consistency_proof(m, n, root_of(leaves[:m]), root, consistency_proof(m, n, leaves))


@pytest.mark.parametrize("size", range(0, 9))
def test_frontier_fold_matches_reference_roots(size: int) -> None:
    tip: list[tuple[int, bytes]] = []
    for i, leaf in enumerate(LEAVES[:size]):
        push_leaf(tip, leaf, i)
    assert root_from_frontier(tip).hex() == V["roots"][str(size)]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=70))
def test_frontier_fold_agrees_with_stored_subtrees(n: int) -> None:
    """Folding leaves one by one stores exactly the perfect subtrees, and leaves the frontier
    that :func:`frontier` reads back from them; every range hashes as its own tree."""
    leaves = [hash_leaf(i.to_bytes(4, "big")) for i in range(n)]
    levels = levels_from_leaves(leaves)
    stored: list[PerfectNode] = []
    tip: list[tuple[int, bytes]] = []
    for i, leaf in enumerate(leaves):
        stored.extend(push_leaf(tip, leaf, i))
    assert sorted(stored) == sorted(
        (level, pos, h) for level in range(1, len(levels)) for pos, h in enumerate(levels[level])
    )
    perfect = level_lookup(levels)
    assert tip == frontier(n, perfect)
    assert root_from_frontier(tip) == root_of(leaves)
    mth = subtree_hashes(perfect)
    for lo in range(0, n, 7):
        for hi in range(lo + 1, n + 1, 5):
            assert mth(lo, hi) == root_of(leaves[lo:hi])
