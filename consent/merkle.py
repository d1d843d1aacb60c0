"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proofs.

Leaf hash ``SHA-256(0x00 || data)``, node hash ``SHA-256(0x01 || left || right)``, the
empty tree hashes to ``SHA-256("")``. Proof generation works over any store that can
give the hash of a subtree (:class:`SubtreeHashes`), so the ledger answers proofs from
its stored perfect-subtree hashes in O(log n) look-ups. The ledger, its verifier and the
coordinator's mirror share one tree hash (:func:`subtree_hashes`), one frontier
(:func:`frontier`, :func:`push_leaf`) and one root from it (:func:`root_from_frontier`).
Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 and raises
:class:`~consent.errors.ProofError` on failure.

Written here rather than taken from pymerkle: pymerkle's proofs are not in RFC 9162 form
and its storage cannot be our append-only ledger table; this module is checked
against the Certificate Transparency known-answer vectors in
``tests/consent/vectors/rfc9162.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from consent.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "PerfectHashes",
    "PerfectNode",
    "SubtreeHashes",
    "consistency_proof",
    "frontier",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "largest_power_of_two_below",
    "level_lookup",
    "levels_from_leaves",
    "push_leaf",
    "root_from_frontier",
    "root_from_levels",
    "root_of",
    "subtree_hashes",
    "verify_consistency_proof",
    "verify_inclusion_proof",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()
#: ``f(lo, hi)`` returns MTH(D[lo:hi]) for lo < hi.
SubtreeHashes = Callable[[int, int], bytes]
#: ``f(level, pos)`` returns the hash of the perfect subtree over leaves
#: ``[pos * 2**level, (pos + 1) * 2**level)``.
PerfectHashes = Callable[[int, int], bytes]
#: A perfect subtree: ``(level, pos, hash)``.
PerfectNode = tuple[int, int, bytes]


def hash_leaf(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """Return the largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def levels_from_leaves(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Return the hashes of every perfect subtree, level by level.

    ``levels[l][i]`` is the hash of leaves ``[i * 2**l, (i + 1) * 2**l)``.
    """
    levels = [list(leaves)]
    sha = hashlib.sha256
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append(
            [sha(b"\x01" + below[i] + below[i + 1]).digest() for i in range(0, len(below) - 1, 2)]
        )
    return levels


def subtree_hashes(perfect: PerfectHashes) -> SubtreeHashes:
    """Return the RFC 9162 tree hash of any range, built from stored perfect subtrees.

    MTH(D[lo:hi]) splits at the largest power of two below ``hi - lo`` (RFC 9162 §2.1.1)
    until each part is a perfect subtree aligned to its size, which ``perfect`` returns.

    Args:
        perfect: ``perfect(level, pos)`` returns the hash of leaves
            ``[pos * 2**level, (pos + 1) * 2**level)`` (level 0: the leaf hash).

    Returns:
        ``mth(lo, hi)`` returning MTH(D[lo:hi]) for lo < hi.
    """

    def mth(lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return perfect(n.bit_length() - 1, lo // n)
        k = largest_power_of_two_below(n)
        return hash_children(mth(lo, lo + k), mth(lo + k, hi))

    return mth


def level_lookup(levels: Sequence[Sequence[bytes]]) -> PerfectHashes:
    """Return the perfect-subtree look-up of :func:`levels_from_leaves` output."""
    return lambda level, pos: levels[level][pos]


def frontier(size: int, perfect: PerfectHashes) -> list[tuple[int, bytes]]:
    """Return the perfect subtrees that cover the first ``size`` leaves, largest first.

    Args:
        size: the tree size.
        perfect: the stored perfect-subtree hashes (see :func:`subtree_hashes`).

    Returns:
        ``(level, hash)`` pairs: one per set bit of ``size``, left to right.
    """
    out: list[tuple[int, bytes]] = []
    offset = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size & (1 << level):
            out.append((level, perfect(level, offset >> level)))
            offset += 1 << level
    return out


def root_from_frontier(frontier: Sequence[tuple[int, bytes]]) -> bytes:
    """Return the tree's root from its frontier (:func:`frontier`): folded right to left."""
    if not frontier:
        return EMPTY_ROOT
    acc = frontier[-1][1]
    for _, h in reversed(frontier[:-1]):
        acc = hash_children(h, acc)
    return acc


def push_leaf(frontier: list[tuple[int, bytes]], leaf: bytes, index: int) -> list[PerfectNode]:
    """Append leaf ``index`` to a frontier in place, merging the subtrees it completes.

    Args:
        frontier: the frontier of the first ``index`` leaves (changed in place).
        leaf: the new leaf's hash.
        index: the new leaf's position.

    Returns:
        The perfect subtrees completed (level >= 1), as ``(level, pos, hash)``, to store.
    """
    completed: list[PerfectNode] = []
    level, h, pos = 0, leaf, index
    while frontier and frontier[-1][0] == level:
        _, left = frontier.pop()
        h = hash_children(left, h)
        level += 1
        pos >>= 1
        completed.append((level, pos, h))
    frontier.append((level, h))
    return completed


def root_from_levels(levels: Sequence[Sequence[bytes]], size: int) -> bytes:
    """Return MTH of the first ``size`` leaves from :func:`levels_from_leaves` output."""
    if size == 0:
        return EMPTY_ROOT
    return subtree_hashes(level_lookup(levels))(0, size)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash of a list of leaf hashes."""
    return root_from_levels(levels_from_leaves(leaves), len(leaves)) if leaves else EMPTY_ROOT


def _as_subtrees(source: SubtreeHashes | Sequence[bytes]) -> SubtreeHashes:
    if callable(source):
        return source
    return subtree_hashes(level_lookup(levels_from_leaves(source)))


def inclusion_proof(index: int, size: int, source: SubtreeHashes | Sequence[bytes]) -> list[bytes]:
    """Return the RFC 9162 inclusion proof PATH(index, D[0:size]).

    Args:
        index: the leaf's index.
        size: the tree size the proof is for.
        source: the leaf hashes, or a function returning subtree hashes.

    Raises:
        ValueError: ``index`` is not below ``size``.

    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not in a tree of size {size}")
    mth = _as_subtrees(source)
    path: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = largest_power_of_two_below(hi - lo)
        if m < k:
            path.append(mth(lo + k, hi))
            hi = lo + k
        else:
            path.append(mth(lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def consistency_proof(
    old_size: int, new_size: int, source: SubtreeHashes | Sequence[bytes]
) -> list[bytes]:
    """Return the RFC 9162 consistency proof PROOF(old_size, D[0:new_size]).

    Raises:
        ValueError: not ``0 <= old_size <= new_size``.

    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"need 0 <= old_size <= new_size, got {old_size}, {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    mth = _as_subtrees(source)

    def subproof(m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [mth(lo, hi)]
        k = largest_power_of_two_below(n)
        if m <= k:
            return subproof(m, lo, lo + k, whole) + [mth(lo + k, hi)]
        return subproof(m - k, lo + k, hi, False) + [mth(lo, lo + k)]

    return subproof(old_size, 0, new_size, True)


def verify_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an inclusion proof (RFC 9162 §2.1.3.2).

    Raises:
        ProofError: the proof does not lead from the leaf to ``root``.

    """
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not match the root")


def verify_consistency_proof(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check a consistency proof (RFC 9162 §2.1.4.2).

    Raises:
        ProofError: the proof does not show that the old tree is a prefix of the new one.

    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"need 0 <= old_size <= new_size, got {old_size}, {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("same size but different roots")
        return
    if old_size == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not match the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not match the new root")
