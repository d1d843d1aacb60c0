"""The privacy-budget ledger's read side: budget rows, what is left, reservations, charges.

:class:`~policies.budget_store.BudgetLedger` adds the writes (reserve, charge, release).
"""

from __future__ import annotations

from datetime import datetime

from consent.sqlite_store import SqliteStore
from policies.budget_math import period_key, require_aware
from policies.budget_records import BudgetStatus, Charge, Reservation
from policies.budget_tables import (
    CHARGE_COLS,
    RES_COLS,
    charge_of,
    read_rule,
    read_status,
    remaining_of,
    reservation_of,
)
from policies.decision import BudgetRemaining

__all__ = ["BudgetViews"]


class BudgetViews(SqliteStore):
    """Reads of a node's privacy-budget ledger; the writes are in ``BudgetLedger``."""

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
        return remaining_of(self.status(domain, at))

    def remaining_by_domain(self, at: datetime | None = None) -> dict[str, BudgetRemaining]:
        """Return the remaining budget of every configured domain (for a ``PolicyState``).

        Args:
            at: the time (tz-aware; default now, UTC).

        Returns:
            Domain to :class:`~policies.decision.BudgetRemaining`.

        Raises:
            BudgetError: ``at`` is invalid.

        """
        return {row.domain: remaining_of(row) for row in self.show(at)}

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
        at = require_aware(at)
        with self._snapshot() as db:
            rule = read_rule(db, domain)
            return read_status(db, domain, period_key(rule.period, at), rule)

    def show(self, at: datetime | None = None) -> list[BudgetStatus]:
        """Return one row per configured domain for the period containing ``at`` (for the CLI).

        Args:
            at: the time (tz-aware; default now, UTC).

        Returns:
            The rows, sorted by domain.

        Raises:
            BudgetError: ``at`` is invalid.

        """
        at = require_aware(at)
        with self._lock:
            domains = [
                r["domain"] for r in self._db.execute("SELECT domain FROM budgets ORDER BY domain")
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
            row = self._db.execute(
                f"SELECT {RES_COLS} FROM reservations WHERE job_id = ?", (job_id,)
            ).fetchone()
        return None if row is None else reservation_of(row)

    def reservations(self, limit: int = 50) -> list[Reservation]:
        """Return the latest reservations, newest first.

        Active ones, and released ones with when and why they were released (for a failed
        job: which rounds stay charged).

        Args:
            limit: how many at most.

        Returns:
            The :class:`Reservation` records (empty when none).
        """
        with self._lock:
            rows = self._db.execute(
                f"SELECT {RES_COLS} FROM reservations ORDER BY reserved_at DESC, job_id LIMIT ?",
                (max(int(limit), 0),),
            ).fetchall()
        return [reservation_of(r) for r in rows]

    def charges(self, job_id: str) -> list[Charge]:
        """Return a job's charges in round order.

        Args:
            job_id: the job.

        Returns:
            The recorded :class:`Charge` rows (empty when none).

        """
        with self._lock:
            res = self._db.execute(
                "SELECT domain, epsilon FROM reservations WHERE job_id = ?", (job_id,)
            ).fetchone()
            rows = self._db.execute(
                f"SELECT {CHARGE_COLS} FROM charges WHERE job_id = ? ORDER BY round", (job_id,)
            ).fetchall()
        if res is None:
            return []
        return [charge_of(r, job_id, res["domain"], res["epsilon"]) for r in rows]
