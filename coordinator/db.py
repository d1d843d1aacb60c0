"""Engine, sessions and start-up migrations of the coordinator's database.

SQLite (the default, one file under the data folder) runs in WAL mode with a busy
timeout, so status reads never wait for a writer; PostgreSQL is used through the same
code with a ``postgresql+psycopg://`` URL. :func:`migrate` applies the Alembic
migrations programmatically (a ``Config`` built in code, no ``alembic.ini``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["MIGRATIONS", "make_engine", "make_sessionmaker", "migrate"]

#: The Alembic scripts folder.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str, *, schema: str | None = None) -> Engine:
    """Create the engine for ``url``.

    Args:
        url: a ``sqlite:///`` or ``postgresql+psycopg://`` URL.
        schema: PostgreSQL only: the schema every table lives in (tests isolate runs so).

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
    return create_engine(
        url, connect_args=connect_args, pool_size=8, max_overflow=8, pool_pre_ping=True
    )


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
