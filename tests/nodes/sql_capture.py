"""Read a mapped domain and capture the SQL statements the node sent for it."""

import pytest
import sqlalchemy as sa

from nodes.mapping import load_mapping
from nodes.sql_source import read_engine, read_mapped


def read_capturing_sql(mapping_file, domain: str, columns: list[str]):
    """Return (the frame read, every SQL statement sent while reading it).

    Statements go through SQLAlchemy, and PostgreSQL's bulk reads through psycopg's
    ``COPY``; both are captured.
    """
    mapping = load_mapping(mapping_file)
    engine = read_engine(mapping.database_url(), mapping.timeout_s)
    sent: list[str] = []

    def capture(conn, cursor, statement, params, context, executemany):
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        with pytest.MonkeyPatch.context() as patch:
            _capture_copy(patch, sent)
            frame = read_mapped(mapping, domain, columns).frame
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return frame, sent


def _capture_copy(patch: pytest.MonkeyPatch, sent: list[str]) -> None:
    try:
        import psycopg
    except ImportError:
        return
    copy = psycopg.Cursor.copy

    def recording(self, statement, *args, **kwargs):
        sent.append(str(statement))
        return copy(self, statement, *args, **kwargs)

    patch.setattr(psycopg.Cursor, "copy", recording)
