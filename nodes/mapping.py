"""A node's mapping file: how a holder's own database tables become the common data model.

The mapping is declarative TOML, one per node (see docs/databases.md)::

    url_env = "HOSPITAL_DB_URL"         # or url = "sqlite:///hospital.db"
    row_limit = 2000000
    timeout_s = 60

    [domains.births]
    table = "deliveries"                # or query = "SELECT ..."
    where = "status = 'final'"
    [domains.births.columns]
    subject = "mother_pseudonym"
    birth_weight_g = { from = "weight_kg", convert = "kg->g", round = 0 }
    smoking = { from = "smoke_code", codes = { N = 0, Y = 1, EX = 0 } }
    lbw = { derive = "flag_below", of = "birth_weight_g", threshold = 2500 }

The domains a mapping names are the domains the node holds.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CONVERSIONS",
    "ColumnMap",
    "DomainMap",
    "NodeMapping",
    "is_mapping_file",
    "load_mapping",
]

#: Unit conversions a column may name, as multiplicative factors.
CONVERSIONS: dict[str, float] = {
    "kg->g": 1000.0,
    "g->kg": 0.001,
    "mg->g": 0.001,
    "g->mg": 1000.0,
    "lb->kg": 0.45359237,
    "m->cm": 100.0,
    "mm->cm": 0.1,
    "in->cm": 2.54,
    "kPa->mmHg": 7.500616827,
    "days->weeks": 1.0 / 7.0,
    "mmol/L->mg/dL glucose": 18.016,
    "percent->fraction": 0.01,
}


class ColumnMap(BaseModel):
    """How one data-model column is made: from a source column, a constant, or derived.

    Attributes:
        source: the holder's column (``from`` in the file).
        value: a constant for every row (e.g. the facility name).
        derive: ``flag_below`` (1 when ``of`` < ``threshold``), ``year`` (of a date
            column) or ``bmi`` (``weight`` kg over ``height`` cm squared), computed from
            other data-model columns of the same row.
        convert: a named unit conversion (see :data:`CONVERSIONS`).
        scale: a factor to multiply by (when no named conversion fits).
        round: decimals to round to after converting, or ``floor``.
        codes: the holder's codes and the values they stand for; an unlisted code is a
            problem, a missing value stays missing.
        date_format: ``strftime`` format of a date stored as text or a number.

    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str | None = Field(default=None, alias="from", min_length=1)
    value: str | int | float | None = None
    derive: Literal["flag_below", "year", "bmi"] | None = None
    of: str | None = None
    threshold: float | None = None
    weight: str | None = None
    height: str | None = None
    convert: str | None = None
    scale: float | None = None
    round: int | Literal["floor"] | None = None
    codes: dict[str, int | float | str] | None = None
    date_format: str | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> ColumnMap:
        origins = [self.source is not None, self.value is not None, self.derive is not None]
        if sum(origins) != 1:
            raise ValueError("give exactly one of from, value, derive")
        if self.convert is not None and self.convert not in CONVERSIONS:
            raise ValueError(f"unknown conversion {self.convert!r}; known: {sorted(CONVERSIONS)}")
        if self.derive in ("flag_below", "year") and self.of is None:
            raise ValueError(f"derive = {self.derive} needs of")
        if self.derive == "flag_below" and self.threshold is None:
            raise ValueError("derive = flag_below needs threshold")
        if self.derive == "bmi" and (self.weight is None or self.height is None):
            raise ValueError("derive = bmi needs weight and height")
        return self

    def inputs(self) -> tuple[str, ...]:
        """Return the data-model columns a derived column reads (none otherwise)."""
        if self.derive == "bmi":
            return (str(self.weight), str(self.height))
        return (str(self.of),) if self.derive else ()

    def apply(self, raw: pd.Series, problems: list[tuple[int, str, int]]) -> pd.Series:
        """Return the holder's values as data-model values (codes, dates, units).

        ``problems`` receives (first position, reason, how many rows) for each kind of
        value that cannot be mapped; those rows become missing.
        """
        values = raw.reset_index(drop=True)
        missing = values.isna().to_numpy(dtype=bool)
        if self.codes is not None:
            table = {str(k): v for k, v in self.codes.items()}
            codes, distinct = _distinct(values)
            known = [table.get(_code_text(v), np.nan) for v in distinct] + [np.nan]
            mapped = pd.Series(np.array(known, dtype=object)[codes]).infer_objects()
            unknown = mapped.isna().to_numpy(dtype=bool) & ~missing
            if unknown.any():
                first = int(np.flatnonzero(unknown)[0])
                listed = ", ".join(sorted(table))
                code = _code_text(values.iloc[first])
                reason = f"code {code!r} has no mapping (mapped: {listed})"
                problems.append((first, reason, int(unknown.sum())))
            return mapped
        if self.date_format is not None:
            codes, distinct = _distinct(values)
            text = pd.Series([_code_text(v) for v in distinct], dtype=object)
            days = pd.to_datetime(text, format=self.date_format, errors="coerce").dt.normalize()
            known_days = np.append(days.to_numpy("datetime64[ns]"), np.datetime64("NaT", "ns"))
            parsed = pd.Series(known_days[codes])  # the day: data-model dates have no time
            bad = parsed.isna().to_numpy(dtype=bool) & ~missing
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                code = _code_text(values.iloc[first])
                reason = f"{code!r} is not a date in the format {self.date_format}"
                problems.append((first, reason, int(bad.sum())))
            return parsed
        factor = (CONVERSIONS[self.convert] if self.convert else 1.0) * (self.scale or 1.0)
        if factor == 1.0 and self.round is None:
            return values
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna().to_numpy(dtype=bool) & ~missing
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            problems.append((first, f"{values.iloc[first]!r} is not a number", int(bad.sum())))
        out = numbers * factor
        if self.round == "floor":
            return np.floor(out + 1e-9)
        return out.round(self.round) if self.round is not None else out


def _distinct(values: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Return each row's index into a list of the distinct values (-1: missing), and the list.

    Python objects are not merged (``True``, ``1`` and ``1.0`` are one hash key but may
    read differently): each row is its own value there.
    """
    if values.dtype == object:
        missing = values.isna().to_numpy(dtype=bool)
        return np.where(missing, -1, np.arange(len(values))), list(values)
    codes, distinct = pd.factorize(values)
    return codes, list(distinct)


def _code_text(value: object) -> str:
    """Return a code as text: ``1.0`` and ``1`` are the same code."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


class DomainMap(BaseModel):
    """How one domain is read: a table (or a query), a filter, and its columns.

    Attributes:
        table: the holder's table or view.
        query: a ``SELECT`` whose result is read instead of a table.
        where: an SQL condition on the holder's columns (rows not matching are not read).
        columns: every data-model column the node provides, by name.

    """

    model_config = ConfigDict(extra="forbid")

    table: str | None = Field(default=None, min_length=1)
    query: str | None = Field(default=None, min_length=1)
    where: str | None = None
    columns: dict[str, ColumnMap]

    @model_validator(mode="before")
    @classmethod
    def _short_columns(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("columns"), dict):
            data = dict(data)
            data["columns"] = {
                k: {"from": v} if isinstance(v, str) else v for k, v in data["columns"].items()
            }
        return data

    @model_validator(mode="after")
    def _table_or_query(self) -> DomainMap:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table, query")
        return self


class NodeMapping(BaseModel):
    """A node's whole mapping file.

    Attributes:
        url: the SQLAlchemy URL of the holder's database (relative SQLite paths are
            taken from the mapping file's folder).
        url_env: the environment variable holding the URL instead.
        password_file: a file only its owner can read (0600) holding the database
            password (relative to the mapping file's folder); the URL then holds none.
        db_schema: the database schema holding the tables (``schema`` in the file).
        row_limit: most rows one read may return; more is an error, not a truncation.
        timeout_s: longest a statement may run.
        complete_case: drop rows missing a value a job needs (counted) instead of
            refusing the table.
        domains: the domains this node holds, and how each is read.
        path: the mapping file.

    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str | None = None
    url_env: str | None = None
    password_file: Path | None = None
    db_schema: str | None = Field(default=None, alias="schema")
    row_limit: int = Field(default=5_000_000, gt=0)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    complete_case: bool = False
    domains: dict[str, DomainMap] = Field(min_length=1)
    path: Path = Path(".")

    @model_validator(mode="after")
    def _one_url(self) -> NodeMapping:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url, url_env")
        return self

    def database_url(self) -> str:
        """Return the database URL (from the file or its environment variable).

        With ``password_file``, the password read from it is put into the URL.

        Raises:
            ValueError: the environment variable is not set; the password file is missing,
                readable by others or empty, or the URL holds a password as well.
        """
        if self.url_env is not None:
            url = os.environ.get(self.url_env, "").strip()
            if not url:
                raise ValueError(f"{self.path.name}: url_env {self.url_env} is not set")
            return self._with_password(url)
        url = self._with_password(str(self.url))
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str((self.path.parent / url[len(prefix) :]).resolve())
        return url

    def _with_password(self, url: str) -> str:
        """Return ``url`` with the password of ``password_file`` in it (if one is set)."""
        if self.password_file is None:
            return url
        from sqlalchemy.engine import make_url

        from federation.secret_files import read_secret_file

        parsed = make_url(url)
        if parsed.password is not None:
            raise ValueError(
                f"{self.path.name}: password_file: the URL holds a password too; remove it"
            )
        path = self.password_file
        password = read_secret_file(path if path.is_absolute() else self.path.parent / path,
                                    "password_file")
        return parsed.set(password=password).render_as_string(hide_password=False)

    def domain(self, name: str) -> DomainMap:
        """Return how ``name`` is read.

        Raises:
            KeyError: the node does not hold that domain.
        """
        try:
            return self.domains[name]
        except KeyError:
            held = ", ".join(sorted(self.domains))
            raise KeyError(f"this node holds no {name} (it holds: {held})") from None


def is_mapping_file(data: Path) -> bool:
    """Return whether a node's data path names a mapping file rather than data files."""
    return data.suffix.lower() == ".toml" and data.is_file()


def load_mapping(path: Path) -> NodeMapping:
    """Read and check a mapping file.

    Returns:
        The mapping.

    Raises:
        ValueError: the file is not valid TOML or breaks the mapping's shape (naming the
            field).
        OSError: it cannot be read.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path.name}: not valid TOML ({exc})") from None
    try:
        mapping = NodeMapping.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{path.name}: {where}: {err['msg']}") from None
    return mapping.model_copy(update={"path": path})
