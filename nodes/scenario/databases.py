"""A generated scenario as databases: one per holder, with a mapping file each.

Each holder's domain tables become tables of a SQLite file ``<holder>.db`` beside its
files, or of a schema in a PostgreSQL database (one schema per holder); ``mapping.toml``
maps them one to one onto the data model, so a node can run from the database with
``data_dir = "mapping.toml"``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from federation.cdm import get_schema
from nodes.data_loading import load_table

__all__ = [
    "POSTGRES_URL_ENV",
    "identity_mapping",
    "postgres_schema",
    "show_url",
    "write_postgres",
    "write_sqlite",
]

#: The variable a PostgreSQL mapping reads its URL from when the URL holds a password.
POSTGRES_URL_ENV = "HAMANASU_SCENARIO_DB_URL"


def identity_mapping(
    url: str | None,
    domains: dict[str, str],
    *,
    url_env: str | None = None,
    schema: str | None = None,
) -> str:
    """Return a mapping file's text reading each domain from the table of its name.

    Args:
        url: the database URL (a relative SQLite path is taken from the mapping's folder).
        domains: data-model domain -> holder table.
        url_env: the variable holding the URL instead of ``url``.
        schema: the database schema holding the tables.
    """
    lines = [f'url_env = "{url_env}"' if url_env else f'url = "{url}"']
    if schema:
        lines.append(f'schema = "{schema}"')
    lines.append("")
    for domain, table in domains.items():
        lines += [f"[domains.{domain}]", f'table = "{table}"', f"[domains.{domain}.columns]"]
        lines += [f'{name} = "{name}"' for name in get_schema(domain).names]
        lines.append("")
    return "\n".join(lines)


def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with dates as ISO text and categories as text, as SQL stores them."""
    out = frame.copy()
    for name, dtype in out.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            out[name] = out[name].dt.strftime("%Y-%m-%d")
        elif isinstance(dtype, pd.CategoricalDtype):
            out[name] = out[name].astype(object)
    return out


def _copy_rows(table: Any, conn: Any, keys: list[str], rows: Iterable[tuple[Any, ...]]) -> int:
    """Insert ``rows`` with PostgreSQL's COPY (a ``method`` for :meth:`DataFrame.to_sql`).

    Returns:
        The number of rows written.
    """
    buffer = io.StringIO()
    count = 0
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow(["" if v is None or v != v else v for v in row])
        count += 1
    buffer.seek(0)
    name = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    columns = ", ".join(f'"{k}"' for k in keys)
    cursor = conn.connection.cursor()
    with cursor.copy(f"COPY {name} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getvalue())
    return count


def _write_tables(
    holder_dir: Path, files: dict[str, str], engine: sa.Engine, schema: str | None
) -> None:
    method = _copy_rows if engine.dialect.name == "postgresql" else None
    for domain, name in files.items():
        frame = _storable(load_table(holder_dir / name, domain))
        frame.to_sql(
            domain,
            engine,
            schema=schema,
            index=False,
            chunksize=50_000,
            if_exists="replace",
            method=method,
        )


def write_sqlite(holder_dir: Path, files: dict[str, str]) -> Path:
    """Write a holder's domain files into ``<holder>.db`` and its ``mapping.toml``.

    Args:
        holder_dir: the holder's scenario folder.
        files: domain -> data file, relative to ``holder_dir``.

    Returns:
        The mapping file.

    Raises:
        nodes.data_loading.DataValidationError: a file does not fit the data model.
    """
    db = holder_dir / f"{holder_dir.name}.db"
    db.unlink(missing_ok=True)
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        _write_tables(holder_dir, files, engine, None)
    finally:
        engine.dispose()
    mapping = holder_dir / "mapping.toml"
    mapping.write_text(identity_mapping(f"sqlite:///{db.name}", {d: d for d in files}))
    return mapping


def postgres_schema(holder: str, prefix: str = "") -> str:
    """Return the PostgreSQL schema of ``holder``: ``prefix`` + its name, ``-`` as ``_``."""
    return f"{prefix}{holder}".replace("-", "_")


def show_url(url: str) -> str:
    """Return ``url`` as it may be shown: any password replaced by ``***``."""
    return make_url(url).render_as_string(hide_password=True)


def write_postgres(holder_dir: Path, files: dict[str, str], url: str, schema: str) -> Path:
    """Write a holder's domain files into schema ``schema`` of a PostgreSQL database.

    The schema is created if needed and its tables of the same names replaced. The
    mapping file (``holder_dir/mapping.toml``) names the URL, or, when the URL holds a
    password, reads it from ``$HAMANASU_SCENARIO_DB_URL`` so no password is written.

    Returns:
        The mapping file.

    Raises:
        ValueError: ``url`` is not a PostgreSQL URL.
        nodes.data_loading.DataValidationError: a file does not fit the data model.
        sqlalchemy.exc.SQLAlchemyError: the database refused (unreachable, no right to
            create the schema).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"--postgres: {show_url(url)} is not a postgresql:// URL")
    if parsed.drivername == "postgresql":  # the driver this package installs
        parsed = parsed.set(drivername="postgresql+psycopg")
    url = parsed.render_as_string(hide_password=False)
    engine = sa.create_engine(parsed)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        _write_tables(holder_dir, files, engine, schema)
    finally:
        engine.dispose()
    secret = parsed.password is not None
    mapping = holder_dir / "mapping.toml"
    text = identity_mapping(
        None if secret else url,
        {d: d for d in files},
        url_env=POSTGRES_URL_ENV if secret else None,
        schema=schema,
    )
    mapping.write_text(text)
    return mapping
