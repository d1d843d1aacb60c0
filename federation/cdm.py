"""The common data model: one schema per domain that a data holder maps its tables into.

The domains and their columns live in a versioned schema file (``cdm_schema.toml``
beside this module, or the file ``$HAMANASU_CDM_SCHEMA`` names) that nodes and the
coordinator share; a consortium adds a domain or a column by editing it.

A schema lists every column a domain file may hold: its kind (``int``, ``float``,
``bool``, ``category``, ``str``, ``date``), whether it is required, its allowed range or
categories, and its role. Only ``feature`` columns may ever be a job's feature or label;
``key`` columns are consortium pseudonyms (32 hex digits), ``meta`` columns describe the
record (facility, dates), and ``identifier`` / ``free_text`` columns are never usable.
The generated scenario holds no identifier or free-text column at all; the roles exist
so that a holder's own adapter can declare such columns and have them refused.

``bool`` columns are stored as 0/1 integers, so that they enter models as numbers.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_SCHEMA_FILE",
    "DOMAINS",
    "PSEUDONYM_PATTERN",
    "RULES",
    "SCHEMAS",
    "SCHEMA_ENV",
    "SCHEMA_VERSION",
    "Column",
    "ColumnKind",
    "ColumnRole",
    "CrossCheck",
    "DomainSchema",
    "SchemaFile",
    "active_schema_file",
    "declared_ranges",
    "feature_columns",
    "get_schema",
    "load_schema_file",
]

ColumnKind = Literal["int", "float", "bool", "category", "str", "date"]
ColumnRole = Literal["key", "feature", "meta", "identifier", "free_text"]

#: A consortium pseudonym: HMAC-SHA256 truncated to 32 lower-case hex digits.
PSEUDONYM_PATTERN = r"^[0-9a-f]{32}$"

_KINDS = ("int", "float", "bool", "category", "str", "date")
_ROLES = ("key", "feature", "meta", "identifier", "free_text")


@dataclass(frozen=True)
class Column:
    """One column of a domain schema.

    Attributes:
        name: the column name in the file.
        kind: ``int``, ``float``, ``bool`` (0/1), ``category``, ``str`` or ``date``.
        required: a required column must be present and hold no missing value.
        low: smallest allowed value (numbers) or ISO date (dates); ``None`` = unbounded.
        high: largest allowed value or ISO date; ``None`` = unbounded.
        categories: allowed values of a ``category`` column.
        pattern: a regular expression every ``str`` value must match in full.
        role: ``key``, ``feature``, ``meta``, ``identifier`` or ``free_text``.
        unit: unit or coding of the values, for people reading the schema.

    """

    name: str
    kind: ColumnKind
    required: bool = True
    low: float | str | None = None
    high: float | str | None = None
    categories: tuple[str, ...] = ()
    pattern: str | None = None
    role: ColumnRole = "feature"
    unit: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Column {self.name}: kind must be one of {_KINDS}, not {self.kind!r}")
        if self.role not in _ROLES:
            raise ValueError(f"Column {self.name}: role must be one of {_ROLES}, not {self.role!r}")
        if self.kind == "category" and not self.categories:
            raise ValueError(f"Column {self.name}: a category column needs categories")
        if self.kind == "date":
            for bound in (self.low, self.high):
                if bound is not None:
                    dt.date.fromisoformat(str(bound))

    @property
    def usable_as_feature(self) -> bool:
        """Whether a job may name this column as a feature or label."""
        return self.role == "feature"

    def describe_range(self) -> str:
        """Return the allowed values as text, e.g. ``300..6000`` or ``one of a, b``."""
        if self.kind == "category":
            return "one of " + ", ".join(self.categories)
        if self.kind == "bool":
            return "0 or 1"
        low = "" if self.low is None else _fmt(self.low)
        high = "" if self.high is None else _fmt(self.high)
        return f"{low}..{high}"


def _fmt(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class CrossCheck:
    """A rule linking columns of one row, e.g. ``lbw`` agrees with ``birth_weight_g``.

    Attributes:
        column: the column blamed in the error message.
        needs: every column the rule reads (skipped when one is absent).
        ok: returns a boolean Series, ``True`` where a row passes (rows with a missing
            input should pass).
        reason: what a failing row breaks, e.g. ``lbw must be 1 exactly when ...``.

    """

    column: str
    needs: tuple[str, ...]
    ok: Callable[[pd.DataFrame], pd.Series]
    reason: str


@dataclass(frozen=True)
class DomainSchema:
    """The columns of one domain and the rules linking them.

    Attributes:
        name: the domain, e.g. ``births``.
        description: what one row is.
        columns: the columns in file order.
        checks: row-level rules across columns.
        unique: column sets that identify a row (one row per subject and date, ...): two
            rows agreeing on every column of one set are refused as duplicates.
        rows_may_repeat: whether two identical rows are two records (purchase lines
            without a receipt number) rather than one record loaded twice.

    """

    name: str
    description: str
    columns: tuple[Column, ...]
    checks: tuple[CrossCheck, ...] = field(default=())
    unique: tuple[tuple[str, ...], ...] = field(default=())
    rows_may_repeat: bool = False

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"DomainSchema {self.name}: a column name repeats")
        for key in self.unique:
            if not key or any(c not in names for c in key):
                raise ValueError(f"DomainSchema {self.name}: unique key {key} names no column")

    @property
    def names(self) -> tuple[str, ...]:
        """The column names in file order."""
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        """The names of the required columns."""
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        """Return the column called ``name``.

        Raises:
            KeyError: the domain has no such column.

        """
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.name} has no column {name!r}")


#: The environment variable naming another schema file (a consortium's own version).
SCHEMA_ENV = "HAMANASU_CDM_SCHEMA"

#: The schema file packaged with federation.
DEFAULT_SCHEMA_FILE = Path(__file__).with_name("cdm_schema.toml")


def _both_present(df: pd.DataFrame, *cols: str) -> pd.Series:
    return pd.Series(np.logical_and.reduce([df[c].notna().to_numpy() for c in cols]), df.index)


def _flag_below(rule: Mapping[str, Any]) -> CrossCheck:
    flag, of, threshold = str(rule["column"]), str(rule["of"]), float(rule["threshold"])

    def ok(df: pd.DataFrame) -> pd.Series:
        agree = (df[flag] == 1) == (df[of] < threshold)
        return agree | ~_both_present(df, flag, of)

    shown = _fmt(threshold)
    return CrossCheck(flag, (flag, of), ok, f"{flag} must be 1 exactly when {of} < {shown}")


def _less_than(rule: Mapping[str, Any]) -> CrossCheck:
    low, high = str(rule["column"]), str(rule["than"])

    def ok(df: pd.DataFrame) -> pd.Series:
        return (df[low] < df[high]) | ~_both_present(df, low, high)

    return CrossCheck(low, (high, low), ok, f"{low} must be below {high}")


def _bmi(rule: Mapping[str, Any]) -> CrossCheck:
    bmi, weight, height = str(rule["column"]), str(rule["weight"]), str(rule["height"])
    tolerance = float(rule.get("tolerance", 0.5))

    def ok(df: pd.DataFrame) -> pd.Series:
        implied = df[weight] / (df[height] / 100.0) ** 2
        close = (implied - df[bmi]).abs() <= tolerance
        return close | ~_both_present(df, bmi, weight, height)

    reason = f"{bmi} must equal {weight} / ({height}/100)^2 within {_fmt(tolerance)}"
    return CrossCheck(bmi, (bmi, weight, height), ok, reason)


#: The row rules a schema file may name, by ``rule``.
RULES: Mapping[str, Callable[[Mapping[str, Any]], CrossCheck]] = {
    "flag_below": _flag_below,
    "less_than": _less_than,
    "bmi": _bmi,
}

_COLUMN_KEYS = {"name", "kind", "required", "low", "high", "categories", "pattern", "role", "unit"}


def _column(domain: str, raw: Mapping[str, Any]) -> Column:
    unknown = set(raw) - _COLUMN_KEYS
    if unknown or "name" not in raw:
        what = f"unknown key(s) {sorted(unknown)}" if unknown else "no name"
        raise ValueError(f"domain {domain}: a column has {what}")
    values = dict(raw)
    if values.get("role") == "key":
        values.setdefault("kind", "str")
        values.setdefault("pattern", PSEUDONYM_PATTERN)
        values.setdefault("unit", "consortium pseudonym")
    if "kind" not in values:
        raise ValueError(f"domain {domain}: column {values['name']} has no kind")
    if "categories" in values:
        values["categories"] = tuple(str(c) for c in values["categories"])
    return Column(**values)


def _domain(name: str, raw: Mapping[str, Any]) -> DomainSchema:
    columns = tuple(_column(name, c) for c in raw.get("columns", ()))
    if not columns:
        raise ValueError(f"domain {name}: no columns")
    checks = []
    for rule in raw.get("checks", ()):
        make = RULES.get(str(rule.get("rule")))
        if make is None:
            raise ValueError(
                f"domain {name}: unknown rule {rule.get('rule')!r}; known: {sorted(RULES)}"
            )
        try:
            checks.append(make(rule))
        except KeyError as exc:
            raise ValueError(f"domain {name}: rule {rule['rule']} needs {exc}") from None
    names = {c.name for c in columns}
    for check in checks:
        if any(n not in names for n in check.needs):
            raise ValueError(f"domain {name}: rule on {check.column} names an unknown column")
    return DomainSchema(
        name,
        str(raw.get("description", "")),
        columns,
        tuple(checks),
        unique=tuple(tuple(str(c) for c in key) for key in raw.get("unique", ())),
        rows_may_repeat=bool(raw.get("rows_may_repeat", False)),
    )


@dataclass(frozen=True)
class SchemaFile:
    """A loaded schema file.

    Attributes:
        version: the consortium's version of the data model.
        domains: every domain's schema by name.
        path: where it was read from.

    """

    version: int
    domains: Mapping[str, DomainSchema]
    path: Path


def load_schema_file(path: Path) -> SchemaFile:
    """Read and check a data-model schema file (TOML).

    Returns:
        The schema file's version and domains.

    Raises:
        ValueError: the file is not valid TOML, has no ``version`` or domains, or a
            domain, column or rule is malformed (the message names it).
        OSError: the file cannot be read.

    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path.name}: not valid TOML ({exc})") from None
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{path.name}: needs an integer version")
    domains = raw.get("domains")
    if not isinstance(domains, dict) or not domains:
        raise ValueError(f"{path.name}: needs at least one [domains.NAME] table")
    try:
        loaded = {name: _domain(name, body) for name, body in domains.items()}
    except TypeError as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    return SchemaFile(version, loaded, path)


def active_schema_file() -> Path:
    """Return the schema file in force: ``$HAMANASU_CDM_SCHEMA`` if set, else the packaged one."""
    named = os.environ.get(SCHEMA_ENV, "").strip()
    return Path(named) if named else DEFAULT_SCHEMA_FILE


_ACTIVE = load_schema_file(active_schema_file())

#: The data model's version (from the schema file).
SCHEMA_VERSION: int = _ACTIVE.version

#: Every domain's schema by name.
SCHEMAS: Mapping[str, DomainSchema] = _ACTIVE.domains

#: The domain names, sorted.
DOMAINS: tuple[str, ...] = tuple(sorted(SCHEMAS))


def get_schema(domain: str) -> DomainSchema:
    """Return the schema of ``domain``.

    Raises:
        KeyError: ``domain`` is not a domain of the common data model (the message
            lists the known domains).

    """
    try:
        return SCHEMAS[domain]
    except KeyError:
        raise KeyError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}") from None


def feature_columns(domain: str) -> tuple[str, ...]:
    """Return the columns of ``domain`` a job may use as features or label.

    Raises:
        KeyError: ``domain`` is unknown.

    """
    return tuple(c.name for c in get_schema(domain).columns if c.usable_as_feature)


def declared_ranges(domain: str) -> dict[str, tuple[float, float]]:
    """Return the domain's numeric and boolean columns' declared (low, high).

    These public bounds scale secure sums and clip values in statistics and GLM jobs.
    An unknown domain has none.
    """
    try:
        schema = get_schema(domain)
    except KeyError:
        return {}
    out: dict[str, tuple[float, float]] = {}
    for col in schema.columns:
        if col.kind == "bool":
            out[col.name] = (0.0, 1.0)
        elif (
            col.kind in ("int", "float")
            and isinstance(col.low, int | float)
            and isinstance(col.high, int | float)
        ):
            out[col.name] = (float(col.low), float(col.high))
    return out
