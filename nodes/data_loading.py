"""Loading a holder's files into the common data model, refusing any bad file whole.

``load_table`` reads one domain file (CSV or Parquet, chosen by suffix) and
``validate_frame`` checks it against the domain's schema (``federation.cdm``). A bad file
raises one ``DataValidationError`` listing every problem found, each naming the row and
the column, e.g. ``births.csv row 16 (line 17), column birth_weight_g: value -5 is outside
300..6000``. A problem repeated down a column is listed once, at its first row, with the
number of further rows it affects. Rows are 1-based data rows; for a CSV the message adds
the line number (the header is line 1). ``load_any`` is the looser check for a
researcher's own file: the job's columns only, against the domain's declared ranges where
the domain has the column, else within :data:`UNDECLARED_LIMIT`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from federation.cdm import Column, DomainSchema, get_schema
from nodes.column_checks import convert_column, missing_mask, value_ids

__all__ = [
    "MAX_LISTED",
    "UNDECLARED_LIMIT",
    "DataValidationError",
    "Problem",
    "load_any",
    "load_table",
    "read_header",
    "validate_frame",
]

#: Largest magnitude a numeric column without a declared range may hold: models train in
#: float32 (largest value about 3.4e38), and a secure sum squares values and adds them over
#: every row, so (1e12)² summed over 10⁸ rows stays finite.
UNDECLARED_LIMIT = 1e12

#: Problems spelled out in one error message; the rest are counted.
MAX_LISTED = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data file.

    Attributes:
        reason: what is wrong, without the location.
        row: 1-based data row (the first affected), or ``None`` for a file-level problem.
        column: the column at fault, or ``None``.
        line: the CSV line number (header = line 1), or ``None``.
        more: how many further rows of the same column share the problem.

    """

    reason: str
    row: int | None = None
    column: str | None = None
    line: int | None = None
    more: int = 0

    def located(self) -> str:
        """Return the problem as ``row 3 (line 4), column x: reason`` (parts as known)."""
        where = []
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line else ""))
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column}")
        text = self.reason
        if self.more:
            text += f" (and {self.more} more row{'s' if self.more > 1 else ''} in this column)"
        return f"{', '.join(where)}: {text}" if where else text


class DataValidationError(ValueError):
    """A data file does not fit its schema.

    The message lists every problem (at most :data:`MAX_LISTED` spelled out, the rest
    counted) on one line. The attributes describe the first problem.

    Attributes:
        source: the file name (or other label) the caller gave.
        problems: every problem found, by row.
        row: 1-based data row of the first problem, or ``None`` for a file-level problem.
        column: the column at fault, or ``None``.
        reason: what is wrong, without the location.
        line: the CSV line number (header = line 1), or ``None``.

    """

    def __init__(
        self,
        source: str,
        reason: str = "",
        *,
        row: int | None = None,
        column: str | None = None,
        line: int | None = None,
        problems: Sequence[Problem] = (),
    ) -> None:
        self.source = source
        self.problems = list(problems) or [Problem(reason, row, column, line)]
        first = self.problems[0]
        self.row, self.column, self.reason, self.line = (
            first.row,
            first.column,
            first.reason,
            first.line,
        )
        if len(self.problems) == 1:
            if first.row is not None or first.line is not None:
                message = f"{source} {first.located()}"
            elif first.column is not None:
                message = f"{source}, {first.located()}"
            else:
                message = f"{source}: {first.located()}"
        else:
            listed = "; ".join(p.located() for p in self.problems[:MAX_LISTED])
            rest = len(self.problems) - MAX_LISTED
            more = f"; and {rest} more problem{'s' if rest > 1 else ''}" if rest > 0 else ""
            message = f"{source}: {len(self.problems)} problems: {listed}{more}"
        super().__init__(message)


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _read(path: Path, *, header_only: bool = False) -> tuple[pd.DataFrame, bool]:
    """Read ``path`` as text-valued CSV or typed Parquet; return the frame and is-CSV.

    With ``header_only`` the frame has the file's columns and no rows.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            rows = 0 if header_only else None
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, nrows=rows)
            return frame, True
        if suffix in (".parquet", ".pq"):
            if header_only:
                import pyarrow.parquet as pq

                return pd.DataFrame(columns=pq.read_schema(path).names), False
            # split blocks: numeric columns stay as read, not copied into one 2-D block
            split = {"split_blocks": True, "self_destruct": True}
            return pd.read_parquet(path, to_pandas_kwargs=split), False
    except FileNotFoundError:
        raise DataValidationError(path.name, "file not found") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable file
        raise DataValidationError(
            path.name, f"not a readable {suffix[1:]} file ({_one_line(exc)})"
        ) from None
    raise DataValidationError(path.name, f"unsupported suffix {suffix!r}; use .csv or .parquet")


def read_header(path: Path) -> list[str]:
    """Return the column names of a CSV or Parquet file without reading its rows.

    Raises:
        DataValidationError: the file is missing, empty, unreadable or of another type.
    """
    return [str(c) for c in _read(Path(path), header_only=True)[0].columns]


def load_table(path: Path, domain: str | None = None) -> pd.DataFrame:
    """Read one domain file and validate it against the common data model.

    Args:
        path: a ``.csv`` or ``.parquet`` file.
        domain: the domain of the file; by default the file's stem (``births.csv``).

    Returns:
        The validated frame, columns in schema order (see ``validate_frame``).

    Raises:
        DataValidationError: the file is missing, unreadable, of an unknown domain, holds
            no data rows (a header alone), or breaks the schema; the message names file,
            row and column.

    """
    path = Path(path)
    name = domain if domain is not None else path.stem
    try:
        get_schema(name)
    except KeyError as exc:
        raise DataValidationError(path.name, str(exc.args[0])) from None
    frame, is_csv = _read(path)
    valid = validate_frame(name, frame, path.name, first_line=2 if is_csv else None)
    if valid.empty:
        raise DataValidationError(path.name, "the file holds no data rows")
    return valid


def validate_frame(
    domain: str | DomainSchema, df: pd.DataFrame, source: str, *, first_line: int | None = None
) -> pd.DataFrame:
    """Check a frame against the schema of ``domain`` and return it with schema dtypes.

    Values may arrive as text (CSV) or typed (Parquet, pandas). Empty strings and NaN
    count as missing.

    Args:
        domain: the common-data-model domain (or a schema, e.g. a subset of its columns).
        df: the raw frame; its row ``i`` (0-based position) is data row ``i + 1``.
        source: the file name used in error messages.
        first_line: the text line of the first data row (2 for a CSV with a header), to
            add line numbers to messages; ``None`` for binary formats.

    Returns:
        A new frame with exactly the schema's columns in schema order (absent optional
        columns filled with missing values): ``int`` and ``bool`` columns as ``int64``
        (nullable ``Int64`` when optional), ``float`` as ``float64``, ``category`` as
        ``pandas.Categorical`` with the schema's categories, ``str`` as pandas' ``str``
        dtype (missing as NaN) and ``date`` as ``datetime64``.

    Raises:
        DataValidationError: a required column is missing, a column is not in the schema,
            or a value has the wrong type, lies out of range, is not an allowed category,
            is missing in a required column, breaks a cross-column rule, or a row repeats
            another (or its key, where the domain has one row per key). Every problem is
            listed, by row.
        KeyError: ``domain`` is unknown.

    """
    schema = domain if isinstance(domain, DomainSchema) else get_schema(domain)
    at = _Locator(first_line)
    columns = [str(c) for c in df.columns]
    header: list[Problem] = []
    for col in schema.columns:
        if col.required and col.name not in columns:
            header.append(at.header(f"required column is missing (a {col.kind} column)", col.name))
    for name in columns:
        if name not in schema.names:
            allowed = ", ".join(schema.names)
            header.append(
                at.header(f"not a column of the {schema.name} schema (allowed: {allowed})", name)
            )
    for name in dict.fromkeys(c for c in columns if columns.count(c) > 1):
        header.append(at.header("the column appears twice", name))
    if header:
        raise DataValidationError(source, problems=header)

    out: dict[str, pd.Series | pd.Categorical | np.ndarray] = {}
    problems: list[tuple[int, int, Problem]] = []  # (row, column order, problem)
    bad_rows: dict[str, np.ndarray] = {}
    for order, col in enumerate(schema.columns):
        if col.name not in columns:
            out[col.name] = _empty(col, len(df))
            continue
        values, found, bad = convert_column(col, df[col.name])
        problems += [(pos + 1, order, at.cell(pos, col.name, r, n)) for pos, r, n in found]
        bad_rows[col.name] = bad
        out[col.name] = values

    result = pd.DataFrame(out, copy=False)  # no consolidating copy
    for check in schema.checks:
        if not all(c in columns for c in check.needs):
            continue
        skip = np.logical_or.reduce([bad_rows[c] for c in check.needs])
        failed = ~check.ok(result).to_numpy(dtype=bool) & ~skip
        if failed.any():
            pos = int(np.flatnonzero(failed)[0])
            shown = ", ".join(f"{c}={_show(result[c].iloc[pos])}" for c in check.needs)
            reason = f"{check.reason} (row has {shown})"
            order = schema.names.index(check.column)
            count = int(failed.sum())
            problems.append((pos + 1, order, at.cell(pos, check.column, reason, count)))
    problems += _duplicates(schema, df, at, bad_rows, keyed=result)
    if problems:
        problems.sort(key=lambda p: (p[0], p[1]))
        raise DataValidationError(source, problems=[p for _, _, p in problems])
    return result


class _Locator:
    """Builds problems with CSV line numbers when the file has them."""

    def __init__(self, first_line: int | None) -> None:
        self.first_line = first_line

    def header(self, reason: str, column: str | None = None) -> Problem:
        line = None if self.first_line is None else self.first_line - 1
        return Problem(reason, column=column, line=line)

    def cell(self, pos: int, column: str | None, reason: str, count: int = 1) -> Problem:
        line = None if self.first_line is None else pos + self.first_line
        return Problem(reason, row=pos + 1, column=column, line=line, more=count - 1)


def _duplicates(
    schema: DomainSchema,
    df: pd.DataFrame,
    at: _Locator,
    bad_rows: dict[str, np.ndarray],
    keyed: pd.DataFrame | None = None,
) -> list[tuple[int, int, Problem]]:
    """Return the rows that repeat another row, or another row's key (one problem each kind).

    Whole rows are compared as read; keys as converted (``keyed``, default the rows read),
    so that spacing around a pseudonym does not hide a repeat. Two equal rows share their
    key (or both lack a valid one), so rows are compared whole only among those.
    """
    out: list[tuple[int, int, Problem]] = []
    raw = df.reset_index(drop=True)
    keyed = raw if keyed is None else keyed
    candidates = np.ones(len(raw), dtype=bool)  # rows that may repeat another whole row
    for key in schema.unique:
        if not all(c in raw.columns for c in key):
            continue
        skip = np.logical_or.reduce([_unusable(schema, raw, c, bad_rows) for c in key])
        ids = _row_ids(keyed, list(key))
        candidates &= skip | pd.Series(ids).duplicated(keep=False).to_numpy(dtype=bool)
        found = _repeats(ids, skip)
        if found is not None:
            pos, earlier, count = found
            what = " and ".join(key)
            reason = f"repeats the {what} of row {earlier + 1} (one row per {what})"
            order = schema.names.index(key[-1])
            out.append((pos + 1, order, at.cell(pos, key[-1], reason, count)))
    if not schema.rows_may_repeat and len(raw.columns) and candidates.any():
        rows = np.flatnonzero(candidates)
        ids = _row_ids(raw.iloc[rows], list(raw.columns))
        found = _repeats(ids, np.zeros(len(rows), dtype=bool))
        if found is not None:
            pos, earlier, count = int(rows[found[0]]), int(rows[found[1]]), found[2]
            out.append(
                (pos + 1, -1, at.cell(pos, None, f"the row repeats row {earlier + 1}", count))
            )
    return out


def _unusable(
    schema: DomainSchema, raw: pd.DataFrame, column: str, bad_rows: dict[str, np.ndarray]
) -> np.ndarray:
    """Return which rows lack a valid value in ``column`` (missing or reported bad)."""
    bad = bad_rows.get(column)
    if bad is not None and column in schema.names and schema.column(column).required:
        return bad  # a missing value in a required column is already reported bad
    return missing_mask(raw[column]) | (False if bad is None else bad)


def _row_ids(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Return one integer per row, equal exactly for rows with equal values (NaN = NaN)."""
    if len(columns) == 1:
        return value_ids(frame[columns[0]])
    grouped = frame[columns].groupby(columns, sort=False, dropna=False, observed=True)
    return grouped.ngroup().to_numpy()


def _repeats(ids: np.ndarray, skip: np.ndarray) -> tuple[int, int, int] | None:
    """Return (first repeating position, the earlier position it repeats, how many repeat)."""
    dup = pd.Series(ids).duplicated(keep="first").to_numpy(dtype=bool) & ~skip
    if not dup.any():
        return None
    pos = int(np.flatnonzero(dup)[0])
    earlier = int(np.flatnonzero((ids == ids[pos]) & ~skip)[0])
    return pos, earlier, int(dup.sum())


def _show(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _empty(col: Column, n: int) -> pd.Series | pd.Categorical:
    if col.kind in ("int", "bool"):
        return pd.Series(pd.array([pd.NA] * n, dtype="Int64"))
    if col.kind == "float":
        return pd.Series(np.full(n, np.nan))
    if col.kind == "category":
        return pd.Categorical([None] * n, categories=list(col.categories))
    if col.kind == "date":
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns]")
    return pd.Series([None] * n, dtype="str")


def load_any(
    path: Path, required_columns: Sequence[str], domain: str | None = None
) -> pd.DataFrame:
    """Read a researcher's own CSV or Parquet file and check the columns a job needs.

    Only ``required_columns`` are checked: each must exist and hold numbers, none
    missing. A column the ``domain`` declares keeps to its declared kind and range; any
    other must stay within ±:data:`UNDECLARED_LIMIT`. When the file holds a subject
    column, a row repeating another, or another row's key where the domain has one row
    per key, is refused. Other columns are returned untouched.

    Args:
        path: a ``.csv`` or ``.parquet`` file.
        required_columns: the columns that must be present and numeric.
        domain: the common-data-model domain the job reads, whose ranges and keys apply.

    Returns:
        The frame, with ``required_columns`` converted to ``float64``.

    Raises:
        DataValidationError: the file is unreadable or holds no rows, a column is missing,
            or values break the rules above; every problem is listed with its row and
            column.

    """
    path = Path(path)
    frame, is_csv = _read(path)
    at = _Locator(2 if is_csv else None)
    source = path.name
    missing = [at.header("required column is missing", n) for n in required_columns]
    missing = [p for p in missing if p.column not in frame.columns]
    if missing:
        raise DataValidationError(source, problems=missing)
    if frame.empty:
        raise DataValidationError(source, "the file holds no data rows")
    schema = _schema_or_none(domain)
    frame = frame.copy().reset_index(drop=True)
    problems: list[tuple[int, int, Problem]] = []
    bad_rows: dict[str, np.ndarray] = {}
    for order, name in enumerate(required_columns):
        col = _declared(schema, name)
        values, found, bad = convert_column(col, frame[name])
        problems += [(pos + 1, order, at.cell(pos, name, r, n)) for pos, r, n in found]
        bad_rows[name] = bad
        frame[name] = np.asarray(values, dtype=float)
    if schema is not None and "subject" in frame.columns:
        problems += _duplicates(schema, frame, at, bad_rows)
    if problems:
        problems.sort(key=lambda p: (p[0], p[1]))
        raise DataValidationError(source, problems=[p for _, _, p in problems])
    return frame


def _schema_or_none(domain: str | None) -> DomainSchema | None:
    if domain is None:
        return None
    try:
        return get_schema(domain)
    except KeyError:
        return None


def _declared(schema: DomainSchema | None, name: str) -> Column:
    """Return the numeric rule for a job column of a researcher's file."""
    if schema is not None and name in schema.names:
        col = schema.column(name)
        if col.kind in ("int", "float", "bool"):
            return dataclasses.replace(col, required=True)
    return Column(name, "float", low=-UNDECLARED_LIMIT, high=UNDECLARED_LIMIT)
