"""Reading a holder's own SQL database through its mapping file, read-only.

A node whose data path is a mapping file (``nodes.mapping``) reads each job's columns
straight from the holder's database: only the source columns those data-model columns
need, the mapping's filter applied in SQL, at most ``row_limit`` rows, each statement
under ``timeout_s``. The connection is read-only: SQLite is opened with ``mode=ro``,
PostgreSQL sessions start with ``default_transaction_read_only`` on. The values are then
mapped (codes, units, dates, derived columns) and validated like a file, every problem
listed at once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine, make_url

from federation.cdm import DomainSchema, get_schema
from nodes.data_loading import DataValidationError, Problem, validate_frame
from nodes.mapping import ColumnMap, DomainMap, NodeMapping

__all__ = ["MappedRead", "check_mapping", "read_engine", "read_mapped"]


@lru_cache(maxsize=8)
def read_engine(url: str, timeout_s: float) -> Engine:
    """Return a read-only engine for ``url`` (cached per URL and timeout).

    Raises:
        sqlalchemy.exc.ArgumentError: the URL is malformed.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database.startswith("file:"):
            database = f"file:{database}"
        query = {**parsed.query, "mode": "ro", "uri": "true"}
        return sa.create_engine(parsed.set(database=database, query=query))
    if parsed.get_backend_name() == "postgresql":
        options = (
            f"-c default_transaction_read_only=on -c statement_timeout={int(timeout_s * 1000)}"
        )
        return sa.create_engine(parsed, connect_args={"options": options})
    return sa.create_engine(parsed)


@contextmanager
def _connect(mapping: NodeMapping) -> Iterator[Connection]:
    """Open a read-only connection whose statements stop after the mapping's timeout."""
    engine = read_engine(mapping.database_url(), mapping.timeout_s)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        handler = getattr(raw, "set_progress_handler", None)
        if handler is not None:  # SQLite has no statement timeout: interrupt it instead
            deadline = time.monotonic() + mapping.timeout_s
            handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            yield conn
        finally:
            if handler is not None:
                handler(None, 0)


def _source(mapping: NodeMapping, dmap: DomainMap, names: Sequence[str]) -> sa.Select:
    """Return ``SELECT names FROM table-or-query [WHERE filter] LIMIT row_limit + 1``."""
    cols: list[sa.ColumnClause[Any]] = [sa.column(n) for n in names]
    if dmap.query is not None:
        src: sa.FromClause = sa.text(dmap.query).columns(*cols).subquery("mapped_source")
    else:
        src = sa.table(str(dmap.table), *cols, schema=mapping.db_schema)
    stmt = sa.select(*[src.c[n] for n in names]).select_from(src)
    if dmap.where:
        stmt = stmt.where(sa.text(dmap.where))
    return stmt.limit(mapping.row_limit + 1)


#: PostgreSQL column types read through ``COPY``, by type OID, as Arrow reads their text.
_COPY_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),  # boolean
    20: pa.int64(),  # bigint
    21: pa.int64(),  # smallint
    23: pa.int64(),  # integer
    700: pa.float64(),  # real
    701: pa.float64(),  # double precision
    1700: pa.float64(),  # numeric
    19: pa.string(),  # name
    25: pa.string(),  # text
    1042: pa.string(),  # character(n)
    1043: pa.string(),  # character varying
    1082: pa.date32(),  # date
}

#: Renders a statement for ``COPY``: literal values, no parameter escaping of ``%``.
_COPY_DIALECT = postgresql.dialect(paramstyle="named")


def _fetch(conn: Connection, stmt: sa.Select, names: list[str]) -> pd.DataFrame:
    """Return the rows ``stmt`` selects as a frame with columns ``names``.

    PostgreSQL through psycopg streams them with ``COPY (SELECT ...) TO STDOUT`` in the
    same read-only session, parsed column-wise by Arrow; other databases, or columns of
    other types, are fetched row by row.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database refused the statement or it timed out.
    """
    copied = _copy_postgres(conn, stmt, names) if names else None
    if copied is not None:
        return copied
    return pd.DataFrame(conn.execute(stmt).all(), columns=names)


def _copy_postgres(conn: Connection, stmt: sa.Select, names: list[str]) -> pd.DataFrame | None:
    """Return the rows through ``COPY``, or ``None`` when this connection cannot."""
    if conn.dialect.name != "postgresql":
        return None
    try:
        import psycopg
    except ImportError:  # another driver: rows are fetched one by one
        return None
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        return None
    probe = conn.execute(stmt.limit(0))  # the column types, no rows
    types = [_COPY_TYPES.get(c.type_code) for c in probe.cursor.description]
    probe.close()
    if any(t is None for t in types):
        return None
    sql = stmt.compile(dialect=_COPY_DIALECT, compile_kwargs={"literal_binds": True})
    copy_sql = f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)"
    data = bytearray()
    try:
        with driver.cursor() as cur, cur.copy(copy_sql) as copy:
            for block in copy:
                data += block
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(copy_sql, None, exc, psycopg.Error) from None
    schema = pa.schema(list(zip(names, types, strict=True)))
    if not data:
        return schema.empty_table().to_pandas()
    table = pa_csv.read_csv(
        pa.py_buffer(data),
        read_options=pa_csv.ReadOptions(column_names=names),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=schema,
            null_values=[""],  # COPY writes NULL unquoted, an empty text as ""
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    del data
    return table.to_pandas(split_blocks=True, self_destruct=True)


def _needed(schema: DomainSchema, dmap: DomainMap, columns: Sequence[str]) -> list[str]:
    """Return the data-model columns to build: those asked for and what they derive from."""
    out: list[str] = []
    todo = list(columns)
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        if name not in dmap.columns:
            if name in schema.names:
                raise KeyError(f"the mapping gives no {schema.name}.{name}")
            raise KeyError(f"{schema.name} has no column {name!r}")
        out.append(name)
        todo += list(dmap.columns[name].inputs())
    return out


@dataclass
class MappedRead:
    """What one mapped read gave.

    Attributes:
        frame: the validated data-model columns (``None`` when problems were found).
        rows_read: rows the database returned.
        dropped_incomplete: rows left out because a needed value was missing (complete case).
        missing: per column asked for, the rows missing it (complete case only).
        problems: every problem, by row.

    """

    frame: pd.DataFrame | None
    rows_read: int
    dropped_incomplete: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _subset(schema: DomainSchema, names: Sequence[str]) -> DomainSchema:
    """Return the schema of ``names`` only; rows of a few columns may repeat (twins)."""
    keep = set(names)
    return dataclasses.replace(
        schema,
        rows_may_repeat=schema.rows_may_repeat or keep != set(schema.names),
        columns=tuple(c for c in schema.columns if c.name in keep),
        checks=tuple(ch for ch in schema.checks if set(ch.needs) <= keep),
        unique=tuple(k for k in schema.unique if set(k) <= keep),
    )


def _build(
    frame: pd.DataFrame, dmap: DomainMap, names: Sequence[str], found: list[Problem]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Return the data-model columns ``names`` made from the holder's ``frame``.

    Also returns which rows hold a value that could not be mapped (reported in ``found``).
    """
    out: dict[str, pd.Series] = {}
    unmapped = np.zeros(len(frame), dtype=bool)
    for name in names:
        cmap = dmap.columns[name]
        if cmap.source is not None:
            hits: list[tuple[int, str, int]] = []
            raw = frame[cmap.source].reset_index(drop=True)
            out[name] = cmap.apply(raw, hits)
            found += [Problem(r, row=p + 1, column=name, more=n - 1) for p, r, n in hits]
            if hits:
                unmapped |= out[name].isna().to_numpy(dtype=bool) & raw.notna().to_numpy(bool)
        elif cmap.value is not None:
            out[name] = pd.Series([cmap.value] * len(frame), dtype=object)
    for name in [n for n in names if dmap.columns[n].derive]:
        out[name] = _derive(dmap.columns[name], out, dmap)
    built = pd.DataFrame(out, index=range(len(frame)), copy=False)  # no consolidating copy
    return built[list(names)], unmapped


def _derive(cmap: ColumnMap, out: dict[str, pd.Series], dmap: DomainMap) -> pd.Series:
    """Return a derived column from data-model columns already built (or derived first)."""
    for need in cmap.inputs():
        if need not in out:
            out[need] = _derive(dmap.columns[need], out, dmap)
    if cmap.derive == "year":
        return pd.to_datetime(out[str(cmap.of)], errors="coerce").dt.year.astype("Int64")
    if cmap.derive == "flag_below":
        values = pd.to_numeric(out[str(cmap.of)], errors="coerce")
        return (values < float(cmap.threshold or 0)).astype("Int64").where(values.notna())
    weight = pd.to_numeric(out[str(cmap.weight)], errors="coerce")
    height = pd.to_numeric(out[str(cmap.height)], errors="coerce") / 100.0
    return (weight / height**2).round(1)


def read_mapped(
    mapping: NodeMapping,
    domain: str,
    columns: Sequence[str],
    *,
    raise_problems: bool = True,
    complete_case: bool = False,
) -> MappedRead:
    """Read data-model ``columns`` of ``domain`` (and its ``subject``) from the database.

    Rows missing a value asked for are dropped and counted when the mapping or
    ``complete_case`` asks for complete cases.

    Returns:
        The validated frame (columns: ``subject`` first if mapped, then ``columns``) with
        the counts; with ``raise_problems`` false, problems are returned instead.

    Raises:
        KeyError: the node holds no such domain or the mapping lacks a column.
        DataValidationError: a value cannot be mapped or breaks the data model (every
            problem listed), or the read returned more than ``row_limit`` rows.
        sqlalchemy.exc.SQLAlchemyError: the database refused the statement (unknown
            table or column, timeout).
    """
    schema = get_schema(domain)
    dmap = mapping.domain(domain)
    wanted = (["subject"] if "subject" in dmap.columns else []) + [
        c for c in columns if c != "subject"
    ]
    names = _needed(schema, dmap, wanted)
    sources = list(dict.fromkeys(s for n in names if (s := dmap.columns[n].source)))
    label = f"{mapping.path.name} {domain}"
    with _connect(mapping) as conn:
        raw = _fetch(conn, _source(mapping, dmap, sources), sources)
    if len(raw) > mapping.row_limit:
        raise DataValidationError(label, f"more than row_limit = {mapping.row_limit} rows")
    found: list[Problem] = []
    built, keep = _build(raw, dmap, names, found)
    keep = ~keep  # rows with an unmappable value are reported once, not validated again
    result = MappedRead(None, len(raw))
    if mapping.complete_case or complete_case:
        absent = built[wanted].isna()
        complete = ~absent.any(axis=1).to_numpy(dtype=bool)
        result.dropped_incomplete = int((keep & ~complete).sum())
        asked = [c for c in wanted if c in columns]
        result.missing = {c: int((absent[c].to_numpy(dtype=bool) & keep).sum()) for c in asked}
        keep &= complete
    positions = np.flatnonzero(keep)
    rows = built if keep.all() else built[keep].reset_index(drop=True)
    try:
        frame = validate_frame(_subset(schema, names), rows, label)
    except DataValidationError as exc:  # rows renumbered as read
        found += [_renumber(p, positions) for p in exc.problems]
        frame = None
    if found:
        found.sort(key=lambda p: (p.row or 0, names.index(p.column) if p.column in names else -1))
        if raise_problems:
            raise DataValidationError(label, problems=found)
        result.problems = found
        return result
    result.frame = None if frame is None else frame[wanted]
    return result


def _renumber(problem: Problem, positions: np.ndarray) -> Problem:
    """Return ``problem`` with its row numbered as the database returned it."""
    if problem.row is None:
        return problem
    return dataclasses.replace(problem, row=int(positions[problem.row - 1]) + 1)


def check_mapping(mapping: NodeMapping) -> dict[str, MappedRead | list[Problem]]:
    """Check every mapped domain against the live database, all problems at once.

    For each domain: the mapping's columns exist in the data model, every required
    column is mapped, every source column exists, and every row maps and validates.

    Returns:
        Per domain: the read (with its problems and counts), or the mapping's problems
        when the domain could not be read at all.
    """
    out: dict[str, MappedRead | list[Problem]] = {}
    for domain, dmap in mapping.domains.items():
        try:
            schema = get_schema(domain)
        except KeyError as exc:
            out[domain] = [Problem(str(exc.args[0]))]
            continue
        shape = [
            Problem("not a column of the data model", column=n)
            for n in dmap.columns
            if n not in schema.names
        ]
        shape += [
            Problem("required column is not mapped", column=c.name)
            for c in schema.columns
            if c.required and c.name not in dmap.columns
        ]
        shape += _missing_sources(mapping, dmap)
        if shape:
            out[domain] = shape
            continue
        out[domain] = read_mapped(mapping, domain, list(dmap.columns), raise_problems=False)
    return out


def _missing_sources(mapping: NodeMapping, dmap: DomainMap) -> list[Problem]:
    """Return the mapped source columns (and table) the database does not have."""
    with _connect(mapping) as conn:
        if dmap.query is not None:
            probe = sa.select(sa.text("*")).select_from(
                sa.text(dmap.query).columns().subquery("mapped_source")
            )
            have = set(conn.execute(probe.limit(0)).keys())
        else:
            inspector = sa.inspect(conn)
            if not inspector.has_table(str(dmap.table), schema=mapping.db_schema):
                return [Problem(f"table {dmap.table} does not exist")]
            found = inspector.get_columns(str(dmap.table), schema=mapping.db_schema)
            have = {c["name"] for c in found}
    return [
        Problem(f"source column {cmap.source} does not exist", column=name)
        for name, cmap in dmap.columns.items()
        if cmap.source is not None and cmap.source not in have
    ]
