"""The checks behind a node's audit snapshot: head signature, consistency, entries, the root.

The coordinator runs them on what a node's service pushes (:mod:`federation.audit_models`)
before anything a head covers becomes visible to auditors. They are ``consent``'s RFC 9162
and Ed25519 code applied to the mirrored ledger; the coordinator passes in how to read its
stored copy (perfect-subtree hashes, staged entries). Each check raises
:class:`~federation.errors.AuditCheckError`, never returns a bool a caller could forget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consent.canonical import scan_canonical
from consent.errors import ProofError, SignatureError
from consent.merkle import (
    EMPTY_ROOT,
    PerfectHashes,
    PerfectNode,
    frontier,
    hash_leaf,
    inclusion_proof,
    push_leaf,
    root_from_frontier,
    subtree_hashes,
    verify_consistency_proof,
)
from consent.signing import SignedTreeHead, key_id
from federation.audit_models import LEDGER_TIME_FORMAT, MAX_ENTRY_BYTES, withheld
from federation.errors import AuditCheckError

__all__ = [
    "MirroredEntry",
    "PerfectHashes",
    "PerfectNode",
    "VerifiedHead",
    "check_consistency",
    "check_entry",
    "check_head_signature",
    "check_new_head",
    "head_timestamp_text",
    "inclusion_path",
    "mirrored_leaf",
    "public_key_id",
]

#: A mirrored entry as the coordinator stores it: index, kind, time (the ledger's text
#: form), canonical bytes (empty for a withheld entry) and leaf hash.
MirroredEntry = tuple[int, str, str, bytes, bytes]


@dataclass(frozen=True)
class VerifiedHead:
    """The head the coordinator verified last for a node.

    Attributes:
        size: the entries it covers; ``root`` its root hash.
        key_id: the id of the key that signed it.
        timestamp: its signed time.
    """

    size: int
    root: bytes
    key_id: str
    timestamp: datetime


def head_timestamp_text(head: SignedTreeHead) -> str:
    """Return the head's timestamp exactly as its signature covers it."""
    return head.timestamp.strftime(LEDGER_TIME_FORMAT)


def public_key_id(public_key_pem: str) -> str:
    """Return the key id (SHA-256 of the raw key, hex) of a PEM Ed25519 public key.

    Raises:
        AuditCheckError: not a PEM Ed25519 public key.
    """
    return key_id(_load_key(public_key_pem))


def _load_key(public_key_pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode("utf-8"))
    except (ValueError, TypeError):
        raise AuditCheckError("the node's registered ledger key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditCheckError("the node's registered ledger key is not an Ed25519 key")
    return key


def check_head_signature(head: SignedTreeHead, public_key_pem: str | None) -> None:
    """Check the head's Ed25519 signature against the node's registered ledger key.

    Raises:
        AuditCheckError: no key registered, not an Ed25519 key, another key signed the head,
            or the signature is invalid (reported opaquely).
    """
    if not public_key_pem:
        raise AuditCheckError("the node has no ledger public key registered")
    try:
        head.verify(_load_key(public_key_pem))
    except SignatureError as exc:
        raise AuditCheckError(f"signed tree head (size {head.tree_size}): {exc}") from None


def check_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[str]
) -> None:
    """Check an RFC 9162 consistency proof between two heads.

    Raises:
        AuditCheckError: the new head does not extend the old one (``rewrite`` set).
    """
    try:
        verify_consistency_proof(
            old_size, new_size, old_root, new_root, [bytes.fromhex(p) for p in proof]
        )
    except (ProofError, ValueError) as exc:
        raise AuditCheckError(
            f"the head of size {new_size} does not extend the verified head of size {old_size} "
            f"({exc}): history signed before was rewritten or forked",
            index=0,
            rewrite=True,
        ) from None


def check_entry(index: int, kind: str, at: str, data: bytes, prev_leaf: bytes) -> bytes:
    """Check one mirrored entry against its own fields and the previous leaf; return its leaf.

    The entry's canonical JSON must carry its own index, kind and time, ``"v": 1``, a payload
    object and the previous entry's leaf hash (``prev``), and be RFC 8785 canonical.

    Args:
        index: where the entry is stored.
        kind: its stored kind.
        at: its stored time (the ledger's text form).
        data: its canonical bytes.
        prev_leaf: the leaf hash of entry ``index - 1`` (32 zero bytes for entry 0).

    Returns:
        The leaf hash SHA-256(0x00 || data).

    Raises:
        AuditCheckError: the entry is malformed or does not link to the previous one
            (``rewrite`` set: the node's stored entries differ from what it chained).
    """
    i = index
    if len(data) > MAX_ENTRY_BYTES:
        raise AuditCheckError(f"entry {i}: larger than {MAX_ENTRY_BYTES} bytes", index=i)
    try:
        obj, canonical = scan_canonical(data)
    except (ValueError, UnicodeDecodeError):
        raise AuditCheckError(f"entry {i}: not a well-formed ledger entry", index=i) from None
    if not (
        isinstance(obj, dict)
        and obj.get("index") == i
        and obj.get("kind") == kind
        and obj.get("at") == at
        and obj.get("v") == 1
        and isinstance(obj.get("payload"), dict)
    ):
        raise AuditCheckError(
            f"entry {i}: its own index, kind or time differ from where it is stored",
            index=i,
            rewrite=True,
        )
    if obj.get("prev") != prev_leaf.hex():
        raise AuditCheckError(
            f"entry {i}: hash chain broken (it does not name entry {i - 1}'s leaf): an entry "
            "was rewritten, removed or inserted",
            index=max(i - 1, 0),
            rewrite=True,
        )
    if not canonical:
        raise AuditCheckError(f"entry {i}: not in canonical (RFC 8785) form", index=i)
    return hash_leaf(data)


def mirrored_leaf(data: bytes, sent_leaf: str | None) -> bytes:
    """Return the leaf hash to store for a mirrored entry.

    Args:
        data: the entry's canonical bytes (empty for a withheld entry).
        sent_leaf: the leaf hash (hex) the node sent with a withheld entry.

    Returns:
        SHA-256(0x00 || data), or the sent leaf for a withheld entry (its signed root and
        the next entry's chain link are what check it).
    """
    return hash_leaf(data) if data else bytes.fromhex(sent_leaf or "")


def check_new_head(
    head: SignedTreeHead,
    public_key_pem: str | None,
    verified: VerifiedHead | None,
    staged: int,
    consistency_proof: Sequence[str],
    perfect: PerfectHashes,
    entries: Callable[[int, int], Iterable[MirroredEntry]],
) -> list[PerfectNode] | None:
    """Check a node's new signed head against the verified one and the mirrored entries.

    In order: the signature against the node's registered key (and the same key as the
    verified head); the head neither covers fewer entries nor is dated earlier, and at the
    same size has the same root; the node's consistency proof from the verified head; every
    new entry's own fields and hash chain; the root recomputed over the mirrored leaves
    (stored subtrees for the verified part, the new leaves hashed here).

    Args:
        head: the node's new signed tree head.
        public_key_pem: the node's registered Ed25519 ledger key.
        verified: the head verified before (None: none yet).
        staged: how many entries the coordinator holds for the node (verified and staged).
        consistency_proof: the node's proof (hex) from the verified head to ``head``.
        perfect: the stored perfect-subtree hashes of the verified entries (level 0: leaves).
        entries: ``entries(lo, hi)`` yields the staged entries ``lo..hi-1`` in order.

    Returns:
        The perfect subtrees the new entries complete, to store; None while entries the
        head covers are still missing (nothing was concluded).

    Raises:
        AuditCheckError: a check failed (``rewrite`` set when signed history was altered).
    """
    check_head_signature(head, public_key_pem)
    n = head.tree_size
    root = bytes.fromhex(head.root_hash)
    m = verified.size if verified is not None else 0
    if verified is not None:
        if verified.key_id != head.key_id:
            raise AuditCheckError(
                f"the head is signed by key {head.key_id[:16]}…, not by key "
                f"{verified.key_id[:16]}… that signed the verified head: the ledger was replaced",
                rewrite=True,
            )
        if n < m:  # before the date check: a ledger that lost entries resends an older head
            raise AuditCheckError(
                f"the head covers {n} entries but {m} were verified before: signed history "
                "was truncated (entries deleted, or a lost write-ahead log)",
                index=n,
                rewrite=True,
            )
        if head.timestamp < verified.timestamp:
            raise AuditCheckError(
                f"the head (size {n}) is dated before the verified head (size "
                f"{verified.size}): backdated",
                rewrite=True,
            )
    prev_root = verified.root if verified is not None else EMPTY_ROOT
    if n == m:
        if root != prev_root:
            raise AuditCheckError(
                f"the head has the verified size {n} but another root: signed history "
                "was rewritten",
                index=0,
                rewrite=True,
            )
        return []
    if m > 0:
        check_consistency(m, n, prev_root, root, consistency_proof)
    if staged < n:
        return None
    tip = frontier(m, perfect)
    prev_leaf = perfect(0, m - 1) if m else b"\x00" * 32
    nodes: list[PerfectNode] = []
    expected = m
    for idx, kind, at, data, stored_leaf in entries(m, n):
        if idx != expected:
            raise AuditCheckError(f"entry {expected} is missing from the upload", index=expected)
        expected += 1
        if data:
            leaf = check_entry(idx, kind, at, data, prev_leaf)
        elif withheld(kind):
            # content kept at the node: the signed root covers its leaf, and the next
            # entry's hash-chain link is checked against it
            leaf = stored_leaf
        else:
            raise AuditCheckError(f"entry {idx}: a {kind} entry came without its content")
        prev_leaf = leaf
        nodes.extend(push_leaf(tip, leaf, idx))
    if root_from_frontier(tip) != root:
        raise AuditCheckError(
            f"entries {m}..{n - 1} as the node stores them do not hash to the root it "
            "signed: entries were altered after signing",
            index=m,
            rewrite=True,
        )
    return nodes


def inclusion_path(index: int, size: int, perfect: PerfectHashes) -> list[str]:
    """Return the RFC 9162 inclusion proof (hex) of entry ``index`` in the tree of ``size``.

    Raises:
        ValueError: ``index`` is not below ``size``.
    """
    return [p.hex() for p in inclusion_proof(index, size, subtree_hashes(perfect))]
