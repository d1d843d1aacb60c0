"""``hamanasu node map ...`` and ``hamanasu node pseudonymise ...``: a holder's own data.

``map check`` validates a node's mapping file against the live database and lists every
problem at once. ``pseudonymise`` turns the holder's local identifier into the
consortium pseudonym (HMAC-SHA256 with the consortium key, a 0600 file in the node's
folder that is never logged, sent or shown), in a file or as a database view.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nodes.data_loading import Problem

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["KEY_FILE", "app", "load_key", "map_app", "store_key"]

map_app = typer.Typer(no_args_is_help=True, help="Check a node's mapping onto its database.")
app = typer.Typer(no_args_is_help=True, help="Turn local identifiers into consortium pseudonyms.")

#: The consortium key's file name in the node's folder.
KEY_FILE = "consortium.key"

NodeDir = Annotated[Path, typer.Option("--dir", help="The node's state folder.")]


def _fail(text: str) -> typer.Exit:
    typer.echo(f"error: {text}", err=True)
    return typer.Exit(code=2)


def _mapping_path(config: Path) -> Path:
    """Return the mapping file a node config names (or ``config`` if it is a mapping)."""
    import tomllib

    from nodes.service import NodeServiceError, load_node_config

    try:
        raw = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"--config: cannot read {config.name} ({type(exc).__name__})") from None
    if "domains" in raw:
        return config
    try:
        data = load_node_config(config).data_dir
    except NodeServiceError as exc:
        raise ValueError(str(exc)) from None
    if data is None or data.suffix != ".toml":
        raise ValueError(f"--config: {config.name} names no mapping file as data_dir")
    return data


def _db_error(exc: Exception) -> str:
    """Return the driver's error class name only: its text may quote the URL or data."""
    return type(getattr(exc, "orig", None) or exc).__name__


def _show(problem: Problem) -> str:
    return "  " + problem.located()


@map_app.command("check")
def map_check(
    config: Annotated[
        Path, typer.Option("--config", help="node.toml (its data_dir a mapping) or the mapping.")
    ],
) -> None:
    """Validate the mapping against the live database: every problem, counted, at once.

    Exits 0 when every domain maps cleanly, 1 when problems were found, 2 on bad input.
    """
    import sqlalchemy as sa

    from nodes.mapping import load_mapping
    from nodes.sql_source import check_mapping

    try:
        mapping = load_mapping(_mapping_path(config))
        report = check_mapping(mapping)
    except (ValueError, KeyError, OSError) as exc:
        raise _fail(str(exc).strip("'\"").splitlines()[0]) from None
    except sa.exc.SQLAlchemyError as exc:
        raise _fail(f"the database refused the check ({_db_error(exc)})") from None
    bad = 0
    for domain, read in report.items():
        problems = read if isinstance(read, list) else read.problems
        bad += len(problems)
        if isinstance(read, list):
            typer.echo(f"{domain}: the mapping does not fit ({len(problems)} problem(s))")
        else:
            dropped = (
                f", {read.dropped_incomplete} incomplete dropped" if mapping.complete_case else ""
            )
            verdict = "ok" if not problems else f"{len(problems)} problem(s)"
            typer.echo(f"{domain}: {read.rows_read} rows read{dropped}: {verdict}")
        for problem in problems:
            typer.echo(_show(problem))
    if bad:
        raise typer.Exit(code=1)


def store_key(folder: Path, key: bytes) -> Path:
    """Write the consortium key into the node's folder, 0600.

    Returns:
        The key file.

    Raises:
        ValueError: the key is shorter than 16 bytes.
    """
    if len(key) < 16:
        raise ValueError("the consortium key needs at least 16 bytes")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KEY_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    os.replace(tmp, path)
    return path


def load_key(folder: Path) -> bytes:
    """Return the consortium key from the node's folder.

    Raises:
        FileNotFoundError: no key (run ``hamanasu node pseudonymise key``).
        PermissionError: the file is readable by group or others.
    """
    path = folder / KEY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--dir: no consortium key in {folder} (import it first)")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise PermissionError(f"{KEY_FILE} must be readable by its owner only (chmod 600)")
    return path.read_bytes()


@app.command("key")
def key_import(
    folder: NodeDir,
    source: Annotated[Path, typer.Option("--from", help="File holding the consortium key.")],
) -> None:
    """Import the consortium key (raw bytes) into the node's folder as a 0600 file."""
    try:
        key = source.read_bytes().strip()
        path = store_key(folder, key)
    except (OSError, ValueError) as exc:
        raise _fail(
            str(exc) if isinstance(exc, ValueError) else f"--from: cannot read {source.name}"
        ) from None
    typer.echo(f"stored the consortium key in {path} (0600)")


@app.command("file")
def pseudonymise_file(
    folder: NodeDir,
    src: Annotated[Path, typer.Argument(help="CSV or Parquet with the local identifier.")],
    out: Annotated[Path, typer.Argument(help="Where to write the pseudonymised file.")],
    column: Annotated[str, typer.Option(help="The local identifier column.")],
    to: Annotated[str, typer.Option("--as", help="Name of the pseudonym column.")] = "subject",
) -> None:
    """Write ``src`` with the local identifier replaced by the consortium pseudonym."""
    import pandas as pd

    from nodes.scenario.pseudonyms import pseudonymize_many

    try:
        key = load_key(folder)
        frame = pd.read_parquet(src) if src.suffix == ".parquet" else pd.read_csv(src, dtype=str)
        if column not in frame.columns:
            raise ValueError(f"--column: {src.name} has no column {column!r}")
        ids = frame.pop(column).astype(str).str.strip()
        frame.insert(0, to, pseudonymize_many(ids.tolist(), key))
    except (OSError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0]) from None
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    typer.echo(f"wrote {len(frame)} rows to {out} ({column} -> {to})")


@app.command("db")
def pseudonymise_db(
    folder: NodeDir,
    url_env: Annotated[str, typer.Option(help="Variable holding a writable database URL.")],
    table: Annotated[str, typer.Option(help="The holder's table with the local identifier.")],
    column: Annotated[str, typer.Option(help="The local identifier column.")],
    schema: Annotated[str | None, typer.Option(help="Database schema of the table.")] = None,
) -> None:
    """Write a pseudonym table and a view ``<table>_pseudonymised`` adding ``subject``.

    The node's mapping then reads the view (read-only); the key never enters the database.
    """
    import sqlalchemy as sa

    url = os.environ.get(url_env, "").strip()
    if not url:
        raise _fail(f"--url-env: {url_env} is not set")
    try:
        key = load_key(folder)
        engine = sa.create_engine(url)
        pairs = _pseudonym_view(engine, key, table, column, schema)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc).splitlines()[0]) from None
    except sa.exc.SQLAlchemyError as exc:
        raise _fail(f"the database refused it ({_db_error(exc)})") from None
    typer.echo(f"{pairs} identifiers pseudonymised; the mapping reads {table}_pseudonymised")


def _pseudonym_view(
    engine: sa.Engine, key: bytes, table: str, column: str, schema: str | None
) -> int:
    """Write ``<table>_pseudonyms`` (local id -> pseudonym) and the view joining it."""
    import sqlalchemy as sa

    from nodes.scenario.pseudonyms import pseudonymize_many

    prep = sa.sql.compiler.IdentifierPreparer(engine.dialect)
    where = f"{prep.quote(schema)}." if schema else ""
    src, col = f"{where}{prep.quote(table)}", prep.quote(column)
    map_table, view = f"{table}_pseudonyms", f"{table}_pseudonymised"
    with engine.begin() as conn:
        ids = [str(r[0]) for r in conn.execute(sa.text(f"SELECT DISTINCT {col} FROM {src}"))]
        ids = [i for i in ids if i and i != "None"]
        conn.execute(sa.text(f"DROP VIEW IF EXISTS {where}{prep.quote(view)}"))
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {where}{prep.quote(map_table)}"))
        conn.execute(
            sa.text(
                f"CREATE TABLE {where}{prep.quote(map_table)} "
                "(local_id VARCHAR(200) PRIMARY KEY, subject CHAR(32) NOT NULL)"
            )
        )
        rows = [{"l": i, "s": p} for i, p in zip(ids, pseudonymize_many(ids, key), strict=True)]
        if rows:
            conn.execute(
                sa.text(f"INSERT INTO {where}{prep.quote(map_table)} VALUES (:l, :s)"), rows
            )
        conn.execute(
            sa.text(
                f"CREATE VIEW {where}{prep.quote(view)} AS SELECT p.subject, t.* FROM {src} t "
                f"JOIN {where}{prep.quote(map_table)} p "
                f"ON p.local_id = CAST(t.{col} AS VARCHAR(200))"
            )
        )
    return len(ids)
