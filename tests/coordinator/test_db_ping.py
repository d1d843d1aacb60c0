"""A pooled PostgreSQL connection the server dropped while it sat idle is replaced before
use; a recently used one is not pinged (status reads save a round trip)."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from coordinator.db import make_engine

from .conftest import PG_ENV


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL not available: set {PG_ENV}")
    return url


def _kill_pooled_backend(url: str, ping_idle_after: float) -> tuple[object, int, int | None]:
    engine = make_engine(url, ping_idle_after=ping_idle_after)
    admin = make_engine(url)
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            conn.commit()
        time.sleep(0.3)
        try:
            with engine.connect() as conn:
                return None, first, conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        except OperationalError as exc:
            return exc, first, None
    finally:
        engine.dispose()
        admin.dispose()


def test_idle_connection_dropped_by_the_server_is_replaced(pg_url: str) -> None:
    error, first, second = _kill_pooled_backend(pg_url, ping_idle_after=0.1)
    assert error is None and second is not None and second != first


def test_recently_used_connection_is_not_pinged(pg_url: str) -> None:
    error, _, _ = _kill_pooled_backend(pg_url, ping_idle_after=60.0)
    assert isinstance(error, OperationalError)  # no ping: the dead connection was used
