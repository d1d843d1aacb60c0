"""The per-node, append-only consent and usage ledger (SQLite + RFC 9162 Merkle tree).

Storage (one SQLite file, WAL, ``synchronous=FULL``, one transaction per append or
batch, so a crash never leaves half an entry):

* ``entries(idx, kind, at, data, leaf)``: ``data`` is the entry's canonical JSON (RFC 8785)
  ``{"at", "index", "kind", "payload", "prev", "v": 1}`` where ``prev`` is the previous
  entry's leaf hash (hex; 64 zeros for entry 0) and ``leaf = SHA-256(0x00 || data)``.
  Carrying its own index and the previous leaf lets a verifier name the entry that was
  deleted, reordered or rewritten.
* ``nodes(level, pos, hash)``: every complete subtree of 2**level leaves, so roots and
  proofs need O(log n) look-ups.
* ``heads``: every signed tree head the ledger issued (one per append call when the
  ledger has a key).

Triggers refuse UPDATE and DELETE; they stop accidents, not an attacker. Tampering is
caught by :func:`consent.verify.verify_ledger`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict

from consent.canonical import canonical_json
from consent.entries import normalise_payload
from consent.errors import (
    ConsentError,
    LedgerError,
    LedgerUnreadableError,
    LedgerVerificationError,
)
from consent.merkle import (
    EMPTY_ROOT,
    PerfectNode,
    consistency_proof,
    frontier,
    hash_leaf,
    inclusion_proof,
    push_leaf,
    root_from_frontier,
    subtree_hashes,
)
from consent.model import utc
from consent.signing import SignedTreeHead, sign_tree_head
from consent.sqlite_store import SqliteStore, append_only

__all__ = [
    "LEDGER_FORMAT",
    "ZERO_HASH",
    "Ledger",
    "LedgerEntry",
    "canonical_entry",
    "check_format",
    "format_time",
    "subject_commitment",
]

ZERO_HASH = b"\x00" * 32
#: What a ledger's ``meta`` table holds: one row, ``('format', LEDGER_FORMAT)``.
LEDGER_FORMAT = "hamanasu-ledger-1"
MIN_SALT_BYTES = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(
    idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, at TEXT NOT NULL,
    data BLOB NOT NULL, leaf BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS entries_kind ON entries(kind, idx);
CREATE TABLE IF NOT EXISTS nodes(
    level INTEGER NOT NULL, pos INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY(level, pos)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads(
    id INTEGER PRIMARY KEY, tree_size INTEGER NOT NULL, sth TEXT NOT NULL);
"""
_SCHEMA += append_only("entries", "ledger entries")
_SCHEMA += append_only("nodes", "ledger nodes", deletes=False)
_SCHEMA += append_only("heads", "signed heads")


def check_format(db: sqlite3.Connection) -> None:
    """Check a ledger file's ``meta`` table holds its format marker and nothing else.

    A ledger whose marker is gone or altered (or that holds markers this version does
    not know) cannot be read as this format: nothing in it can be trusted to mean what
    this code takes it to mean.

    Raises:
        LedgerUnreadableError: the ``meta`` table is gone, or does not hold exactly
            ``('format', LEDGER_FORMAT)``.
    """
    try:
        rows = db.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    except sqlite3.Error as exc:
        raise LedgerUnreadableError(f"not a readable ledger: {exc}") from None
    if [tuple(r) for r in rows] != [("format", LEDGER_FORMAT)]:
        found = ", ".join(f"{k!r}={v!r}" for k, v in rows[:3]) or "nothing"
        raise LedgerUnreadableError(
            f"not a {LEDGER_FORMAT} ledger: its meta table holds {found} "
            f"instead of format={LEDGER_FORMAT!r}"
        )


def format_time(at: datetime) -> str:
    """Return the ledger's timestamp text: UTC, microseconds, ``Z``."""
    return utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def canonical_entry(
    index: int, kind: str, at: str, payload: Mapping[str, Any], prev: bytes
) -> bytes:
    """Return the canonical (RFC 8785) bytes of one entry.

    Raises:
        LedgerError: the payload holds something JSON cannot represent canonically.

    """
    try:
        return canonical_json(
            {"at": at, "index": index, "kind": kind, "payload": payload, "prev": prev.hex(), "v": 1}
        )
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise LedgerError(f"entry {index} payload is not canonical JSON: {exc}") from None


def subject_commitment(pseudonyms: Iterable[str], salt: bytes) -> str:
    """Commit to a set of subjects without revealing them.

    Construction: for each distinct pseudonym ``p``, ``h_p = SHA-256(salt || UTF-8(p))``;
    the commitment is ``SHA-256(h_1 || h_2 || ... || h_n)`` (hex) over the ``h_p`` sorted
    bytewise. Order and duplicates do not change it; the empty set commits to
    ``SHA-256("")``. The salt (one per job, at least 16 bytes, kept on the node) is what
    an auditor receives, with the list, to recompute it.

    Returns:
        The commitment as 64 hex characters.

    Raises:
        ConsentError: the salt is shorter than 16 bytes.

    """
    if not isinstance(salt, bytes | bytearray) or len(salt) < MIN_SALT_BYTES:
        raise ConsentError(f"salt must be at least {MIN_SALT_BYTES} random bytes")
    hashes = sorted({hashlib.sha256(bytes(salt) + p.encode("utf-8")).digest() for p in pseudonyms})
    return hashlib.sha256(b"".join(hashes)).hexdigest()


class LedgerEntry(BaseModel):
    """One stored entry, as read back."""

    model_config = ConfigDict(frozen=True)

    index: int
    kind: str
    at: datetime
    payload: dict[str, Any]
    leaf_hash: str


EntrySpec = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], datetime | None]


class Ledger(SqliteStore):
    """An append-only ledger of consent events, data uses and budget changes.

    Args:
        path: the SQLite file (created when missing).
        signing_key: the node's Ed25519 key; when given, every append is followed by a
            signed tree head stored in the ledger.
        clock: returns "now" (tests pass a fixed clock).
        read_only: open an existing ledger read-only, to read heads, entries and proofs
            (nothing is written, the file's bytes and time stay as they were; appending
            and signing fail).

    Raises:
        LedgerError: the file is not a ledger, or it holds fewer entries than a head it
            signed (it was truncated; appending would hide that).
        LedgerUnreadableError: (read-only) the file cannot be read as a ledger: not
            SQLite, a table gone, its format marker gone or altered.

    """

    def __init__(
        self,
        path: Path,
        signing_key: Ed25519PrivateKey | None = None,
        clock: Callable[[], datetime] = _utc_now,
        *,
        read_only: bool = False,
    ) -> None:
        self._key = signing_key
        self._clock = clock
        if read_only:
            self._open_read_only(path)
            return
        try:
            super().__init__(path)
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (LEDGER_FORMAT,))
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path} is not a usable ledger: {exc}") from None
        self._size = -1
        self._frontier: list[tuple[int, bytes]] = []
        self._last_leaf = ZERO_HASH
        self._sync()
        head = self._db.execute("SELECT MAX(tree_size) FROM heads").fetchone()[0]
        if head is not None and head > self._size:
            raise LedgerError(
                f"{self.path} holds {self._size} entries but signed a head of size {head}; "
                "it was truncated"
            )

    def _open_read_only(self, path: Path) -> None:
        try:
            super().__init__(path, read_only=True)
            check_format(self._db)
            for table in ("entries", "nodes", "heads"):
                self._db.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()  # noqa: S608
            self._size = -1
            self._sync()
        except sqlite3.Error as exc:
            raise LedgerUnreadableError(f"not a readable ledger: {exc}") from None

    # ---- tree state ---------------------------------------------------------------
    def _sync(self) -> None:
        """Reload the frontier if another connection appended since we last looked."""
        row = self._db.execute("SELECT MAX(idx) FROM entries").fetchone()
        size = 0 if row[0] is None else row[0] + 1
        if size == self._size:
            return
        self._frontier = frontier(size, self._node)
        self._size = size
        self._last_leaf = self._node(0, size - 1) if size else ZERO_HASH

    def _node(self, level: int, pos: int) -> bytes:
        if level == 0:
            row = self._db.execute("SELECT leaf FROM entries WHERE idx = ?", (pos,)).fetchone()
        else:
            row = self._db.execute(
                "SELECT hash FROM nodes WHERE level = ? AND pos = ?", (level, pos)
            ).fetchone()
        if row is None:
            raise LedgerError(f"ledger node ({level}, {pos}) is missing")
        return bytes(row[0])

    def _subtree(self, lo: int, hi: int) -> bytes:
        """Return MTH of entries ``[lo, hi)`` from the stored subtrees."""
        return subtree_hashes(self._node)(lo, hi)

    @property
    def size(self) -> int:
        """Number of entries."""
        with self._lock:
            self._sync()
            return self._size

    def root(self, size: int | None = None) -> bytes:
        """Return the RFC 9162 root of the first ``size`` entries (default: all).

        Raises:
            LedgerError: ``size`` is larger than the ledger.

        """
        with self._lock:
            self._sync()
            if size is None or size == self._size:
                return root_from_frontier(self._frontier)
            if not 0 <= size <= self._size:
                raise LedgerError(f"size {size} is not between 0 and {self._size}")
            return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def leaf_hash(self, index: int) -> bytes:
        """Return the stored leaf hash of entry ``index``.

        Raises:
            LedgerError: no such entry.

        """
        with self._lock:
            return self._node(0, index)

    def entry_bytes(self, index: int) -> bytes:
        """Return the canonical bytes of entry ``index``.

        Raises:
            LedgerError: no such entry.

        """
        row = self._db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise LedgerError(f"no entry {index}")
        return bytes(row[0])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the RFC 9162 inclusion proof of entry ``index`` in the tree of ``size``.

        Raises:
            LedgerError: ``index`` or ``size`` out of range.

        """
        with self._lock:
            self._sync()
            size = self._size if size is None else size
            if not 0 <= index < size <= self._size:
                raise LedgerError(f"need 0 <= index < size <= {self._size}, got {index}, {size}")
            return inclusion_proof(index, size, self._subtree)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Return the RFC 9162 consistency proof between two tree sizes.

        Raises:
            LedgerError: sizes out of range.

        """
        with self._lock:
            self._sync()
            new_size = self._size if new_size is None else new_size
            if not 0 <= old_size <= new_size <= self._size:
                raise LedgerError(
                    f"need 0 <= old_size <= new_size <= {self._size}, got {old_size}, {new_size}"
                )
            return consistency_proof(old_size, new_size, self._subtree)

    # ---- appending ----------------------------------------------------------------
    def append(self, kind: str, payload: Mapping[str, Any], at: datetime | None = None) -> int:
        """Append one entry in its own transaction.

        Args:
            kind: ``consent.granted``, ``job.usage``, ``budget.charged``, ...
            payload: the entry's content (validated for known kinds; no identifiers).
            at: when the event happened (default: the clock).

        Returns:
            The entry's index.

        Raises:
            LedgerError: invalid kind or payload.
            IdentifierInPayloadError: the payload carries a direct identifier.

        """
        return self.append_many([(kind, payload, at)])[0]

    def append_many(self, entries: Iterable[EntrySpec]) -> list[int]:
        """Append many entries in one transaction (all or none), then sign one head.

        Args:
            entries: ``(kind, payload)`` or ``(kind, payload, at)`` tuples.

        Returns:
            The indices of the new entries, in order.

        Raises:
            LedgerError: any entry is invalid (nothing is written).
            IdentifierInPayloadError: any payload carries a direct identifier.

        """
        prepared: list[tuple[str, str, dict[str, Any]]] = []
        now = self._clock()
        for spec in entries:
            kind, payload = spec[0], spec[1]
            at = spec[2] if len(spec) > 2 else None
            prepared.append((kind, format_time(at or now), normalise_payload(kind, payload)))
        if not prepared:
            return []
        with self._lock:
            saved = (self._size, list(self._frontier), self._last_leaf)
            try:
                with self._transaction() as db:
                    self._sync()
                    start = self._size
                    rows: list[tuple[int, str, str, bytes, bytes]] = []
                    nodes: list[PerfectNode] = []
                    prev = self._last_leaf
                    for i, (kind, at_text, payload) in enumerate(prepared):
                        index = start + i
                        data = canonical_entry(index, kind, at_text, payload, prev)
                        leaf = hash_leaf(data)
                        rows.append((index, kind, at_text, data, leaf))
                        prev = leaf
                        nodes.extend(push_leaf(self._frontier, leaf, index))
                    db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?)", rows)
                    db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", nodes)
                    self._size, self._last_leaf = start + len(rows), prev
                    if self._key is not None:
                        self._store_head(sign_tree_head(self._key, self._size, self.root(), now))
            except BaseException:
                self._size, self._frontier, self._last_leaf = saved
                self._size = -1  # force a reload from disk
                self._sync()
                raise
            return list(range(start, start + len(rows)))

    # ---- signed heads -------------------------------------------------------------
    def _store_head(self, head: SignedTreeHead) -> None:
        self._db.execute(
            "INSERT INTO heads(tree_size, sth) VALUES (?, ?)",
            (head.tree_size, head.model_dump_json()),
        )

    def sign_head(self, at: datetime | None = None) -> SignedTreeHead:
        """Sign the current tree head, store it in the ledger, and return it.

        Raises:
            LedgerError: the ledger has no signing key.

        """
        if self._key is None:
            raise LedgerError("this ledger was opened without a signing key")
        with self._transaction():
            self._sync()
            head = sign_tree_head(self._key, self._size, self.root(), at or self._clock())
            self._store_head(head)
        return head

    def heads(self) -> list[SignedTreeHead]:
        """Return every signed head the ledger issued, oldest first."""
        rows = self._db.execute("SELECT id, sth FROM heads ORDER BY id").fetchall()
        return [_stored_head(r[0], r[1]) for r in rows]

    def latest_head(self) -> SignedTreeHead | None:
        """Return the most recently issued signed head, if any."""
        row = self._db.execute("SELECT id, sth FROM heads ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else _stored_head(row[0], row[1])

    # ---- reading ------------------------------------------------------------------
    def entries(
        self, kind: str | None = None, since: int | datetime | None = None
    ) -> Iterator[LedgerEntry]:
        """Yield entries in order, optionally of one kind and from an index or a time."""
        sql = "SELECT idx, kind, at, data, leaf FROM entries WHERE 1=1"
        args: list[Any] = []
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        if isinstance(since, int):
            sql += " AND idx >= ?"
            args.append(since)
        elif isinstance(since, datetime):
            sql += " AND at >= ?"
            args.append(format_time(since))
        for idx, k, at, data, leaf in self._db.execute(sql + " ORDER BY idx", args):
            yield LedgerEntry(
                index=idx,
                kind=k,
                at=datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC),
                payload=json.loads(data)["payload"],
                leaf_hash=bytes(leaf).hex(),
            )


def _stored_head(head_id: int, raw: str | bytes) -> SignedTreeHead:
    """Return a stored signed head.

    Raises:
        LedgerVerificationError: the stored head is not a signed head (altered).
    """
    try:
        return SignedTreeHead.model_validate_json(raw)
    except (ValueError, TypeError, RecursionError):  # ValidationError is a ValueError
        raise LedgerVerificationError(None, f"signed head #{head_id} is malformed") from None
