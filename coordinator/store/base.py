"""What every part of the coordinator's store shares: sessions, the clock, a job's state move.

Every method of the store runs in its own transaction and either commits all it changes
or nothing. State changes of a job are conditional updates (``... WHERE state IN (...)``),
so a cancel racing a start, or two workers racing one job, cannot both win; every change
appends a :class:`~coordinator.models.JobEvent` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from coordinator.auth import TokenHasher, TokenVerifier
from coordinator.db import make_sessionmaker
from coordinator.models import Job, JobEvent
from coordinator.schemas import PrincipalPublic
from federation.api_models import TERMINAL_STATES

__all__ = ["StoreBase", "utc_now"]


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class StoreBase:
    """The engine, sessions and clock the parts of :class:`~coordinator.store.Store` share.

    Args:
        engine: a migrated engine (see :func:`coordinator.db.migrate`).
        hasher: the keyed hasher of API tokens.
        verifier: checks and briefly caches verified tokens.
        clock: returns "now" (tests pass a fixed clock).
    """

    def __init__(
        self,
        engine: Engine,
        hasher: TokenHasher,
        verifier: TokenVerifier,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        # Status reads run each statement on its own (no BEGIN/ROLLBACK round trips on
        # PostgreSQL); under READ COMMITTED each statement saw its own snapshot anyway.
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        #: SQLite reads are local and never wait for a writer (WAL): a status read costs
        #: less than handing it to a thread, so the routes may run it on the event loop.
        #: PostgreSQL reads wait on the network and belong in the thread pool.
        self.reads_are_local = engine.dialect.name == "sqlite"
        self.hasher = hasher
        self.verifier = verifier
        self.clock = clock
        self._principals: dict[str, PrincipalPublic] = {}

    def _move(
        self,
        s: Session,
        job_id: str,
        to: str,
        reason: str,
        from_states: Iterable[str],
        round_no: int | None = None,
        **values: Any,
    ) -> bool:
        now = self.clock()
        values = {"state": to, "reason": reason, "updated_at": now, **values}
        if to in TERMINAL_STATES:
            values.setdefault("finished_at", now)
        res = s.execute(
            update(Job).where(Job.id == job_id, Job.state.in_(list(from_states))).values(**values)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return False
        s.add(JobEvent(job_id=job_id, at=now, state=to, reason=reason, round=round_no))
        return True

    def ping(self) -> None:
        """Run a trivial query (health check).

        Raises:
            sqlalchemy.exc.OperationalError: the database is unreachable.
        """
        with self.sessions() as s:
            s.execute(select(1))
