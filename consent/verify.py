"""Auditor-side verification of a node's ledger, without trusting the node.

:func:`verify_ledger` recomputes every leaf hash from the stored canonical bytes, checks
each entry's own index, kind, time and link to the previous leaf, rebuilds the Merkle
tree, compares the stored subtree hashes, checks every signed tree head the ledger holds
(signature and root at its size), and, given a head saved earlier, checks that the
present ledger extends it (same root at that size, plus an RFC 9162 consistency proof to
the latest head). Anything wrong raises :class:`~consent.errors.LedgerVerificationError`
naming the first bad entry (or the narrowest range a signed root can pin it to).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from consent.canonical import scan_canonical
from consent.errors import (
    LedgerUnreadableError,
    LedgerVerificationError,
    ProofError,
    SignatureError,
)
from consent.ledger import ZERO_HASH, check_format
from consent.merkle import (
    consistency_proof,
    hash_leaf,
    level_lookup,
    levels_from_leaves,
    root_from_levels,
    subtree_hashes,
    verify_consistency_proof,
    verify_inclusion_proof,
)
from consent.signing import SignedTreeHead

__all__ = [
    "VerificationReport",
    "verify_consistency",
    "verify_entry",
    "verify_inclusion",
    "verify_ledger",
]


class VerificationReport(BaseModel):
    """What a successful verification established.

    Attributes:
        path: the ledger file.
        tree_size: number of entries verified.
        root_hash: recomputed root over all entries (hex).
        heads_checked: signed heads whose signature and root were verified.
        latest_head: the newest signed head (covers every entry).
        since_tree_size: size of the earlier head the ledger was shown to extend, if any.
        entries_by_kind: entry counts per kind.

    """

    model_config = ConfigDict(frozen=True)

    path: str
    tree_size: int
    root_hash: str
    heads_checked: int
    latest_head: SignedTreeHead | None
    since_tree_size: int | None
    entries_by_kind: dict[str, int]


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an RFC 9162 inclusion proof.

    Raises:
        ProofError: the proof does not lead from the leaf to ``root``.

    """
    verify_inclusion_proof(leaf_hash, index, tree_size, proof, root)


def verify_entry(
    data: bytes,
    index: int,
    proof: Sequence[bytes],
    head: SignedTreeHead,
    public_key: Ed25519PublicKey,
) -> None:
    """Check that entry bytes sit at ``index`` under a signed head.

    Raises:
        SignatureError: the head is not signed by ``public_key``.
        ProofError: the entry is not at that index in that tree.

    """
    head.verify(public_key)
    root = bytes.fromhex(head.root_hash)
    verify_inclusion_proof(hash_leaf(data), index, head.tree_size, proof, root)


def verify_consistency(
    old: SignedTreeHead,
    new: SignedTreeHead,
    proof: Sequence[bytes],
    public_key: Ed25519PublicKey | None = None,
) -> None:
    """Check that the tree of ``new`` extends the tree of ``old`` (RFC 9162).

    Args:
        old: the earlier head.
        new: the later head.
        proof: the consistency proof from the node.
        public_key: when given, both heads' signatures are checked too.

    Raises:
        SignatureError: a head is not signed by ``public_key``.
        ProofError: the proof fails: history was rewritten or forked.

    """
    if public_key is not None:
        old.verify(public_key)
        new.verify(public_key)
    verify_consistency_proof(
        old.tree_size,
        new.tree_size,
        bytes.fromhex(old.root_hash),
        bytes.fromhex(new.root_hash),
        proof,
    )


def _open(path: Path) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise LedgerUnreadableError(f"{path} does not exist")
    try:
        db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        db.execute("SELECT 1 FROM entries LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise LedgerUnreadableError(f"not a readable ledger: {exc}") from None
    try:
        check_format(db)
    except LedgerUnreadableError:
        db.close()
        raise
    return db


def _check_entries(
    db: sqlite3.Connection, check_canonical: bool
) -> tuple[list[bytes], Counter[str]]:
    leaves: list[bytes] = []
    kinds: Counter[str] = Counter()
    prev = ZERO_HASH
    expected = 0
    loads = json.loads

    for idx, kind, at, data, leaf in db.execute(
        "SELECT idx, kind, at, data, leaf FROM entries ORDER BY idx"
    ):
        if idx != expected:
            raise LedgerVerificationError(
                expected,
                f"entry {expected} is missing (the next stored entry has index {idx})",
                last_index=idx - 1 if idx > expected else expected,
            )
        data = _blob(data, idx, "entry bytes")
        computed = hash_leaf(data)
        if computed != _blob(leaf, idx, "leaf hash"):
            raise LedgerVerificationError(idx, "entry bytes do not match their stored leaf hash")
        try:
            if check_canonical:
                obj, canonical = scan_canonical(data)
            else:
                obj, canonical = loads(data), True
            ok_fields = (
                obj["index"] == idx
                and obj["kind"] == kind
                and obj["at"] == at
                and obj["v"] == 1
                and isinstance(obj["payload"], dict)
            )
        except (ValueError, KeyError, TypeError, RecursionError):
            # RecursionError: JSON nested deeper than the parser goes is no ledger entry
            raise LedgerVerificationError(idx, "entry is not a well-formed ledger entry") from None
        if not ok_fields:
            raise LedgerVerificationError(
                idx,
                "entry's own index, kind or time differ from where it is stored "
                "(moved, reordered or relabelled)",
            )
        if obj["prev"] != prev.hex():
            raise LedgerVerificationError(
                max(idx - 1, 0),
                f"hash chain broken between entries {idx - 1} and {idx}: one of them was "
                "rewritten, removed or inserted",
                last_index=idx,
            )
        if not canonical:
            raise LedgerVerificationError(idx, "entry is not in canonical (RFC 8785) form")
        kinds[kind] += 1
        leaves.append(computed)
        prev = computed
        expected += 1  # noqa: SIM113 - compared with the stored index above
    return leaves, kinds


def _blob(value: object, index: int, what: str) -> bytes:
    """Return a stored BLOB cell as bytes.

    Raises:
        LedgerVerificationError: the cell is not a BLOB (the file was edited by hand).
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise LedgerVerificationError(index, f"{what} of entry {index} is not stored as bytes")


def _check_nodes(db: sqlite3.Connection, levels: list[list[bytes]]) -> None:
    """Check the stored subtree hashes are exactly the recomputed tree's complete subtrees.

    Raises:
        LedgerVerificationError: a row is altered, extra (outside the tree) or missing.
    """
    seen: set[tuple[int, int]] = set()
    for level, pos, h in db.execute("SELECT level, pos, hash FROM nodes ORDER BY level, pos"):
        if not (isinstance(level, int) and isinstance(pos, int)):
            raise LedgerVerificationError(
                None, f"stored Merkle node ({level!r}, {pos!r}) has a non-integer position"
            )
        if not 1 <= level < len(levels) or not 0 <= pos < len(levels[level]):
            raise LedgerVerificationError(
                None,
                f"stored Merkle node (level {level}, position {pos}) lies outside the tree "
                "of the stored entries: the tree state was altered",
            )
        lo = pos << level
        if levels[level][pos] != _blob(h, lo, "Merkle node"):
            raise LedgerVerificationError(
                lo,
                f"stored Merkle node (level {level}, position {pos}) does not match the "
                "entries it covers; proofs served from it would be false",
                last_index=lo + (1 << level) - 1,
            )
        seen.add((level, pos))
    for level in range(1, len(levels)):
        for pos in range(len(levels[level])):
            if (level, pos) not in seen:
                lo = pos << level
                raise LedgerVerificationError(
                    lo,
                    f"stored Merkle node (level {level}, position {pos}) is missing: the tree "
                    "state was altered and proofs over these entries cannot be served",
                    last_index=lo + (1 << level) - 1,
                )


def verify_ledger(
    path: Path,
    public_key: Ed25519PublicKey,
    since: SignedTreeHead | None = None,
    *,
    check_canonical: bool = True,
) -> VerificationReport:
    """Verify a ledger file completely.

    Args:
        path: the ledger's SQLite file (a copy is fine; it is opened read-only).
        public_key: the node's Ed25519 public key.
        since: a signed head saved earlier; the ledger must extend it.
        check_canonical: also check each entry is byte-for-byte RFC 8785 canonical.

    Returns:
        What was verified.

    Raises:
        LedgerUnreadableError: the file cannot be examined (missing, not SQLite, damaged,
            a table or column of the format gone); nothing was verified.
        LedgerVerificationError: anything did not hold; ``index`` names the first bad
            entry (``index``..``last_index`` when only a signed root pins it down).

    """
    db = _open(path)
    try:
        leaves, kinds = _check_entries(db, check_canonical)
        n = len(leaves)
        levels = levels_from_leaves(leaves) if leaves else [[]]
        heads: list[tuple[int, SignedTreeHead]] = []
        stored_sizes: list[object] = []
        for hid, size, sth in db.execute("SELECT id, tree_size, sth FROM heads ORDER BY id"):
            if hid != len(heads) + 1:  # ids run 1, 2, ...: heads are never deleted
                raise LedgerVerificationError(
                    None,
                    f"signed head #{len(heads) + 1} is missing (the next stored head is "
                    f"#{hid}): signed heads were deleted",
                )
            try:
                head = SignedTreeHead.model_validate_json(sth)
            except (ValidationError, TypeError, ValueError, RecursionError):
                raise LedgerVerificationError(None, f"signed head #{hid} is malformed") from None
            heads.append((hid, head))
            stored_sizes.append(size)
        _check_heads(heads, public_key, n, levels, since)
        for (hid, head), size in zip(heads, stored_sizes, strict=True):
            if size != head.tree_size:  # the writer's truncation guard reads this column
                raise LedgerVerificationError(
                    None, f"signed head #{hid} is stored as size {size!r}, signed {head.tree_size}"
                )
        _check_nodes(db, levels)
    except sqlite3.Error as exc:
        raise LedgerUnreadableError(f"{path} cannot be read as a ledger: {exc}") from None
    finally:
        db.close()
    latest = max((h for _, h in heads), key=lambda h: (h.tree_size, h.timestamp), default=None)
    return VerificationReport(
        path=str(path),
        tree_size=n,
        root_hash=root_from_levels(levels, n).hex(),
        heads_checked=len(heads),
        latest_head=latest,
        since_tree_size=None if since is None else since.tree_size,
        entries_by_kind=dict(sorted(kinds.items())),
    )


def _check_heads(
    heads: list[tuple[int, SignedTreeHead]],
    public_key: Ed25519PublicKey,
    n: int,
    levels: list[list[bytes]],
    since: SignedTreeHead | None,
) -> None:

    for hid, head in heads:
        try:
            head.verify(public_key)
        except SignatureError as exc:
            raise LedgerVerificationError(None, f"signed head #{hid}: {exc}") from None
    widest = max((h for _, h in heads), key=lambda h: h.tree_size, default=None)
    if widest is not None and widest.tree_size > n:
        _check_head_against(widest, n, levels, 0, "a signed head")
    good_size = 0
    last_time: datetime | None = None
    for hid, head in sorted(heads, key=lambda h: (h[1].tree_size, h[0])):
        _check_head_against(head, n, levels, good_size, f"signed head #{hid}")
        if last_time is not None and head.timestamp < last_time:
            raise LedgerVerificationError(
                max(good_size - 1, 0),
                f"signed head #{hid} covers more entries than an earlier "
                "head but carries an older timestamp (backdated)",
            )
        good_size, last_time = head.tree_size, head.timestamp
    latest = max((h for _, h in heads), key=lambda h: (h.tree_size, h.timestamp), default=None)
    if n and (latest is None or latest.tree_size < n):
        covered = 0 if latest is None else latest.tree_size
        raise LedgerVerificationError(
            covered, "entries are not covered by any signed tree head", last_index=n - 1
        )
    if since is not None:
        try:
            since.verify(public_key)
        except SignatureError as exc:
            raise LedgerVerificationError(None, f"the earlier head: {exc}") from None
        _check_head_against(since, n, levels, 0, "the earlier head")
        if latest is not None:
            proof = consistency_proof(
                since.tree_size,
                latest.tree_size,
                subtree_hashes(level_lookup(levels)),
            )
            try:
                verify_consistency(since, latest, proof)
            except ProofError as exc:
                raise LedgerVerificationError(
                    0,
                    f"latest head is not consistent with the earlier head: {exc}",
                    last_index=max(since.tree_size - 1, 0),
                ) from None


def _check_head_against(
    head: SignedTreeHead, n: int, levels: list[list[bytes]], good_size: int, label: str
) -> None:
    if head.tree_size > n:
        raise LedgerVerificationError(
            n,
            f"{label} (signed {head.timestamp.isoformat()}) covers {head.tree_size} entries "
            f"but the ledger holds {n}: entries were deleted (truncated)",
            last_index=head.tree_size - 1,
        )
    if root_from_levels(levels, head.tree_size).hex() != head.root_hash:
        lo = min(good_size, max(head.tree_size - 1, 0))
        raise LedgerVerificationError(
            lo,
            f"{label} (signed {head.timestamp.isoformat()}, size {head.tree_size}) does not "
            "match the entries: history was rewritten or forked",
            last_index=max(head.tree_size - 1, lo),
        )
