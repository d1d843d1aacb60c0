"""One SQLite file shared by threads and processes: WAL, full sync, one writer at a time.

The consent ledger, the consent registry and the privacy-budget ledger each keep their
state in one such file. Writes run in ``BEGIN IMMEDIATE`` transactions, so writers from
other threads (one lock per object) and other processes (SQLite's write lock, waited for
up to ``busy_timeout`` seconds) serialise; a transaction that raises is rolled back and
changes nothing. ``synchronous=FULL`` makes every commit durable before it returns, so a
process that dies loses nothing it committed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["SqliteStore", "append_only"]


def append_only(table: str, what: str, *, deletes: bool = True) -> str:
    """Return the SQL of triggers that refuse UPDATE (and DELETE) on ``table``.

    They stop accidents, not an attacker: tampering is for the verifiers to catch.

    Args:
        table: the table.
        what: how the refusal names the rows (``ledger entries`` -> "ledger entries are
            append-only").
        deletes: whether DELETE is refused too.

    Returns:
        ``CREATE TRIGGER IF NOT EXISTS`` statements (``{table}_append_only_u`` and ``_d``).
    """
    ops = [("u", "UPDATE")] + ([("d", "DELETE")] if deletes else [])
    return "".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_append_only_{suffix} BEFORE {op} ON {table}\n"
        f"    BEGIN SELECT RAISE(ABORT, '{what} are append-only'); END;\n"
        for suffix, op in ops
    )


class SqliteStore:
    """A SQLite file in WAL mode with a lock, write transactions and a context manager.

    Subclasses add their schema and queries; they reach the connection as ``self._db``
    and hold ``self._lock`` around reads that must not interleave with a write.

    Args:
        path: the SQLite file (created when missing).
        busy_timeout: seconds to wait for another process's write lock before giving up.
        foreign_keys: whether SQLite enforces the schema's foreign keys.
        named_rows: whether rows come back as :class:`sqlite3.Row` (read by column name).
        read_only: open the existing file read-only (SQLite's ``mode=ro``): nothing is
            written to it, not even its journal mode, so its bytes and modification time
            stay as they were and a file without write permission can be read.

    Raises:
        sqlite3.DatabaseError: the file cannot be opened as a SQLite database (callers
            turn it into their own error).
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 5.0,
        foreign_keys: bool = False,
        named_rows: bool = False,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        target = f"{self.path.resolve().as_uri()}?mode=ro" if read_only else self.path
        self._db = sqlite3.connect(
            target,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=read_only,
        )
        if named_rows:
            self._db.row_factory = sqlite3.Row
        if read_only:
            return
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        if foreign_keys:
            self._db.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block as one ``BEGIN IMMEDIATE`` transaction under the object's lock.

        Yields:
            The connection, inside the open transaction.

        Raises:
            BaseException: whatever the block raised, after rolling the transaction back.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Run the block's reads on one consistent snapshot (WAL readers never block writers).

        Yields:
            The connection, inside a read transaction.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection (the object is unusable afterwards)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
