"""The common data model: one schema per domain that a data holder maps its tables into.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "DOMAINS",
    "PSEUDONYM_PATTERN",
    "SCHEMAS",
    "Column",
    "ColumnKind",
    "ColumnRole",
    "CrossCheck",
    "DomainSchema",
    "feature_columns",
    "get_schema",
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


def _key(name: str, unit: str = "consortium pseudonym") -> Column:
    return Column(name, "str", pattern=PSEUDONYM_PATTERN, role="key", unit=unit)


def _flag(name: str, unit: str = "0 no, 1 yes", required: bool = True) -> Column:
    return Column(name, "bool", required=required, unit=unit)


def _both_present(df: pd.DataFrame, *cols: str) -> pd.Series:
    return pd.Series(np.logical_and.reduce([df[c].notna().to_numpy() for c in cols]), df.index)


def _lbw_ok(df: pd.DataFrame) -> pd.Series:
    agree = (df["lbw"] == 1) == (df["birth_weight_g"] < 2500)
    return agree | ~_both_present(df, "lbw", "birth_weight_g")


def _preterm_ok(df: pd.DataFrame) -> pd.Series:
    agree = (df["preterm"] == 1) == (df["gestational_weeks"] < 37)
    return agree | ~_both_present(df, "preterm", "gestational_weeks")


def _bp_ok(df: pd.DataFrame) -> pd.Series:
    return (df["dbp"] < df["sbp"]) | ~_both_present(df, "sbp", "dbp")


def _bmi_ok(df: pd.DataFrame) -> pd.Series:
    implied = df["weight_kg"] / (df["height_cm"] / 100.0) ** 2
    close = (implied - df["bmi"]).abs() <= 0.5
    return close | ~_both_present(df, "bmi", "weight_kg", "height_cm")


BIRTHS = DomainSchema(
    "births",
    "one newborn (twins are two rows with the same mother)",
    (
        _key("subject", "mother's consortium pseudonym"),
        _key("infant", "infant's consortium pseudonym"),
        Column("year", "int", low=1990, high=2100, role="meta"),
        Column("birth_date", "date", low="1990-01-01", high="2100-12-31", role="meta"),
        Column("facility", "str", pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", role="meta"),
        Column("maternal_age", "int", low=13, high=55, unit="years"),
        Column("parity", "int", low=1, high=15, unit="birth order, 1 = first"),
        Column("bmi_pre", "float", low=12, high=50, unit="kg/m2 before pregnancy"),
        _flag("smoking", "smoked during pregnancy"),
        _flag("alcohol", "drank alcohol in later pregnancy"),
        _flag("hdp", "hypertensive disorder of pregnancy"),
        Column("gwg_kg", "float", low=-15, high=40, unit="gestational weight gain, kg"),
        _flag("multiple", "twin or higher-order birth"),
        _flag("female", "0 boy, 1 girl"),
        Column("gestational_weeks", "int", low=22, high=44, unit="completed weeks"),
        _flag("preterm", "gestational_weeks < 37"),
        Column("birth_weight_g", "int", low=300, high=6000, unit="g"),
        _flag("lbw", "birth_weight_g < 2500"),
        Column("calcium_mg", "float", low=0, high=5000, unit="mg/day before pregnancy"),
        Column("dairy_g_day", "float", low=0, high=2000, unit="g/day milk and dairy"),
    ),
    (
        CrossCheck(
            "lbw",
            ("lbw", "birth_weight_g"),
            _lbw_ok,
            "lbw must be 1 exactly when birth_weight_g < 2500",
        ),
        CrossCheck(
            "preterm",
            ("preterm", "gestational_weeks"),
            _preterm_ok,
            "preterm must be 1 exactly when gestational_weeks < 37",
        ),
    ),
    unique=(("infant",),),
)

CHECKUPS = DomainSchema(
    "checkups",
    "one specific health checkup (adults 40-74) or wellness-programme measurement",
    (
        _key("subject"),
        Column("year", "int", low=1990, high=2100, role="meta", unit="fiscal year"),
        Column("checkup_date", "date", low="1990-01-01", high="2100-12-31", role="meta"),
        Column("age", "int", low=18, high=110, unit="years"),
        _flag("female", "0 man, 1 woman"),
        Column("height_cm", "float", low=120, high=210),
        Column("weight_kg", "float", low=25, high=250),
        Column("bmi", "float", low=12, high=70, unit="kg/m2"),
        Column("waist_cm", "float", low=40, high=200),
        Column("sbp", "int", low=60, high=260, unit="mmHg"),
        Column("dbp", "int", low=30, high=160, unit="mmHg"),
        Column("glucose", "float", low=40, high=600, required=False, unit="fasting, mg/dL"),
        Column("hba1c", "float", low=3, high=20, required=False, unit="%"),
        Column("ldl", "float", low=10, high=500, unit="mg/dL"),
        Column("hdl", "float", low=5, high=200, unit="mg/dL"),
        Column("tg", "float", low=10, high=3000, unit="mg/dL"),
        Column("ast", "float", low=1, high=2000, unit="U/L"),
        Column("alt", "float", low=1, high=2000, unit="U/L"),
        Column("ggt", "float", low=1, high=3000, unit="U/L"),
        Column("urine_glucose", "int", low=0, high=4, unit="0 -, 1 +/-, 2 +, 3 2+, 4 3+"),
        Column("urine_protein", "int", low=0, high=4, unit="0 -, 1 +/-, 2 +, 3 2+, 4 3+"),
        _flag("smoking", "current smoker"),
    ),
    (
        CrossCheck("dbp", ("sbp", "dbp"), _bp_ok, "dbp must be below sbp"),
        CrossCheck(
            "bmi",
            ("bmi", "weight_kg", "height_cm"),
            _bmi_ok,
            "bmi must equal weight_kg / (height_cm/100)^2 within 0.5",
        ),
    ),
    unique=(("subject", "checkup_date"),),
)

INFANT_CHECKUPS = DomainSchema(
    "infant_checkups",
    "one municipal infant health checkup (4, 10, 18 months, 3 years)",
    (
        _key("subject", "infant's consortium pseudonym"),
        _key("mother", "mother's consortium pseudonym"),
        Column("checkup_date", "date", low="1990-01-01", high="2100-12-31", role="meta"),
        Column("age_months", "int", low=0, high=72),
        _flag("female", "0 boy, 1 girl"),
        Column("weight_g", "int", low=1000, high=40000),
        Column("length_cm", "float", low=35, high=130),
        Column("head_cm", "float", low=25, high=60),
        Column(
            "feeding",
            "category",
            required=False,
            categories=("breast", "mixed", "formula"),
            unit="at the 4-month checkup",
        ),
    ),
    unique=(("subject", "checkup_date"),),
)

PURCHASE_CATEGORIES = (
    "food",
    "household",
    "beauty",
    "otc_drugs",
    "toiletries",
    "health_care_baby",
    "dispensing",
    "supplements",
    "other",
)

PURCHASES = DomainSchema(
    "purchases",
    "one line of a loyalty-card purchase at the drugstore chain",
    (
        _key("subject"),
        Column("purchase_date", "date", low="1990-01-01", high="2100-12-31", role="meta"),
        Column("category", "category", categories=PURCHASE_CATEGORIES),
        Column("quantity", "int", low=1, high=1000),
        Column("amount_yen", "int", low=1, high=10_000_000),
    ),
    rows_may_repeat=True,
)

DAIRY_INTAKE = DomainSchema(
    "dairy_intake",
    "one dietary survey answer of the dairy company's panel",
    (
        _key("subject"),
        Column("survey_date", "date", low="1990-01-01", high="2100-12-31", role="meta"),
        Column("milk_g_day", "float", low=0, high=3000, unit="g/day"),
        Column("other_dairy_g_day", "float", low=0, high=2000, unit="g/day"),
        Column(
            "bifidobacteria_pct",
            "float",
            low=0,
            high=100,
            required=False,
            unit="stool bifidobacteria proportion, %",
        ),
    ),
    unique=(("subject", "survey_date"),),
)

#: Every domain's schema by name.
SCHEMAS: Mapping[str, DomainSchema] = {
    s.name: s for s in (BIRTHS, CHECKUPS, INFANT_CHECKUPS, PURCHASES, DAIRY_INTAKE)
}

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
