"""The SQLite store helper: a transaction that raises changes nothing; append-only tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from consent.sqlite_store import SqliteStore, append_only


class _Counter(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS n(v INTEGER);" + append_only("n", "counts", deletes=False)
        )

    def add(self, value: int, fail: bool = False) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO n VALUES (?)", (value,))
            if fail:
                raise RuntimeError("veto")

    def values(self) -> list[int]:
        with self._snapshot() as db:
            return [v for (v,) in db.execute("SELECT v FROM n ORDER BY v")]


def test_rolls_back_a_transaction_that_raises(tmp_path: Path) -> None:
    with _Counter(tmp_path / "c.db") as c:
        c.add(1)
        with pytest.raises(RuntimeError, match="veto"):
            c.add(2, fail=True)
        assert c.values() == [1]
    with _Counter(tmp_path / "c.db") as again:  # committed rows survive a reopen
        assert again.values() == [1]
        assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_append_only_refuses_updates(tmp_path: Path) -> None:
    with _Counter(tmp_path / "c.db") as c:
        c.add(1)
        with pytest.raises(sqlite3.IntegrityError, match="counts are append-only"):
            c._db.execute("UPDATE n SET v = 5")
        c._db.execute("DELETE FROM n")  # deletes=False: only updates are refused
        assert c.values() == []
