"""Engine, sessions and start-up migrations of the coordinator's database.

SQLite (the default, one file under the data folder) runs in WAL mode with a busy
timeout, so status reads never wait for a writer; PostgreSQL is used through the same
code with a ``postgresql+psycopg://`` URL. :func:`migrate` applies the Alembic
migrations programmatically (a ``Config`` built in code, no ``alembic.ini``).

A pooled PostgreSQL connection is pinged before use only when it sat idle for a while
(:data:`PING_IDLE_AFTER_S`): that is when the server may have restarted or a firewall
dropped it. SQLAlchemy's ``pool_pre_ping`` pinged on every checkout, a third round trip
per status read that cost about 15 % of the reads a core can serve.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["MIGRATIONS", "aware", "make_engine", "make_sessionmaker", "migrate"]

#: The Alembic scripts folder.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: A pooled PostgreSQL connection idle this long (seconds) is pinged before it is used.
PING_IDLE_AFTER_S = 5.0


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: datetime | None) -> datetime | None: ...
def aware(value: datetime | None) -> datetime | None:
    """Return ``value`` timezone-aware: SQLite returns naive datetimes, everything stored is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(
    url: str, *, schema: str | None = None, ping_idle_after: float | None = None
) -> Engine:
    """Create the engine for ``url``.

    Args:
        url: a ``sqlite:///`` or ``postgresql+psycopg://`` URL.
        schema: PostgreSQL only: the schema every table lives in (tests isolate runs so).
        ping_idle_after: PostgreSQL only: ping a pooled connection idle this long before
            using it (default :data:`PING_IDLE_AFTER_S`).

    Returns:
        The engine (SQLite: WAL, foreign keys on; its folder is created 0700).
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # the driver we install
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["options"] = f"-csearch_path={schema}"
    engine = create_engine(url, connect_args=connect_args, pool_size=8, max_overflow=8)
    _ping_idle_connections(
        engine, PING_IDLE_AFTER_S if ping_idle_after is None else ping_idle_after
    )
    return engine


def _ping_idle_connections(engine: Engine, idle_after: float) -> None:
    """Ping a pooled connection at checkout when it was idle ``idle_after`` s or more.

    A connection found dead is replaced: raising ``DisconnectionError`` in a checkout
    handler makes the pool discard it and connect again (SQLAlchemy tries three times).
    """

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle_after:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"a pooled connection idle for {idle_after:g} s died") from exc


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory (objects stay readable after commit)."""
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine, revision: str = "head", *, schema: str | None = None) -> None:
    """Apply the Alembic migrations up to ``revision`` (idempotent).

    Raises:
        alembic.util.exc.CommandError: an unknown revision.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["schema"] = schema
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
