"""Converting and checking one data-model column at a time, column-wise.

``convert_column`` turns a column as read (text from a CSV, typed from Parquet or a
database, Python objects from a caller) into the schema's dtype and finds every value
that breaks the column's rule: missing where required, not a number, not finite, not an
integer, out of range, not 0/1, not a category, not an ISO date, not matching the
pattern. Homogeneous columns are checked with whole-column Arrow and NumPy operations;
a column mixing Python types (``[1, "2"]``) is checked value by value, with the same
messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from federation.cdm import PSEUDONYM_PATTERN, Column

__all__ = ["Found", "convert_column", "missing_mask", "value_ids"]

#: Each problem of a column: (first 0-based position, reason, rows affected).
Found = list[tuple[int, str, int]]

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}
_BOOL_TEXT = pa.array(["0", "false", "no", "1", "true", "yes"])
_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_HEX_BYTES = np.zeros(256, dtype=bool)
_HEX_BYTES[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = True
_ARROW_FAILS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


def _arrow(raw: pd.Series) -> pa.Array | None:
    """Return the column as one Arrow array (NaN as null), or ``None`` when it mixes types."""
    try:
        arr = pa.array(raw, from_pandas=True)
    except _ARROW_FAILS:
        return None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _is_text(arr: pa.Array | None) -> bool:
    return arr is not None and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type))


def _is_number(arr: pa.Array | None) -> bool:
    if arr is None:
        return False
    t = arr.type
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    )


def _nulls(arr: pa.Array) -> np.ndarray:
    return arr.is_null().to_numpy(zero_copy_only=False)


def _bools(arr: pa.Array) -> np.ndarray:
    """Return a boolean Arrow array as NumPy, null as ``False``."""
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False)


def _floats(arr: pa.Array) -> np.ndarray:
    """Return a numeric Arrow array as float64 NumPy, null as NaN."""
    cast = pc.cast(arr, pa.float64(), safe=False)
    return cast.to_numpy(zero_copy_only=False)


def _strip_each(raw: pd.Series) -> pd.Series:
    return raw.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)


def missing_mask(raw: pd.Series) -> np.ndarray:
    """Return which values are missing: null, NaN, or text that is blank."""
    return _text_and_missing(raw, _arrow(raw))[1]


def _text_and_missing(raw: pd.Series, arr: pa.Array | None) -> tuple[pa.Array | None, np.ndarray]:
    """Return the text values trimmed (``None`` for a column not of text) and the missing mask.

    Missing text (null or blank) is null in the trimmed values.
    """
    if arr is not None:
        if not _is_text(arr):
            return None, _nulls(arr)
        text = pc.utf8_trim_whitespace(arr)
        blank = pc.equal(text, "")
        if pc.any(blank).as_py():
            text = pc.if_else(blank, None, text)
        return text, _nulls(text)
    mask = raw.isna().to_numpy(dtype=bool).copy()
    text = raw.astype(object).where(~mask, "")
    mask |= np.array([isinstance(v, str) and v.strip() == "" for v in text], dtype=bool)
    return None, mask


def _fixed_width(text: pa.Array) -> np.ndarray | None:
    """Return the bytes of text values as an (n, width) array, or ``None``.

    ``None`` unless every value is present and all have the same (non-zero) length.
    """
    if text.null_count or not len(text) or not _is_text(text):
        return None
    large = pa.types.is_large_string(text.type)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64 if large else np.int32)
    offsets = offsets[text.offset : text.offset + len(text) + 1]
    width = int(offsets[1] - offsets[0])
    if width <= 0 or int(offsets[-1] - offsets[0]) != width * len(text):
        return None
    if not (np.diff(offsets) == width).all():
        return None
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)
    return data[int(offsets[0]) : int(offsets[-1])].reshape(len(text), width)


def value_ids(values: pd.Series) -> np.ndarray:
    """Return one integer per value, equal exactly where the values are equal (NaN = NaN).

    Text values of one length (pseudonyms) are hashed 8 bytes at a time, and only rows
    sharing a hash are compared in full; other values are factorised by pandas.
    """
    arr = _arrow(values)
    rows = None if arr is None else _fixed_width(arr)
    if rows is None or rows.shape[1] % 8:
        return pd.factorize(values, use_na_sentinel=False)[0]
    words = rows.view(np.uint64)
    hashed = np.zeros(len(words), dtype=np.uint64)
    for j in range(words.shape[1]):
        hashed = (hashed ^ words[:, j]) * np.uint64(0x9E3779B97F4A7C15)
        hashed ^= hashed >> np.uint64(29)
    ids = pd.factorize(hashed)[0]
    shared = np.flatnonzero(pd.Series(ids, copy=False).duplicated(keep=False).to_numpy(dtype=bool))
    if shared.size:  # equal values, or different values whose hashes collide
        exact = pd.factorize(arr.take(pa.array(shared)).to_pandas())[0]
        ids[shared] = exact + ids.max() + 1
    return ids


def _full_match(text: pa.Array, pattern: str, missing: np.ndarray) -> np.ndarray:
    """Return which values match ``pattern`` in full (Python ``re`` semantics).

    Arrow's RE2 checks plain ASCII lines; other values, and patterns RE2 cannot
    compile, go through Python's ``re``.
    """
    if pattern == PSEUDONYM_PATTERN:
        rows = _fixed_width(text)
        if rows is not None and rows.shape[1] == 32:  # every value 32 bytes: all hex?
            return np.take(_HEX_BYTES, rows).all(axis=1)
    rx = re.compile(pattern)
    try:
        fast = _bools(pc.match_substring_regex(text, f"^(?:{pattern})$"))
        odd = ~_bools(pc.string_is_ascii(text))
        if "$" in pattern[:-1]:  # Python's $ may match before a final newline; RE2's not
            odd |= _bools(pc.match_substring(text, "\n"))
    except _ARROW_FAILS:
        fast, odd = np.zeros(len(text), dtype=bool), np.ones(len(text), dtype=bool)
    odd &= ~missing
    for pos in np.flatnonzero(odd):
        fast[pos] = rx.fullmatch(str(text[int(pos)].as_py())) is not None
    return fast


def convert_column(
    col: Column, raw: pd.Series
) -> tuple[pd.Series | pd.Categorical, Found, np.ndarray]:
    """Convert one column to its schema dtype and check every value.

    Args:
        col: the column's rule.
        raw: its values as read, indexed 0..n-1.

    Returns:
        The values (see ``nodes.data_loading.validate_frame`` for the dtypes), each
        problem as (first 0-based position, reason, rows affected), and the mask of rows
        with any problem. A row is blamed once per column, for its first problem.
    """
    raw = raw.reset_index(drop=True)
    arr = _arrow(raw)
    text, missing = _text_and_missing(raw, arr)
    problems: Found = []
    bad = np.zeros(len(raw), dtype=bool)

    def note(mask: np.ndarray, reason_of: Callable[[int], str] | str) -> None:
        nonlocal bad
        mask = mask & ~bad
        hits = np.flatnonzero(mask)
        if hits.size:
            pos = int(hits[0])
            reason = reason_of(pos) if callable(reason_of) else reason_of
            problems.append((pos, reason, int(hits.size)))
            bad = bad | mask

    if col.required:
        note(missing, "missing value in a required column")

    v = _Values(col, raw, arr, text, missing, note)
    values: pd.Series | pd.Categorical
    if col.kind in ("int", "float"):
        values = _numbers(v)
    elif col.kind == "bool":
        values = _booleans(v)
    elif col.kind == "category":
        values = _categories(v)
    elif col.kind == "date":
        values = _dates(v)
    else:
        values = _strings(v)
    return values, sorted(problems), bad


Note = Callable[[np.ndarray, Callable[[int], str] | str], None]


@dataclass(frozen=True)
class _Values:
    """One column as read: its rule, values (as Arrow, and trimmed text), and its notes."""

    col: Column
    raw: pd.Series
    arr: pa.Array | None
    text: pa.Array | None
    missing: np.ndarray
    note: Note

    def raw_text(self, pos: int) -> str:
        """Return the value at ``pos`` as read: text quoted, other values as printed."""
        value = self.raw.iloc[pos]
        return repr(value) if isinstance(value, str) else str(value)


def _numbers(v: _Values) -> pd.Series:
    values: np.ndarray | None = None
    if _whole_numbers(v.arr):  # no missing, no fraction, nothing infinite: only the range
        ints = v.arr.to_numpy().astype(np.int64, copy=False)
        outside = _outside(v.col, ints)
        v.note(outside, lambda p: f"value {v.raw_text(p)} is outside {v.col.describe_range()}")
        if v.col.kind == "float":
            return pd.Series(ints.astype(float), copy=False)
        return _integers(ints, np.zeros(len(ints), dtype=bool), v.col.required)
    if _is_number(v.arr):
        values = _floats(v.arr)
    elif v.text is not None:
        try:
            values = _floats(pc.cast(v.text, pa.float64()))
        except _ARROW_FAILS:  # some value is not a number: let pandas find which
            objects = v.text.to_numpy(zero_copy_only=False)
            values = pd.to_numeric(objects, errors="coerce").astype(float)
    if values is None:
        parsed = pd.to_numeric(_strip_each(v.raw).where(~v.missing, None), errors="coerce")
        values = parsed.astype(float).to_numpy(dtype=float)
    v.note(np.isnan(values) & ~v.missing, lambda p: f"value {v.raw_text(p)} is not a number")
    v.note(np.isinf(values), lambda p: f"value {v.raw_text(p)} is not finite")
    finite = np.isfinite(values)
    if v.col.kind == "int":
        fraction = finite & (values != np.round(values))
        v.note(fraction, lambda p: f"value {v.raw_text(p)} is not an integer")
    outside = finite & _outside(v.col, values)
    v.note(
        outside,
        lambda p: f"value {v.raw_text(p).strip(chr(39))} is outside {v.col.describe_range()}",
    )
    if v.col.kind == "float":
        return pd.Series(_own(values), copy=False)
    return _integers(np.where(finite, values, 0).astype(np.int64), ~finite, v.col.required)


def _own(values: np.ndarray) -> np.ndarray:
    """Return ``values``, copied when they are Arrow's read-only memory (callers may write)."""
    return values if values.flags.writeable else values.copy()


def _whole_numbers(arr: pa.Array | None) -> bool:
    """Return whether ``arr`` is a signed-integer Arrow array without nulls."""
    return arr is not None and pa.types.is_signed_integer(arr.type) and arr.null_count == 0


def _outside(col: Column, values: np.ndarray) -> np.ndarray:
    low = -np.inf if col.low is None else float(col.low)
    high = np.inf if col.high is None else float(col.high)
    return (values < low) | (values > high)


def _integers(values: np.ndarray, absent: np.ndarray, required: bool) -> pd.Series:
    """Return int64 values (``Int64``, ``absent`` as NA, when the column is optional)."""
    if required:
        return pd.Series(_own(values), copy=False)
    return pd.Series(pd.arrays.IntegerArray(values, absent.copy()))


def _booleans(v: _Values) -> pd.Series:
    if _whole_numbers(v.arr):
        ints = v.arr.to_numpy().astype(np.int64, copy=False)
        if not len(ints) or (ints.min() >= 0 and ints.max() <= 1):  # all 0 or 1, none missing
            return _integers(ints, np.zeros(len(ints), dtype=bool), v.col.required)
        codes = np.where((ints == 0) | (ints == 1), ints, -1)
    elif _is_number(v.arr):
        values = _floats(v.arr)
        codes = np.where(values == 0, 0, np.where(values == 1, 1, -1))
    elif v.text is not None:
        index = pc.index_in(pc.utf8_lower(v.text), value_set=_BOOL_TEXT)
        found = pc.fill_null(index, -1).to_numpy(zero_copy_only=False)
        codes = np.where(found < 0, -1, found // 3)
    else:
        codes = np.array([_bool_code(x) for x in v.raw.to_numpy(dtype=object)], dtype=np.int64)
    codes = np.where(v.missing, -1, codes).astype(np.int64)
    v.note((codes < 0) & ~v.missing, lambda p: f"value {v.raw_text(p)} is not 0 or 1")
    return _integers(np.where(codes < 0, 0, codes), codes < 0, v.col.required)


def _bool_code(v: object) -> int:
    """Return 0 or 1 for a boolean-like value, else -1."""
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | np.integer | float | np.floating):
        return int(v) if v in (0, 1) else -1
    s = str(v).strip().lower()
    return 1 if s in _TRUE else 0 if s in _FALSE else -1


def _categories(v: _Values) -> pd.Categorical:
    allowed = list(v.col.categories)
    if v.text is not None:
        codes = pc.fill_null(pc.index_in(v.text, value_set=pa.array(allowed)), -1)
        codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        index = {c: i for i, c in enumerate(allowed)}
        codes = np.array([index.get(str(x), -1) for x in _strip_each(v.raw)], dtype=np.int64)
        codes[v.missing] = -1
    v.note(
        (codes < 0) & ~v.missing, lambda p: f"value {v.raw_text(p)} is not {v.col.describe_range()}"
    )
    return pd.Categorical.from_codes(codes, categories=allowed)


def _dates(v: _Values) -> pd.Series:
    parsed: pd.Series | None = None
    if pd.api.types.is_datetime64_any_dtype(v.raw.dtype):
        parsed = pd.to_datetime(v.raw)
    elif v.arr is not None and pa.types.is_temporal(v.arr.type):
        try:
            parsed = _timestamps(pc.cast(v.arr, pa.timestamp("ns")))
        except _ARROW_FAILS:
            parsed = None
    elif v.text is not None:
        iso = pc.if_else(pc.match_substring_regex(v.text, _ISO_DATE), v.text, None)
        try:
            days = pc.cast(iso, pa.date32())
            parsed = _timestamps(pc.cast(days, pa.timestamp("ns")))
        except _ARROW_FAILS:  # an impossible date (2019-02-30): let pandas find which
            dated = pd.Series(iso.to_numpy(zero_copy_only=False), dtype=object)
            parsed = pd.to_datetime(dated, format="%Y-%m-%d", errors="coerce")
    if parsed is None:
        dated = _strip_each(v.raw).where(~v.missing, None).map(_as_iso)
        parsed = pd.to_datetime(dated, format="%Y-%m-%d", errors="coerce")
    unparsed = parsed.isna().to_numpy(dtype=bool)
    v.note(
        unparsed & ~v.missing, lambda p: f"value {v.raw_text(p)} is not an ISO date (YYYY-MM-DD)"
    )
    if v.col.low is not None:
        early = ~unparsed & (parsed < pd.Timestamp(str(v.col.low))).to_numpy(dtype=bool)
        v.note(early, lambda p: f"date {parsed.iloc[p].date()} is before {v.col.low}")
    if v.col.high is not None:
        late = ~unparsed & (parsed > pd.Timestamp(str(v.col.high))).to_numpy(dtype=bool)
        v.note(late, lambda p: f"date {parsed.iloc[p].date()} is after {v.col.high}")
    return parsed if parsed.dtype == "datetime64[ns]" else parsed.astype("datetime64[ns]")


def _timestamps(arr: pa.Array) -> pd.Series:
    return pd.Series(arr.to_numpy(zero_copy_only=False).astype("datetime64[ns]"), copy=False)


def _as_iso(value: object) -> object:
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    if value is None:
        return None
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return str(value.isoformat())[:10]
    return "not-a-date"


def _strings(v: _Values) -> pd.Series:
    text = v.text
    if text is None:
        objects = _strip_each(v.raw).where(~v.missing, None)
        text = pa.array([None if m else str(x) for x, m in zip(objects, v.missing, strict=True)])
    if v.col.pattern is not None:
        nomatch = ~_full_match(text, v.col.pattern, v.missing) & ~v.missing
        what = "a 32-hex-digit pseudonym" if v.col.role == "key" else f"matching {v.col.pattern}"
        v.note(nomatch, lambda p: f"value {v.raw_text(p)} is not {what}")
    return pd.Series(text.to_pandas(), dtype="str")
