"""Where a node's data and state live, and how its domain tables are found and loaded."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from federation.complete_case import CompleteCaseCounts, complete_cases
from nodes.data_loading import DataValidationError
from nodes.mapping import is_mapping_file, load_mapping

__all__ = ["NodeSource", "find_table", "read_columns", "read_job_columns"]


@dataclass(frozen=True)
class NodeSource:
    """One node of an embedded run.

    Attributes:
        name: the node's name (``city-hospital``).
        data: a data folder holding ``<domain>.parquet`` / ``<domain>.csv``, one file, or
            a mapping file (``.toml``) onto the holder's database.
        state_dir: where the node keeps its ledger, budget and keys (None: no enforcement
            state, as for ``hamanasu simulate`` on sample files).
    """

    name: str
    data: Path
    state_dir: Path | None = None


def find_table(data: Path, domain: str) -> Path:
    """Return the file holding ``domain`` in a node's data folder (or ``data`` if a file).

    Raises:
        FileNotFoundError: no such table.
    """
    if data.is_file():
        return data
    for suffix in (".parquet", ".csv"):
        candidate = data / f"{domain}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{data}: no {domain}.parquet or {domain}.csv")


@lru_cache(maxsize=16)
def _cached(
    path: str, mtime_ns: int, domain: str, whole: bool, columns: tuple[str, ...]
) -> pd.DataFrame:
    from nodes.data_loading import load_any, load_table

    p = Path(path)
    if whole:
        return load_table(p, domain)
    return load_any(p, list(columns), domain)


def read_columns(data: Path, domain: str, columns: list[str]) -> pd.DataFrame:
    """Load a node's ``domain`` table, validated, keeping ``columns`` (and ``subject`` if present).

    A mapping file reads the holder's database (see :mod:`nodes.sql_source`). A folder's
    table is validated against the common data model; a single file (a
    researcher's sample) only needs the columns, numeric, none missing, within the
    domain's declared ranges (see :func:`nodes.data_loading.load_any`). Loaded tables are
    cached per process by path and modification time.

    Returns:
        The frame (a copy the caller may change).

    Raises:
        FileNotFoundError: no table.
        nodes.data_loading.DataValidationError: the file is invalid (file, row, column named).
        KeyError: a column is missing from a folder's table or the mapping.
        sqlalchemy.exc.SQLAlchemyError: the database refused the read.
    """
    if is_mapping_file(data):
        from nodes.sql_source import read_mapped

        mapped = read_mapped(load_mapping(data), domain, columns).frame
        if mapped is None:
            raise DataValidationError(data.name, f"no valid {domain} rows")
        return mapped
    path = find_table(data, domain)
    from_folder = not data.is_file()
    frame = _cached(str(path), path.stat().st_mtime_ns, domain, from_folder, tuple(columns))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{path.name}: no column(s) {missing}")
    keep = (["subject"] if "subject" in frame.columns else []) + [
        c for c in columns if c != "subject"
    ]
    return frame[keep].copy()


def read_job_columns(
    data: Path, domain: str, columns: list[str], *, complete_case: bool = False
) -> tuple[pd.DataFrame, CompleteCaseCounts | None]:
    """Load what a job reads at a node, keeping complete cases when asked.

    Complete cases are kept when ``complete_case`` (the job asks) or, for a mapping file,
    when the mapping says ``complete_case = true``.

    Returns:
        The frame (as :func:`read_columns`), and the counts of a complete-case read
        (``None`` when rows were not filtered).

    Raises:
        FileNotFoundError: no table.
        nodes.data_loading.DataValidationError: invalid data, or no valid row.
        KeyError: a column is missing.
        sqlalchemy.exc.SQLAlchemyError: the database refused the read.
    """
    if is_mapping_file(data):
        from nodes.sql_source import read_mapped

        mapping = load_mapping(data)
        read = read_mapped(mapping, domain, columns, complete_case=complete_case)
        if read.frame is None:
            raise DataValidationError(data.name, f"no valid {domain} rows")
        if not (complete_case or mapping.complete_case):
            return read.frame, None
        counts = CompleteCaseCounts(read.rows_read, read.dropped_incomplete, read.missing)
        return read.frame, counts
    frame = read_columns(data, domain, columns)
    if not complete_case:
        return frame, None
    return complete_cases(frame, columns)
