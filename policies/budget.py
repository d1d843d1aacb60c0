"""The per-node privacy-budget ledger: reservations, per-round charges, releases.

How a job uses the budget
-------------------------
1. At acceptance the node **reserves** the job's whole DP target (ε_j, δ_j) in the job's
   domain, in the budget period containing the reservation time (calendar year or month
   in the time zone of the ``at`` given, or ``total``). A reservation that does not fit is
   refused with :class:`~policies.errors.BudgetExceeded` and changes nothing.
2. Every round it **charges** the mechanism that actually ran (DP-SGD steps, a Gaussian or
   Laplace release, or a pure (ε, δ) pair). The job's own charges are composed with the
   RDP accountant (see :mod:`policies.accounting`) at δ_j; a charge that would take the
   job's composed ε above ε_j is refused. Charges are idempotent on (job_id, round).
3. When the job ends (finished, failed, cancelled, or gone after a restart) it is
   **released**: the reservation stops counting and the job's charged mechanisms join the
   period's *closed* spending.

How reservations and composition combine
----------------------------------------
For a domain and period with budget (E, D) let C be the released (closed) jobs that
charged anything and A the active reservations. The ledger keeps

* ``closed_delta`` = Σ_{k∈C} δ_k (δ is spent additively per job: basic composition);
* ``closed_epsilon``: a running upper bound on the privacy loss of all mechanisms of C at
  ``closed_delta``. When job j closes it becomes the minimum of two valid bounds:
  ``closed_epsilon + used_j`` (basic composition of the old bound with the job's own
  composed ε at δ_j), and the RDP composition of *every* mechanism of C ∪ {j} converted
  once at ``closed_delta + δ_j``. So the closed spending is never looser than adding jobs
  up, usually much tighter, and never grows by more than the job's own used ε.

An active job's mechanisms are covered by its reservation (its own composition never
exceeds ε_j, so post-processing bounds whatever it has done and will do by (ε_j, δ_j)).
Hence::

    committed_epsilon = closed_epsilon + Σ_{j∈A} ε_j
    committed_delta   = closed_delta   + Σ_{j∈A} δ_j
    remaining         = (E - committed_epsilon, D - committed_delta)

Combining the closed bound and the active reservations by basic composition is valid, and
a reservation is admitted only when ``fsum(closed_epsilon, ε_A..., ε_new) <= E`` and the
same for δ, so spent + reserved never exceeds the budget, and releasing a job never raises
``committed`` (its contribution drops from ε_j to at most used_j <= ε_j). :meth:`spent`
reports the privacy actually spent so far (closed and active charges, composed the same
way); it is informational, and ``remaining`` never depends on it.

Persistence and atomicity
-------------------------
SQLite in WAL mode with ``synchronous=FULL``; every operation is one ``BEGIN IMMEDIATE``
transaction, so reservations from threads and from separate processes (each with its
own :class:`BudgetLedger` on the same file) serialise and can never overspend. Each
reserve, charge and release is appended to the usage ledger (``budget.reserved``,
``budget.charged``, ``budget.released``) while the transaction is open. Every payload
carries ``job_id``, ``domain``, ``epsilon`` and ``delta``: for ``budget.reserved`` the
(ε, δ) reserved; for ``budget.charged`` the rise of the job's composed ε caused by the
round (δ 0; the mechanism, ``job_epsilon_spent`` and ``reported_epsilon`` come along);
for ``budget.released`` the (ε, δ) given back to the domain (δ is given back only when
the job charged nothing). If the append raises, the budget change is rolled back. (A
crash after the append but before the commit leaves a usage-ledger entry for a change that
did not happen; that errs on the side of over-reporting use, never under-reporting.)
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from policies.accounting import RDP_ORDERS, Composition, mechanism_json, parse_mechanism
from policies.decision import BudgetRemaining
from policies.errors import BudgetError, BudgetExceeded, ReservationNotFound, UsageLedgerError
from policies.model import BudgetPeriod, BudgetRule

__all__ = [
    "BudgetLedger",
    "BudgetStatus",
    "Charge",
    "Release",
    "Reservation",
    "UsageLedger",
    "period_key",
]

_SCHEMA_VERSION = "1"

_SCHEMA = """
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


class UsageLedger(Protocol):
    """What the budget ledger needs of the node's usage ledger (``consent.ledger.Ledger``)."""

    def append(self, kind: str, payload: Mapping[str, Any], at: datetime | None = None) -> int:
        """Append an entry; raise to veto the budget change."""
        ...


@dataclass(frozen=True)
class Reservation:
    """A job's reservation of its (ε, δ) target.

    Attributes:
        job_id: the job.
        domain: the domain whose budget is reserved.
        period: the budget period key (``2025``, ``2025-04``, ``total``).
        epsilon: ε reserved (the job's DP target).
        delta: δ reserved.
        reserved_at: when it was made.
        status: ``active`` or ``released``.
        used_epsilon: the job's own composed ε of its charges so far (at ``delta``).
        charges: number of rounds charged.
        remaining_epsilon: the domain's remaining ε right after the reservation.
        remaining_delta: the domain's remaining δ right after the reservation.

    """

    job_id: str
    domain: str
    period: str
    epsilon: float
    delta: float
    reserved_at: datetime
    status: str = "active"
    used_epsilon: float = 0.0
    charges: int = 0
    remaining_epsilon: float = math.nan
    remaining_delta: float = math.nan


@dataclass(frozen=True)
class Charge:
    """One round's charge.

    Attributes:
        job_id: the job.
        round: the round number.
        domain: the domain charged.
        mechanism: the mechanism, canonical mapping.
        reported_epsilon: the ε the caller's own accountant attributed to the round, if given.
        job_epsilon_spent: the job's composed ε after this charge (at its δ).
        job_epsilon: the job's reserved ε.
        charged_at: when the charge was recorded.
        duplicate: True when this (job_id, round) was already charged and nothing changed.

    """

    job_id: str
    round: int
    domain: str
    mechanism: dict[str, Any]
    reported_epsilon: float | None
    job_epsilon_spent: float
    job_epsilon: float
    charged_at: datetime
    duplicate: bool = False


@dataclass(frozen=True)
class Release:
    """The end of a reservation.

    Attributes:
        job_id: the job.
        domain: the domain.
        reason: why it was released (``finished``, ``failed``, ``cancelled``, ...).
        reserved_epsilon: ε that was reserved.
        used_epsilon: the job's own composed ε of its charges.
        freed_epsilon: how much the domain's committed ε went down.
        released_at: when.
        duplicate: True when the job had already been released (nothing changed).

    """

    job_id: str
    domain: str
    reason: str
    reserved_epsilon: float
    used_epsilon: float
    freed_epsilon: float
    released_at: datetime
    duplicate: bool = False


@dataclass(frozen=True)
class BudgetStatus:
    """One domain's budget in one period (a row of ``hamanasu node budget show``).

    Attributes:
        domain: the domain.
        period: the period key.
        budget_epsilon: E.
        budget_delta: D.
        closed_epsilon: composed ε of released jobs' charges.
        reserved_epsilon: ε of active reservations.
        spent_epsilon: composed ε of every charge so far (closed and active jobs).
        committed_epsilon: ``closed_epsilon + reserved_epsilon``.
        remaining_epsilon: ``budget_epsilon - committed_epsilon``.
        remaining_delta: ``budget_delta`` minus closed and reserved δ.
        active_jobs: number of active reservations.
        closed_jobs: number of released jobs that charged anything.

    """

    domain: str
    period: str
    budget_epsilon: float
    budget_delta: float
    closed_epsilon: float
    reserved_epsilon: float
    spent_epsilon: float
    committed_epsilon: float
    remaining_epsilon: float
    remaining_delta: float
    active_jobs: int
    closed_jobs: int

    def as_dict(self) -> dict[str, Any]:
        """Return the row as a JSON-friendly mapping.

        Returns:
            Field names to values.

        """
        return dict(self.__dict__)


def _require_aware(at: datetime | None, name: str = "at") -> datetime:
    if at is None:
        return datetime.now(UTC)
    if not isinstance(at, datetime):
        raise BudgetError(name, f"must be a datetime, not {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise BudgetError(name, "must be timezone-aware (the budget period depends on it)")
    return at


def period_key(period: BudgetPeriod | str, at: datetime) -> str:
    """Return the key of the budget period containing ``at``.

    Args:
        period: ``year`` (calendar year), ``month`` (calendar month) or ``total``.
        at: a tz-aware time; the calendar of its own time zone is used.

    Returns:
        ``"2025"``, ``"2025-04"`` or ``"total"``.

    Raises:
        BudgetError: ``period`` is unknown or ``at`` is naive.

    """
    at = _require_aware(at)
    if period == "year":
        return f"{at.year:04d}"
    if period == "month":
        return f"{at.year:04d}-{at.month:02d}"
    if period == "total":
        return "total"
    raise BudgetError("period", f"{period!r} is not one of 'year', 'month', 'total'")


def _finite(name: str, value: float, *, low: float, high: float, low_open: bool) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise BudgetError(name, f"must be a number, not {value!r}") from None
    if not math.isfinite(value):
        raise BudgetError(name, "must be a finite number")
    if value < low or (low_open and value == low) or value > high:
        bracket = "(" if low_open else "["
        raise BudgetError(name, f"must lie in {bracket}{low}, {high}], got {value}")
    return value


def _job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id or len(job_id) > 256:
        raise BudgetError("job_id", "must be a non-empty string of at most 256 characters")
    return job_id


class BudgetLedger:
    """The node's privacy-budget ledger, persisted in one SQLite file.

    One instance may be shared by threads; separate instances (also in other processes)
    on the same file are safe too. See the module docstring for the accounting.

    Args:
        path: the SQLite file (created if missing).
        usage_ledger: the node's usage ledger (``consent.ledger.Ledger`` or anything with
            ``append(kind, payload, at=...)``); ``None`` to skip the usage entries.
        budgets: the budget rule per domain (``NodePolicy.budget``); stored in the file so
            later instances (e.g. the CLI) may omit it. Rules given replace stored ones.
        busy_timeout: seconds to wait for another writer before giving up.

    Raises:
        BudgetError: an argument is invalid or the file is not a budget ledger.

    """

    def __init__(
        self,
        path: Path,
        usage_ledger: UsageLedger | None = None,
        *,
        budgets: Mapping[str, BudgetRule] | None = None,
        busy_timeout: float = 60.0,
    ) -> None:
        if usage_ledger is not None and not callable(getattr(usage_ledger, "append", None)):
            raise BudgetError("usage_ledger", "must have an append(kind, payload, at=...) method")
        if not busy_timeout > 0:
            raise BudgetError("busy_timeout", f"must be > 0 seconds, got {busy_timeout}")
        self.path = Path(path)
        self._usage = usage_ledger
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        with self._transaction() as cur:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
            cur.execute(
                "INSERT OR IGNORE INTO meta VALUES ('rdp_orders', ?)", (json.dumps(RDP_ORDERS),)
            )
            row = cur.execute("SELECT value FROM meta WHERE key = 'rdp_orders'").fetchone()
            if json.loads(row[0]) != list(RDP_ORDERS):
                raise BudgetError("path", f"{self.path} stores RDP curves at other orders")
            for domain, rule in (budgets or {}).items():
                rule = rule if isinstance(rule, BudgetRule) else BudgetRule.model_validate(rule)
                cur.execute(
                    "INSERT INTO budgets VALUES (?, ?, ?, ?) ON CONFLICT (domain) DO UPDATE SET "
                    "epsilon = excluded.epsilon, delta = excluded.delta, period = excluded.period",
                    (domain, rule.epsilon, rule.delta, rule.period),
                )

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _append(self, kind: str, payload: dict[str, Any], at: datetime) -> None:
        if self._usage is None:
            return
        try:
            self._usage.append(kind, payload, at=at)
        except Exception as exc:
            raise UsageLedgerError(
                "usage_ledger",
                f"appending {kind!r} failed ({type(exc).__name__}: {exc}); budget unchanged",
            ) from exc

    @property
    def usage_ledger(self) -> UsageLedger | None:
        """The usage ledger each reserve, charge and release is appended to (or ``None``)."""
        return self._usage

    @usage_ledger.setter
    def usage_ledger(self, ledger: UsageLedger | None) -> None:
        if ledger is not None and not callable(getattr(ledger, "append", None)):
            raise BudgetError("usage_ledger", "must have an append(kind, payload, at=...) method")
        with self._lock:
            self._usage = ledger

    def close(self) -> None:
        """Close the database connection (the object is unusable afterwards).

        Returns:
            None.

        """
        with self._lock:
            self._conn.close()

    def __enter__(self) -> BudgetLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _rule(cur: sqlite3.Cursor, domain: str) -> BudgetRule:
        row = cur.execute(
            "SELECT epsilon, delta, period FROM budgets WHERE domain = ?", (domain,)
        ).fetchone()
        if row is None:
            raise BudgetError("domain", f"no privacy budget is configured for domain {domain!r}")
        return BudgetRule(epsilon=row[0], delta=row[1], period=row[2])

    @staticmethod
    def _closed(
        cur: sqlite3.Cursor, domain: str, period: str
    ) -> tuple[float, float, Composition, int]:
        row = cur.execute(
            "SELECT epsilon, delta, rdp, has_rdp, pure_epsilon, pure_delta, jobs FROM closed "
            "WHERE domain = ? AND period = ?",
            (domain, period),
        ).fetchone()
        if row is None:
            return 0.0, 0.0, Composition(), 0
        comp = Composition(
            rdp=Composition.curve_from_blob(row[2]),
            has_rdp=bool(row[3]),
            pure_epsilon=row[4],
            pure_delta=row[5],
        )
        return row[0], row[1], comp, row[6]

    @staticmethod
    def _active(cur: sqlite3.Cursor, domain: str, period: str) -> list[tuple[Any, ...]]:
        return cur.execute(
            "SELECT job_id, epsilon, delta, rdp, has_rdp, pure_epsilon, pure_delta, "
            "used_epsilon, charges FROM reservations "
            "WHERE domain = ? AND period = ? AND status = 'active' ORDER BY rowid",
            (domain, period),
        ).fetchall()

    def _committed(
        self, cur: sqlite3.Cursor, domain: str, period: str
    ) -> tuple[list[float], list[float]]:
        closed_eps, closed_delta, _comp, _jobs = self._closed(cur, domain, period)
        active = self._active(cur, domain, period)
        return [closed_eps, *(r[1] for r in active)], [closed_delta, *(r[2] for r in active)]

    def _status(
        self, cur: sqlite3.Cursor, domain: str, period: str, rule: BudgetRule
    ) -> BudgetStatus:
        closed_eps, closed_delta, closed_comp, closed_jobs = self._closed(cur, domain, period)
        active = self._active(cur, domain, period)
        reserved_eps = math.fsum(r[1] for r in active)
        # Spent so far: closed jobs plus the charges of active jobs, composed both ways.
        charged = [r for r in active if r[8] > 0]
        basic = closed_eps + math.fsum(r[7] for r in charged)
        comp = closed_comp
        for r in charged:
            comp = comp + Composition(
                rdp=Composition.curve_from_blob(r[3]),
                has_rdp=bool(r[4]),
                pure_epsilon=r[5],
                pure_delta=r[6],
            )
        spent_delta = closed_delta + math.fsum(r[2] for r in charged)
        spent = min(basic, comp.epsilon(spent_delta)) if charged else closed_eps
        committed = math.fsum([closed_eps, *(r[1] for r in active)])
        return BudgetStatus(
            domain=domain,
            period=period,
            budget_epsilon=rule.epsilon,
            budget_delta=rule.delta,
            closed_epsilon=closed_eps,
            reserved_epsilon=reserved_eps,
            spent_epsilon=spent,
            committed_epsilon=committed,
            remaining_epsilon=rule.epsilon - committed,
            remaining_delta=rule.delta - math.fsum([closed_delta, *(r[2] for r in active)]),
            active_jobs=len(active),
            closed_jobs=closed_jobs,
        )

    @staticmethod
    def _reservation(
        row: tuple[Any, ...], remaining: tuple[float, float] | None = None
    ) -> Reservation:
        rem = remaining or (math.nan, math.nan)
        return Reservation(
            job_id=row[0],
            domain=row[1],
            period=row[2],
            epsilon=row[3],
            delta=row[4],
            reserved_at=datetime.fromisoformat(row[5]),
            status=row[6],
            used_epsilon=row[7],
            charges=row[8],
            remaining_epsilon=rem[0],
            remaining_delta=rem[1],
        )

    _RES_COLS = "job_id, domain, period, epsilon, delta, reserved_at, status, used_epsilon, charges"

    # -- public API -----------------------------------------------------------------------

    def reserve(
        self, job_id: str, domain: str, epsilon: float, delta: float, at: datetime | None = None
    ) -> Reservation:
        """Reserve a job's whole (ε, δ) target in its domain's current budget period.

        Reserving again for a job that already holds the same active reservation returns it
        unchanged (a retry after a lost reply).

        Args:
            job_id: the job.
            domain: the data domain the job reads.
            epsilon: the job's total ε target (> 0).
            delta: the job's total δ target (>= 0, < 1).
            at: the reservation time (tz-aware; default now, UTC). It picks the period.

        Returns:
            The :class:`Reservation`, with the domain's remaining (ε, δ) after it.

        Raises:
            BudgetExceeded: the budget cannot cover (ε, δ); names the domain, the amount
                requested and the amount remaining; nothing is reserved.
            BudgetError: an argument is invalid, no budget is configured for the domain, or
                the job id is already used by a different or released reservation.
            UsageLedgerError: the usage-ledger append failed; nothing is reserved.

        """
        job_id = _job_id(job_id)
        epsilon = _finite("epsilon", epsilon, low=0.0, high=1000.0, low_open=True)
        delta = _finite("delta", delta, low=0.0, high=1.0, low_open=False)
        if delta >= 1.0:
            raise BudgetError("delta", f"must be < 1, got {delta}")
        at = _require_aware(at)
        with self._transaction() as cur:
            rule = self._rule(cur, domain)
            period = period_key(rule.period, at)
            row = cur.execute(
                f"SELECT {self._RES_COLS} FROM reservations WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is not None:
                same = (
                    row[1] == domain
                    and row[3] == epsilon
                    and row[4] == delta
                    and row[6] == "active"
                )
                if not same:
                    raise BudgetError(
                        "job_id",
                        f"job {job_id!r} already holds a {row[6]} reservation "
                        f"(domain {row[1]!r}, epsilon {row[3]}, delta {row[4]})",
                    )
                status = self._status(cur, row[1], row[2], rule)
                return self._reservation(row, (status.remaining_epsilon, status.remaining_delta))
            eps_parts, delta_parts = self._committed(cur, domain, period)
            new_eps = math.fsum([*eps_parts, epsilon])
            new_delta = math.fsum([*delta_parts, delta])
            if new_eps > rule.epsilon or new_delta > rule.delta:
                left_eps = rule.epsilon - math.fsum(eps_parts)
                left_delta = rule.delta - math.fsum(delta_parts)
                field = "epsilon" if new_eps > rule.epsilon else "delta"
                raise BudgetExceeded(
                    field,
                    f"domain {domain!r} ({rule.period} {period}): requested epsilon {epsilon:.6g}, "
                    f"delta {delta:.3g}; remaining epsilon {max(left_eps, 0.0):.6g}, "
                    f"delta {max(left_delta, 0.0):.3g}",
                    domain=domain,
                    requested=epsilon,
                    remaining=max(left_eps, 0.0),
                    requested_delta=delta,
                    remaining_delta=max(left_delta, 0.0),
                )
            cur.execute(
                "INSERT INTO reservations "
                "(job_id, domain, period, epsilon, delta, status, reserved_at) "
                "VALUES (?, ?, ?, ?, ?, 'active', ?)",
                (job_id, domain, period, epsilon, delta, at.isoformat()),
            )
            remaining = (rule.epsilon - new_eps, rule.delta - new_delta)
            self._append(
                "budget.reserved",
                {
                    "job_id": job_id,
                    "domain": domain,
                    "period": period,
                    "epsilon": epsilon,
                    "delta": delta,
                    "remaining_epsilon": remaining[0],
                    "remaining_delta": remaining[1],
                },
                at,
            )
            return Reservation(
                job_id=job_id,
                domain=domain,
                period=period,
                epsilon=epsilon,
                delta=delta,
                reserved_at=at,
                remaining_epsilon=remaining[0],
                remaining_delta=remaining[1],
            )

    def charge(
        self,
        job_id: str,
        round: int,
        mechanism: Mapping[str, Any] | BaseModel,
        epsilon: float | None = None,
        at: datetime | None = None,
    ) -> Charge:
        """Charge one round's mechanism against the job's reservation.

        The job's charges are composed (RDP, see :mod:`policies.accounting`) at the job's
        δ; the charge is refused when that composed ε would exceed the reserved ε.
        Charging a (job_id, round) that is already charged with the same mechanism returns
        the recorded charge and changes nothing (never double-counted).

        Args:
            job_id: the job (must hold an active reservation).
            round: the round number (>= 0).
            mechanism: what ran, e.g. ``{"type": "subsampled_gaussian", "noise_multiplier":
                1.1, "sample_rate": 0.01, "steps": 50}`` (see :mod:`policies.accounting`).
            epsilon: the ε the caller's own accountant (e.g. Opacus) attributes to this
                round; recorded and reported, never used for the budget.
            at: the charge time (tz-aware; default now, UTC).

        Returns:
            The :class:`Charge`, with the job's composed ε after it.

        Raises:
            ReservationNotFound: the job holds no reservation.
            BudgetExceeded: the charge would take the job past its reserved ε; nothing is
                charged.
            BudgetError: the reservation was released, the round was charged with another
                mechanism, or an argument is invalid.
            MechanismError: the mechanism is malformed.
            UsageLedgerError: the usage-ledger append failed; nothing is charged.

        """
        job_id = _job_id(job_id)
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise BudgetError("round", f"must be an integer >= 0, got {round!r}")
        if epsilon is not None:
            epsilon = _finite("epsilon", epsilon, low=0.0, high=1e6, low_open=False)
        mech = parse_mechanism(mechanism)
        mech_text = mechanism_json(mech)
        step = Composition.of(mech)  # the RDP curve, computed outside the write lock
        at = _require_aware(at)
        with self._transaction() as cur:
            res = cur.execute(
                "SELECT domain, epsilon, delta, status, rdp, has_rdp, pure_epsilon, pure_delta, "
                "used_epsilon FROM reservations WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            if res is None:
                raise ReservationNotFound("job_id", f"job {job_id!r} holds no budget reservation")
            domain, job_eps, job_delta, status = res[0], res[1], res[2], res[3]
            done = cur.execute(
                "SELECT mechanism, reported_epsilon, job_epsilon_spent, charged_at FROM charges "
                "WHERE job_id = ? AND round = ?",
                (job_id, round),
            ).fetchone()
            if done is not None:
                if done[0] != mech_text:
                    raise BudgetError(
                        "round",
                        f"round {round} of job {job_id!r} was already charged with {done[0]}",
                    )
                return Charge(
                    job_id=job_id,
                    round=round,
                    domain=domain,
                    mechanism=json.loads(done[0]),
                    reported_epsilon=done[1],
                    job_epsilon_spent=done[2],
                    job_epsilon=job_eps,
                    charged_at=datetime.fromisoformat(done[3]),
                    duplicate=True,
                )
            if status != "active":
                raise BudgetError(
                    "job_id", f"job {job_id!r} was released; it can no longer be charged"
                )
            before = Composition(
                rdp=Composition.curve_from_blob(res[4]),
                has_rdp=bool(res[5]),
                pure_epsilon=res[6],
                pure_delta=res[7],
            )
            after = before + step
            used = after.epsilon(job_delta)
            if not used <= job_eps:
                raise BudgetExceeded(
                    "mechanism",
                    f"job {job_id!r} round {round}: the composed epsilon would reach {used:.6g} "
                    f"at delta {job_delta:.3g}, above the {job_eps:.6g} reserved "
                    f"({job_eps - res[8]:.6g} left before this round)",
                    domain=domain,
                    requested=used - res[8] if math.isfinite(used) else math.inf,
                    remaining=job_eps - res[8],
                    requested_delta=job_delta,
                    remaining_delta=job_delta,
                )
            cur.execute(
                "INSERT INTO charges VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, round, mech_text, epsilon, used, at.isoformat()),
            )
            cur.execute(
                "UPDATE reservations SET rdp = ?, has_rdp = ?, pure_epsilon = ?, pure_delta = ?, "
                "used_epsilon = ?, charges = charges + 1 WHERE job_id = ?",
                (
                    after.to_blob(),
                    int(after.has_rdp),
                    after.pure_epsilon,
                    after.pure_delta,
                    used,
                    job_id,
                ),
            )
            mech_dict = json.loads(mech_text)
            self._append(
                "budget.charged",
                {
                    "job_id": job_id,
                    "domain": domain,
                    "epsilon": max(used - res[8], 0.0),
                    "delta": 0.0,
                    "round": round,
                    "mechanism": mech_dict,
                    "reported_epsilon": epsilon,
                    "job_epsilon_spent": used,
                    "job_epsilon": job_eps,
                    "job_delta": job_delta,
                },
                at,
            )
            return Charge(
                job_id=job_id,
                round=round,
                domain=domain,
                mechanism=mech_dict,
                reported_epsilon=epsilon,
                job_epsilon_spent=used,
                job_epsilon=job_eps,
                charged_at=at,
            )

    def release(self, job_id: str, reason: str, at: datetime | None = None) -> Release:
        """End a job's reservation: what it did not use goes back to the budget.

        Releasing an already released job returns the recorded release and changes nothing.

        Args:
            job_id: the job.
            reason: why (``finished``, ``failed``, ``cancelled``, ``recovered``, ...).
            at: the release time (tz-aware; default now, UTC).

        Returns:
            The :class:`Release`, with the ε reserved, used and freed.

        Raises:
            ReservationNotFound: the job holds no reservation.
            BudgetError: an argument is invalid.
            UsageLedgerError: the usage-ledger append failed; the reservation stays active.

        """
        job_id = _job_id(job_id)
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            raise BudgetError("reason", "must be a non-empty string of at most 500 characters")
        at = _require_aware(at)
        with self._transaction() as cur:
            res = cur.execute(
                "SELECT domain, period, epsilon, delta, status, rdp, has_rdp, pure_epsilon, "
                "pure_delta, used_epsilon, charges, released_at, release_reason, freed_epsilon "
                "FROM reservations WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            if res is None:
                raise ReservationNotFound("job_id", f"job {job_id!r} holds no budget reservation")
            domain, period, job_eps, job_delta, status = res[0], res[1], res[2], res[3], res[4]
            used, n_charges = res[9], res[10]
            if status == "released":
                return Release(
                    job_id=job_id,
                    domain=domain,
                    reason=res[12],
                    reserved_epsilon=job_eps,
                    used_epsilon=used,
                    freed_epsilon=res[13],
                    released_at=datetime.fromisoformat(res[11]),
                    duplicate=True,
                )
            closed_eps, closed_delta, closed_comp, closed_jobs = self._closed(cur, domain, period)
            new_closed_eps = closed_eps
            if n_charges > 0:
                job_comp = Composition(
                    rdp=Composition.curve_from_blob(res[5]),
                    has_rdp=bool(res[6]),
                    pure_epsilon=res[7],
                    pure_delta=res[8],
                )
                comp = closed_comp + job_comp
                new_delta = closed_delta + job_delta
                # Two valid bounds on all closed mechanisms at new_delta; keep the tighter.
                new_closed_eps = min(closed_eps + used, comp.epsilon(new_delta))
                cur.execute(
                    "INSERT INTO closed VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (domain, period) DO UPDATE SET epsilon = excluded.epsilon, "
                    "delta = excluded.delta, rdp = excluded.rdp, "
                    "has_rdp = excluded.has_rdp, pure_epsilon = excluded.pure_epsilon, "
                    "pure_delta = excluded.pure_delta, jobs = excluded.jobs",
                    (
                        domain,
                        period,
                        new_closed_eps,
                        new_delta,
                        comp.to_blob(),
                        int(comp.has_rdp),
                        comp.pure_epsilon,
                        comp.pure_delta,
                        closed_jobs + 1,
                    ),
                )
            freed = job_eps - (new_closed_eps - closed_eps)
            cur.execute(
                "UPDATE reservations SET status = 'released', released_at = ?, release_reason = ?, "
                "freed_epsilon = ? WHERE job_id = ?",
                (at.isoformat(), reason, freed, job_id),
            )
            self._append(
                "budget.released",
                {
                    "job_id": job_id,
                    "domain": domain,
                    "period": period,
                    "epsilon": freed,
                    "delta": 0.0 if n_charges > 0 else job_delta,
                    "reason": reason,
                    "reserved_epsilon": job_eps,
                    "reserved_delta": job_delta,
                    "used_epsilon": used,
                    "charges": n_charges,
                    "freed_epsilon": freed,
                },
                at,
            )
            return Release(
                job_id=job_id,
                domain=domain,
                reason=reason,
                reserved_epsilon=job_eps,
                used_epsilon=used,
                freed_epsilon=freed,
                released_at=at,
            )

    def recover(
        self, active_job_ids: set[str] | None = None, at: datetime | None = None
    ) -> list[Release]:
        """Release the reservations of jobs that are gone, after a restart.

        Charges already committed stay exactly as recorded (a re-sent charge for the same
        round is a no-op), so nothing is double-counted and no reservation leaks.

        Args:
            active_job_ids: jobs still running (their reservations are kept); ``None``
                means no job survived the restart.
            at: the recovery time (tz-aware; default now, UTC).

        Returns:
            The releases made, one per reservation released.

        Raises:
            BudgetError: ``at`` is invalid.
            UsageLedgerError: a usage-ledger append failed (releases before it stand).

        """
        at = _require_aware(at)
        keep = set(active_job_ids or ())
        with self._lock:
            rows = self._conn.execute(
                "SELECT job_id FROM reservations WHERE status = 'active' ORDER BY rowid"
            ).fetchall()
            return [
                self.release(job_id, "recovered: job not active after restart", at)
                for (job_id,) in rows
                if job_id not in keep
            ]

    def remaining(self, domain: str, at: datetime | None = None) -> BudgetRemaining:
        """Return what the domain has left in the period containing ``at``.

        Args:
            domain: the domain.
            at: the time (tz-aware; default now, UTC).

        Returns:
            ``(budget ε - closed ε - active reserved ε, budget δ - closed δ - reserved δ)``
            and the period key.

        Raises:
            BudgetError: no budget is configured for the domain, or ``at`` is invalid.

        """
        return self._remaining(self.status(domain, at))

    @staticmethod
    def _remaining(status: BudgetStatus) -> BudgetRemaining:
        return BudgetRemaining(
            epsilon=max(status.remaining_epsilon, 0.0),
            delta=max(status.remaining_delta, 0.0),
            period=status.period,
        )

    def remaining_by_domain(self, at: datetime | None = None) -> dict[str, BudgetRemaining]:
        """Return the remaining budget of every configured domain (for a ``PolicyState``).

        Args:
            at: the time (tz-aware; default now, UTC).

        Returns:
            Domain to :class:`~policies.decision.BudgetRemaining`.

        Raises:
            BudgetError: ``at`` is invalid.

        """
        return {row.domain: self._remaining(row) for row in self.show(at)}

    def spent(self, domain: str, at: datetime | None = None) -> float:
        """Return the ε actually spent in the domain's current period (all charges composed).

        Args:
            domain: the domain.
            at: the time (tz-aware; default now, UTC).

        Returns:
            The composed ε of every charge so far, closed and active jobs.

        Raises:
            BudgetError: no budget is configured for the domain, or ``at`` is invalid.

        """
        return self.status(domain, at).spent_epsilon

    def status(self, domain: str, at: datetime | None = None) -> BudgetStatus:
        """Return the full budget row of one domain in the period containing ``at``.

        Args:
            domain: the domain.
            at: the time (tz-aware; default now, UTC).

        Returns:
            The :class:`BudgetStatus`.

        Raises:
            BudgetError: no budget is configured for the domain, or ``at`` is invalid.

        """
        at = _require_aware(at)
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN")  # one consistent snapshot (WAL readers never block writers)
            try:
                rule = self._rule(cur, domain)
                return self._status(cur, domain, period_key(rule.period, at), rule)
            finally:
                cur.execute("COMMIT")

    def show(self, at: datetime | None = None) -> list[BudgetStatus]:
        """Return one row per configured domain for the period containing ``at`` (for the CLI).

        Args:
            at: the time (tz-aware; default now, UTC).

        Returns:
            The rows, sorted by domain.

        Raises:
            BudgetError: ``at`` is invalid.

        """
        at = _require_aware(at)
        with self._lock:
            domains = [
                r[0] for r in self._conn.execute("SELECT domain FROM budgets ORDER BY domain")
            ]
        return [self.status(domain, at) for domain in domains]

    def reservation(self, job_id: str) -> Reservation | None:
        """Return a job's reservation (active or released), if any.

        Args:
            job_id: the job.

        Returns:
            The :class:`Reservation`, or ``None``.

        """
        with self._lock:
            row = self._conn.execute(
                f"SELECT {self._RES_COLS} FROM reservations WHERE job_id = ?", (job_id,)
            ).fetchone()
        return None if row is None else self._reservation(row)

    def charges(self, job_id: str) -> list[Charge]:
        """Return a job's charges in round order.

        Args:
            job_id: the job.

        Returns:
            The recorded :class:`Charge` rows (empty when none).

        """
        with self._lock:
            res = self._conn.execute(
                "SELECT domain, epsilon FROM reservations WHERE job_id = ?", (job_id,)
            ).fetchone()
            rows = self._conn.execute(
                "SELECT round, mechanism, reported_epsilon, job_epsilon_spent, charged_at "
                "FROM charges WHERE job_id = ? ORDER BY round",
                (job_id,),
            ).fetchall()
        if res is None:
            return []
        return [
            Charge(
                job_id=job_id,
                round=r[0],
                domain=res[0],
                mechanism=json.loads(r[1]),
                reported_epsilon=r[2],
                job_epsilon_spent=r[3],
                job_epsilon=res[1],
                charged_at=datetime.fromisoformat(r[4]),
            )
            for r in rows
        ]
