"""Loading a holder's files into the common data model, refusing any bad file whole.

``load_table`` reads one domain file (CSV or Parquet, chosen by suffix) and
``validate_frame`` checks it against the domain's schema (``federation.cdm``). A bad file
raises one ``DataValidationError`` naming the file, the row and the column of the first
problem, e.g. ``births.csv row 16 (line 17), column birth_weight_g: value -5 is outside
300..6000``. Rows are 1-based data rows; for a CSV the message adds the line number
(the header is line 1). ``load_any`` is the looser check for a researcher's own file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from federation.cdm import Column, get_schema

__all__ = ["DataValidationError", "load_any", "load_table", "validate_frame"]

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


class DataValidationError(ValueError):
    """A data file does not fit its schema.

    Attributes:
        source: the file name (or other label) the caller gave.
        row: 1-based data row of the problem, or ``None`` for a file-level problem.
        column: the column at fault, or ``None``.
        reason: what is wrong, without the location.
        line: the CSV line number (header = line 1), or ``None``.

    """

    def __init__(
        self,
        source: str,
        reason: str,
        *,
        row: int | None = None,
        column: str | None = None,
        line: int | None = None,
    ) -> None:
        self.source = source
        self.row = row
        self.column = column
        self.reason = reason
        self.line = line
        where = source
        if row is not None:
            where += f" row {row}"
            if line is not None:
                where += f" (line {line})"
        elif line is not None:
            where += f" line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {reason}")


def _read(path: Path) -> tuple[pd.DataFrame, bool]:
    """Read ``path`` as text-valued CSV or typed Parquet; return the frame and is-CSV."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
            return frame, True
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path), False
    except FileNotFoundError:
        raise DataValidationError(path.name, "file not found") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable file
        raise DataValidationError(path.name, f"not a readable {suffix[1:]} file ({exc})") from None
    raise DataValidationError(path.name, f"unsupported suffix {suffix!r}; use .csv or .parquet")


def load_table(path: Path, domain: str | None = None) -> pd.DataFrame:
    """Read one domain file and validate it against the common data model.

    Args:
        path: a ``.csv`` or ``.parquet`` file.
        domain: the domain of the file; by default the file's stem (``births.csv``).

    Returns:
        The validated frame, columns in schema order (see ``validate_frame``).

    Raises:
        DataValidationError: the file is missing, unreadable, of an unknown domain, or
            breaks the schema; the message names file, row and column.

    """
    path = Path(path)
    name = domain if domain is not None else path.stem
    try:
        get_schema(name)
    except KeyError as exc:
        raise DataValidationError(path.name, str(exc.args[0])) from None
    frame, is_csv = _read(path)
    return validate_frame(name, frame, path.name, first_line=2 if is_csv else None)


def validate_frame(
    domain: str, df: pd.DataFrame, source: str, *, first_line: int | None = None
) -> pd.DataFrame:
    """Check a frame against the schema of ``domain`` and return it with schema dtypes.

    Values may arrive as text (CSV) or typed (Parquet, pandas). Empty strings and NaN
    count as missing.

    Args:
        domain: the common-data-model domain.
        df: the raw frame; its row ``i`` (0-based position) is data row ``i + 1``.
        source: the file name used in error messages.
        first_line: the text line of the first data row (2 for a CSV with a header), to
            add line numbers to messages; ``None`` for binary formats.

    Returns:
        A new frame with exactly the schema's columns in schema order (absent optional
        columns filled with missing values): ``int`` and ``bool`` columns as ``int64``
        (nullable ``Int64`` when optional), ``float`` as ``float64``, ``category`` as
        ``pandas.Categorical`` with the schema's categories, ``str`` as ``object`` and
        ``date`` as ``datetime64``.

    Raises:
        DataValidationError: a required column is missing, a column is not in the schema,
            or a value has the wrong type, lies out of range, is not an allowed category,
            is missing in a required column, or breaks a cross-column rule. The first
            problem (lowest row) is reported.
        KeyError: ``domain`` is unknown.

    """
    schema = get_schema(domain)

    def fail(reason: str, row: int | None = None, column: str | None = None) -> None:
        line = None
        if row is not None and first_line is not None:
            line = row - 1 + first_line
        elif row is None and first_line is not None:
            line = first_line - 1  # the header
        raise DataValidationError(source, reason, row=row, column=column, line=line)

    columns = [str(c) for c in df.columns]
    for col in schema.columns:
        if col.required and col.name not in columns:
            fail(f"required column is missing (a {col.kind} column)", column=col.name)
    for name in columns:
        if name not in schema.names:
            fail(
                f"not a column of the {domain} schema (allowed: {', '.join(schema.names)})",
                column=name,
            )
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        fail("the column appears twice", column=dup)

    out: dict[str, pd.Series | pd.Categorical | np.ndarray] = {}
    first_error: tuple[int, int, str, str] | None = None  # (row, column order, column, reason)
    for order, col in enumerate(schema.columns):
        if col.name not in columns:
            out[col.name] = _empty(col, len(df))
            continue
        values, bad_pos, reason = _convert(col, df[col.name].reset_index(drop=True))
        if bad_pos is not None:
            candidate = (bad_pos + 1, order, col.name, reason)
            if first_error is None or candidate[:2] < first_error[:2]:
                first_error = candidate
        out[col.name] = values
    if first_error is not None:
        fail(first_error[3], row=first_error[0], column=first_error[2])

    result = pd.DataFrame(out)
    for check in schema.checks:
        if not all(c in columns for c in check.needs):
            continue
        passed = check.ok(result).to_numpy(dtype=bool)
        if not passed.all():
            pos = int(np.flatnonzero(~passed)[0])
            shown = ", ".join(f"{c}={_show(result[c].iloc[pos])}" for c in check.needs)
            fail(f"{check.reason} (row has {shown})", row=pos + 1, column=check.column)
    return result


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
    return pd.Series([None] * n, dtype=object)


def _missing_mask(raw: pd.Series) -> np.ndarray:
    mask = raw.isna().to_numpy(dtype=bool).copy()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        text = raw.astype(object).where(~mask, "")
        mask |= np.array([isinstance(v, str) and v.strip() == "" for v in text], dtype=bool)
    return mask


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _convert(col: Column, raw: pd.Series) -> tuple[pd.Series | pd.Categorical, int | None, str]:
    """Convert one column; return (values, first bad 0-based position or None, reason)."""
    missing = _missing_mask(raw)
    problems: list[tuple[int, str]] = []  # (position, reason); the lowest position wins

    def note(mask: np.ndarray, reason_of: object) -> None:
        pos = _first(mask)
        if pos is not None:
            reason = reason_of(pos) if callable(reason_of) else str(reason_of)
            problems.append((pos, reason))

    if col.required:
        note(missing, "missing value in a required column")

    def raw_text(pos: int) -> str:
        return repr(raw.iloc[pos]) if isinstance(raw.iloc[pos], str) else str(raw.iloc[pos])

    values: pd.Series | pd.Categorical
    if col.kind in ("int", "float"):
        if pd.api.types.is_bool_dtype(raw.dtype) or pd.api.types.is_numeric_dtype(raw.dtype):
            numeric = raw.astype(float)
        else:
            text = raw.astype(object).where(~missing, None)
            numeric = pd.to_numeric(
                text.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce"
            ).astype(float)
        arr = numeric.to_numpy(dtype=float)
        unparsed = np.isnan(arr) & ~missing
        note(unparsed, lambda p: f"value {raw_text(p)} is not a number")
        note(np.isinf(arr), lambda p: f"value {raw_text(p)} is not finite")
        if col.kind == "int":
            finite = np.isfinite(arr)
            frac = finite & (arr != np.round(arr))
            note(frac, lambda p: f"value {raw_text(p)} is not an integer")
        _note_range(col, arr, note, lambda p: raw_text(p).strip("'"))
        if col.kind == "int":
            if col.required:
                values = pd.Series(np.where(np.isfinite(arr), arr, 0).astype(np.int64))
            else:
                values = pd.Series(
                    pd.array([None if not np.isfinite(v) else int(v) for v in arr], dtype="Int64")
                )
        else:
            values = pd.Series(arr)
    elif col.kind == "bool":
        codes = np.full(len(raw), -1, dtype=np.int64)
        for pos, v in enumerate(raw.to_numpy(dtype=object)):
            if missing[pos]:
                continue
            if isinstance(v, bool | np.bool_):
                codes[pos] = int(v)
            elif isinstance(v, int | np.integer | float | np.floating):
                if v in (0, 1):
                    codes[pos] = int(v)
            else:
                s = str(v).strip().lower()
                codes[pos] = 1 if s in _TRUE else 0 if s in _FALSE else -1
        note((codes < 0) & ~missing, lambda p: f"value {raw_text(p)} is not 0 or 1")
        if col.required:
            values = pd.Series(np.where(codes < 0, 0, codes).astype(np.int64))
        else:
            values = pd.Series(pd.array([None if c < 0 else int(c) for c in codes], dtype="Int64"))
    elif col.kind == "category":
        text = raw.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
        allowed = set(col.categories)
        pairs = list(zip(text, missing, strict=True))
        unknown = np.array([not m and str(v) not in allowed for v, m in pairs], dtype=bool)
        note(unknown, lambda p: f"value {raw_text(p)} is not {col.describe_range()}")
        values = pd.Categorical(
            [None if m or str(v) not in allowed else str(v) for v, m in pairs],
            categories=list(col.categories),
        )
    elif col.kind == "date":
        if pd.api.types.is_datetime64_any_dtype(raw.dtype):
            parsed = pd.to_datetime(raw)
        else:
            text = raw.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
            text = text.where(~missing, None)
            parsed = pd.to_datetime(text.map(_as_iso), format="%Y-%m-%d", errors="coerce")
        bad = parsed.isna().to_numpy(dtype=bool) & ~missing
        note(bad, lambda p: f"value {raw_text(p)} is not an ISO date (YYYY-MM-DD)")
        ok = ~parsed.isna().to_numpy(dtype=bool)
        if col.low is not None:
            note(
                ok & (parsed < pd.Timestamp(str(col.low))).to_numpy(dtype=bool),
                lambda p: f"date {parsed.iloc[p].date()} is before {col.low}",
            )
        if col.high is not None:
            note(
                ok & (parsed > pd.Timestamp(str(col.high))).to_numpy(dtype=bool),
                lambda p: f"date {parsed.iloc[p].date()} is after {col.high}",
            )
        values = pd.Series(parsed.to_numpy(dtype="datetime64[ns]"))
    else:  # str
        text = raw.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
        if col.pattern is not None:
            rx = re.compile(col.pattern)
            nomatch = np.array(
                [not m and not rx.fullmatch(str(v)) for v, m in zip(text, missing, strict=True)],
                dtype=bool,
            )
            what = "a 32-hex-digit pseudonym" if col.role == "key" else f"matching {col.pattern}"
            note(nomatch, lambda p: f"value {raw_text(p)} is not {what}")
        values = pd.Series(
            [None if m else str(v) for v, m in zip(text, missing, strict=True)], dtype=object
        )

    if problems:
        pos, reason = min(problems)
        return values, pos, reason
    return values, None, ""


def _as_iso(value: object) -> object:
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    if value is None:
        return None
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return str(value.isoformat())[:10]
    return "not-a-date"


def _note_range(col: Column, arr: np.ndarray, note: object, text: object) -> None:
    finite = np.isfinite(arr)
    low = -np.inf if col.low is None else float(col.low)
    high = np.inf if col.high is None else float(col.high)
    outside = finite & ((arr < low) | (arr > high))
    note(outside, lambda p: f"value {text(p)} is outside {col.describe_range()}")  # type: ignore[operator]


def load_any(path: Path, required_columns: Sequence[str]) -> pd.DataFrame:
    """Read a researcher's own CSV or Parquet file and check the columns a job needs.

    Only ``required_columns`` are checked: each must exist, be numeric and hold no
    missing or infinite value. Other columns are returned untouched.

    Args:
        path: a ``.csv`` or ``.parquet`` file.
        required_columns: the columns that must be present and numeric.

    Returns:
        The frame, with ``required_columns`` converted to ``float64``.

    Raises:
        DataValidationError: the file is unreadable, a column is missing, or a value in
            a required column is not a finite number; the message names file, row and
            column.

    """
    path = Path(path)
    frame, is_csv = _read(path)
    first_line = 2 if is_csv else None
    source = path.name
    for name in required_columns:
        if name not in frame.columns:
            raise DataValidationError(
                source, "required column is missing", column=name, line=1 if is_csv else None
            )
    frame = frame.copy()
    for name in required_columns:
        col = Column(name, "float")
        values, bad, reason = _convert(col, frame[name].reset_index(drop=True))
        if bad is not None:
            raise DataValidationError(
                source,
                reason,
                row=bad + 1,
                column=name,
                line=None if first_line is None else bad + first_line,
            )
        frame[name] = np.asarray(values, dtype=float)
    return frame
