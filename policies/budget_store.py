"""The per-node privacy-budget ledger, persisted in SQLite: reservations, charges, releases.

The arithmetic (admission, per-job composition, closing a job) and why it is sound are in
:mod:`policies.budget_math`; this module reads and writes the records.

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
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from policies.accounting import RDP_ORDERS, Composition, mechanism_json, parse_mechanism
from policies.budget_math import admit, charge_job, close_job, period_key, require_aware
from policies.budget_records import (
    Charge,
    Release,
    Reservation,
    UsageLedger,
    checked_amount,
    checked_job_id,
)
from policies.budget_tables import (
    CHARGE_COLS,
    JOB_COLS,
    RES_COLS,
    SCHEMA,
    SCHEMA_VERSION,
    active_job,
    charge_of,
    read_active,
    read_closed,
    read_rule,
    read_status,
    reservation_of,
    write_closed,
)
from policies.budget_views import BudgetViews
from policies.errors import BudgetError, ReservationNotFound, UsageLedgerError
from policies.model import BudgetRule

__all__ = ["BudgetLedger"]


class BudgetLedger(BudgetViews):
    """The node's privacy-budget ledger, persisted in one SQLite file.

    One instance may be shared by threads; separate instances (also in other processes)
    on the same file are safe too. See :mod:`policies.budget_math` for the accounting.

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
        super().__init__(path, busy_timeout=busy_timeout, foreign_keys=True, named_rows=True)
        self._usage = usage_ledger
        with self._transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('rdp_orders', ?)", (json.dumps(RDP_ORDERS),)
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'rdp_orders'").fetchone()
            if json.loads(row["value"]) != list(RDP_ORDERS):
                raise BudgetError("path", f"{self.path} stores RDP curves at other orders")
            for domain, rule in (budgets or {}).items():
                rule = rule if isinstance(rule, BudgetRule) else BudgetRule.model_validate(rule)
                db.execute(
                    "INSERT INTO budgets VALUES (?, ?, ?, ?) ON CONFLICT (domain) DO UPDATE SET "
                    "epsilon = excluded.epsilon, delta = excluded.delta, period = excluded.period",
                    (domain, rule.epsilon, rule.delta, rule.period),
                )

    def _append(self, kind: str, payload: dict[str, Any], at: datetime) -> None:
        """Append ``payload`` to the usage ledger (if any).

        Raises:
            UsageLedgerError: the append failed (the caller's transaction rolls back).
        """
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
        job_id = checked_job_id(job_id)
        epsilon = checked_amount("epsilon", epsilon, low=0.0, high=1000.0, low_open=True)
        delta = checked_amount("delta", delta, low=0.0, high=1.0, low_open=False)
        if delta >= 1.0:
            raise BudgetError("delta", f"must be < 1, got {delta}")
        at = require_aware(at)
        with self._transaction() as db:
            rule = read_rule(db, domain)
            period = period_key(rule.period, at)
            row = db.execute(
                f"SELECT {RES_COLS} FROM reservations WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is not None:
                same = (
                    row["domain"] == domain
                    and row["epsilon"] == epsilon
                    and row["delta"] == delta
                    and row["status"] == "active"
                )
                if not same:
                    raise BudgetError(
                        "job_id",
                        f"job {job_id!r} already holds a {row['status']} reservation "
                        f"(domain {row['domain']!r}, epsilon {row['epsilon']}, "
                        f"delta {row['delta']})",
                    )
                status = read_status(db, row["domain"], row["period"], rule)
                return reservation_of(row, (status.remaining_epsilon, status.remaining_delta))
            remaining = admit(
                domain,
                period,
                rule,
                read_closed(db, domain, period),
                read_active(db, domain, period),
                epsilon,
                delta,
            )
            db.execute(
                "INSERT INTO reservations "
                "(job_id, domain, period, epsilon, delta, status, reserved_at) "
                "VALUES (?, ?, ?, ?, ?, 'active', ?)",
                (job_id, domain, period, epsilon, delta, at.isoformat()),
            )
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

        The job's charges are composed (PLD, :func:`policies.accounting.compose_epsilon`) at
        the job's δ; the charge is refused when that composed ε would exceed the reserved ε.
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
        job_id = checked_job_id(job_id)
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise BudgetError("round", f"must be an integer >= 0, got {round!r}")
        if epsilon is not None:
            epsilon = checked_amount("epsilon", epsilon, low=0.0, high=1e6, low_open=False)
        mech = parse_mechanism(mechanism)
        mech_text = mechanism_json(mech)
        step = Composition.of(mech)  # the RDP curve, computed outside the write lock
        at = require_aware(at)
        with self._transaction() as db:
            res = db.execute(
                f"SELECT {JOB_COLS}, domain, status FROM reservations WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            if res is None:
                raise ReservationNotFound("job_id", f"job {job_id!r} holds no budget reservation")
            domain = res["domain"]
            done = db.execute(
                f"SELECT {CHARGE_COLS} FROM charges WHERE job_id = ? AND round = ?",
                (job_id, round),
            ).fetchone()
            if done is not None:
                if done["mechanism"] != mech_text:
                    raise BudgetError(
                        "round",
                        f"round {round} of job {job_id!r} was already charged with "
                        f"{done['mechanism']}",
                    )
                return charge_of(done, job_id, domain, res["epsilon"], duplicate=True)
            if res["status"] != "active":
                raise BudgetError(
                    "job_id", f"job {job_id!r} was released; it can no longer be charged"
                )
            before = active_job(res)
            ran = db.execute(
                "SELECT mechanism FROM charges WHERE job_id = ? ORDER BY round", (job_id,)
            ).fetchall()
            ran_mechs = [*(json.loads(r["mechanism"]) for r in ran), json.loads(mech_text)]
            after = charge_job(before, step, ran_mechs, domain, round)
            used = after.used_epsilon
            db.execute(
                "INSERT INTO charges VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, round, mech_text, epsilon, used, at.isoformat()),
            )
            comp = after.composition
            db.execute(
                "UPDATE reservations SET rdp = ?, has_rdp = ?, pure_epsilon = ?, pure_delta = ?, "
                "used_epsilon = ?, charges = charges + 1 WHERE job_id = ?",
                (
                    comp.to_blob(),
                    int(comp.has_rdp),
                    comp.pure_epsilon,
                    comp.pure_delta,
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
                    "epsilon": max(used - before.used_epsilon, 0.0),
                    "delta": 0.0,
                    "round": round,
                    "mechanism": mech_dict,
                    "reported_epsilon": epsilon,
                    "job_epsilon_spent": used,
                    "job_epsilon": before.epsilon,
                    "job_delta": before.delta,
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
                job_epsilon=before.epsilon,
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
        job_id = checked_job_id(job_id)
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            raise BudgetError("reason", "must be a non-empty string of at most 500 characters")
        at = require_aware(at)
        with self._transaction() as db:
            res = db.execute(
                f"SELECT {JOB_COLS}, domain, period, status, released_at, release_reason, "
                "freed_epsilon FROM reservations WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            if res is None:
                raise ReservationNotFound("job_id", f"job {job_id!r} holds no budget reservation")
            job = active_job(res)
            domain, period = res["domain"], res["period"]
            if res["status"] == "released":
                return Release(
                    job_id=job_id,
                    domain=domain,
                    reason=res["release_reason"],
                    reserved_epsilon=job.epsilon,
                    used_epsilon=job.used_epsilon,
                    freed_epsilon=res["freed_epsilon"],
                    released_at=datetime.fromisoformat(res["released_at"]),
                    duplicate=True,
                )
            closed = read_closed(db, domain, period)
            new_closed_eps = closed.epsilon
            if job.charges > 0:
                new = close_job(closed, job)
                new_closed_eps = new.epsilon
                write_closed(db, domain, period, new)
            freed = job.epsilon - (new_closed_eps - closed.epsilon)
            db.execute(
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
                    "delta": 0.0 if job.charges > 0 else job.delta,
                    "reason": reason,
                    "reserved_epsilon": job.epsilon,
                    "reserved_delta": job.delta,
                    "used_epsilon": job.used_epsilon,
                    "charges": job.charges,
                    "freed_epsilon": freed,
                },
                at,
            )
            return Release(
                job_id=job_id,
                domain=domain,
                reason=reason,
                reserved_epsilon=job.epsilon,
                used_epsilon=job.used_epsilon,
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
        at = require_aware(at)
        keep = set(active_job_ids or ())
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id FROM reservations WHERE status = 'active' ORDER BY rowid"
            ).fetchall()
            return [
                self.release(row["job_id"], "recovered: job not active after restart", at)
                for row in rows
                if row["job_id"] not in keep
            ]
