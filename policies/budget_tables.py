"""The privacy-budget ledger's SQLite tables, and readers of their rows by column name."""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime

from policies.accounting import Composition
from policies.budget_math import ActiveJob, ClosedSpending, budget_status
from policies.budget_records import BudgetStatus, Charge, Reservation
from policies.decision import BudgetRemaining
from policies.errors import BudgetError
from policies.model import BudgetRule

__all__ = [
    "CHARGE_COLS",
    "charge_of",
    "JOB_COLS",
    "RES_COLS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "active_job",
    "composition_of",
    "read_active",
    "read_closed",
    "read_rule",
    "read_status",
    "remaining_of",
    "reservation_of",
    "write_closed",
]

#: The version of the tables below, stored in ``meta``.
SCHEMA_VERSION = "1"

#: The tables: budget rules, reservations (with each job's composed charges), charges,
#: and each domain and period's closed spending.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS budgets (
    domain TEXT PRIMARY KEY,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    period TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    job_id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    period TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'released')),
    reserved_at TEXT NOT NULL,
    rdp BLOB,
    has_rdp INTEGER NOT NULL DEFAULT 0,
    pure_epsilon REAL NOT NULL DEFAULT 0,
    pure_delta REAL NOT NULL DEFAULT 0,
    used_epsilon REAL NOT NULL DEFAULT 0,
    charges INTEGER NOT NULL DEFAULT 0,
    released_at TEXT,
    release_reason TEXT,
    freed_epsilon REAL
);
CREATE INDEX IF NOT EXISTS reservations_by_period ON reservations (domain, period, status);
CREATE TABLE IF NOT EXISTS charges (
    job_id TEXT NOT NULL REFERENCES reservations (job_id),
    round INTEGER NOT NULL,
    mechanism TEXT NOT NULL,
    reported_epsilon REAL,
    job_epsilon_spent REAL NOT NULL,
    charged_at TEXT NOT NULL,
    PRIMARY KEY (job_id, round)
);
CREATE TABLE IF NOT EXISTS closed (
    domain TEXT NOT NULL,
    period TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    rdp BLOB,
    has_rdp INTEGER NOT NULL,
    pure_epsilon REAL NOT NULL,
    pure_delta REAL NOT NULL,
    jobs INTEGER NOT NULL,
    PRIMARY KEY (domain, period)
);
"""

#: The columns of a :class:`~policies.budget_records.Reservation`.
RES_COLS = (
    "job_id, domain, period, epsilon, delta, reserved_at, status, used_epsilon, charges, "
    "released_at, release_reason"
)
#: The columns of a :class:`~policies.budget_records.Charge` read back.
CHARGE_COLS = "round, mechanism, reported_epsilon, job_epsilon_spent, charged_at"
#: The columns of a job's accounting (:class:`~policies.budget_math.ActiveJob`).
JOB_COLS = "job_id, epsilon, delta, rdp, has_rdp, pure_epsilon, pure_delta, used_epsilon, charges"


def composition_of(row: sqlite3.Row) -> Composition:
    """Return the composition stored in a row's ``rdp``, ``has_rdp`` and ``pure_*`` columns."""
    return Composition(
        rdp=Composition.curve_from_blob(row["rdp"]),
        has_rdp=bool(row["has_rdp"]),
        pure_epsilon=row["pure_epsilon"],
        pure_delta=row["pure_delta"],
    )


def active_job(row: sqlite3.Row) -> ActiveJob:
    """Return a reservation row's accounting (the columns of :data:`JOB_COLS`)."""
    return ActiveJob(
        job_id=row["job_id"],
        epsilon=row["epsilon"],
        delta=row["delta"],
        composition=composition_of(row),
        used_epsilon=row["used_epsilon"],
        charges=row["charges"],
    )


def reservation_of(row: sqlite3.Row, remaining: tuple[float, float] | None = None) -> Reservation:
    """Return a reservation row (the columns of :data:`RES_COLS`) as its record."""
    rem = remaining or (math.nan, math.nan)
    return Reservation(
        job_id=row["job_id"],
        domain=row["domain"],
        period=row["period"],
        epsilon=row["epsilon"],
        delta=row["delta"],
        reserved_at=datetime.fromisoformat(row["reserved_at"]),
        status=row["status"],
        used_epsilon=row["used_epsilon"],
        charges=row["charges"],
        remaining_epsilon=rem[0],
        remaining_delta=rem[1],
        released_at=datetime.fromisoformat(row["released_at"]) if row["released_at"] else None,
        release_reason=row["release_reason"],
    )


def read_rule(db: sqlite3.Connection, domain: str) -> BudgetRule:
    """Return the budget rule of ``domain``.

    Raises:
        BudgetError: no budget is configured for the domain.
    """
    row = db.execute(
        "SELECT epsilon, delta, period FROM budgets WHERE domain = ?", (domain,)
    ).fetchone()
    if row is None:
        raise BudgetError("domain", f"no privacy budget is configured for domain {domain!r}")
    return BudgetRule(epsilon=row["epsilon"], delta=row["delta"], period=row["period"])


def read_closed(db: sqlite3.Connection, domain: str, period: str) -> ClosedSpending:
    """Return the closed spending of ``domain`` in ``period`` (nothing when none)."""
    row = db.execute(
        "SELECT epsilon, delta, rdp, has_rdp, pure_epsilon, pure_delta, jobs FROM closed "
        "WHERE domain = ? AND period = ?",
        (domain, period),
    ).fetchone()
    if row is None:
        return ClosedSpending()
    return ClosedSpending(
        epsilon=row["epsilon"],
        delta=row["delta"],
        composition=composition_of(row),
        jobs=row["jobs"],
    )


def read_active(db: sqlite3.Connection, domain: str, period: str) -> list[ActiveJob]:
    """Return the active reservations of ``domain`` in ``period``, oldest first."""
    rows = db.execute(
        f"SELECT {JOB_COLS} FROM reservations "
        "WHERE domain = ? AND period = ? AND status = 'active' ORDER BY rowid",
        (domain, period),
    ).fetchall()
    return [active_job(r) for r in rows]


def read_status(db: sqlite3.Connection, domain: str, period: str, rule: BudgetRule) -> BudgetStatus:
    """Return the budget row of ``domain`` in ``period``."""
    return budget_status(
        domain, period, rule, read_closed(db, domain, period), read_active(db, domain, period)
    )


def remaining_of(status: BudgetStatus) -> BudgetRemaining:
    """Return what a budget row has left, floored at zero."""
    return BudgetRemaining(
        epsilon=max(status.remaining_epsilon, 0.0),
        delta=max(status.remaining_delta, 0.0),
        period=status.period,
    )


def write_closed(db: sqlite3.Connection, domain: str, period: str, spent: ClosedSpending) -> None:
    """Store the closed spending of ``domain`` in ``period`` (replacing what was there)."""
    comp = spent.composition
    db.execute(
        "INSERT INTO closed VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (domain, period) DO UPDATE SET epsilon = excluded.epsilon, "
        "delta = excluded.delta, rdp = excluded.rdp, "
        "has_rdp = excluded.has_rdp, pure_epsilon = excluded.pure_epsilon, "
        "pure_delta = excluded.pure_delta, jobs = excluded.jobs",
        (
            domain,
            period,
            spent.epsilon,
            spent.delta,
            comp.to_blob(),
            int(comp.has_rdp),
            comp.pure_epsilon,
            comp.pure_delta,
            spent.jobs,
        ),
    )


def charge_of(
    row: sqlite3.Row, job_id: str, domain: str, job_epsilon: float, duplicate: bool = False
) -> Charge:
    """Return a charge row (the columns of :data:`CHARGE_COLS`) as its record."""
    return Charge(
        job_id=job_id,
        round=row["round"],
        domain=domain,
        mechanism=json.loads(row["mechanism"]),
        reported_epsilon=row["reported_epsilon"],
        job_epsilon_spent=row["job_epsilon_spent"],
        job_epsilon=job_epsilon,
        charged_at=datetime.fromisoformat(row["charged_at"]),
        duplicate=duplicate,
    )
