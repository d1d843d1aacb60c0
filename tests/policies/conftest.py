"""Shared fixtures of the policies tests: budget rules, fake usage ledgers, a fixed clock."""

from datetime import UTC, datetime
from typing import Any

import pytest

from policies import BudgetLedger, BudgetRule

NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
DPSGD = {"type": "subsampled_gaussian", "noise_multiplier": 1.1, "sample_rate": 0.01, "steps": 100}


class RecordingLedger:
    """Stands in for consent.ledger.Ledger: records what is appended."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any], datetime | None]] = []

    def append(self, kind: str, payload: Any, at: datetime | None = None) -> int:
        self.entries.append((kind, dict(payload), at))
        return len(self.entries) - 1

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.entries]


class FailingLedger(RecordingLedger):
    """A usage ledger whose append fails (disk full, signing key gone, ...)."""

    def __init__(self, fail_on: set[str] | None = None) -> None:
        super().__init__()
        self.fail_on = fail_on

    def append(self, kind: str, payload: Any, at: datetime | None = None) -> int:
        if self.fail_on is None or kind in self.fail_on:
            raise OSError("usage ledger unavailable")
        return super().append(kind, payload, at)


BUDGETS = {
    "births": BudgetRule(epsilon=10.0, delta=1e-4, period="year"),
    "checkups": BudgetRule(epsilon=5.0, delta=1e-4, period="month"),
    "purchases": BudgetRule(epsilon=2.0, delta=1e-5, period="total"),
}


@pytest.fixture
def db(tmp_path):
    return tmp_path / "budget.sqlite"


@pytest.fixture
def usage():
    return RecordingLedger()


@pytest.fixture
def ledger(db, usage):
    with BudgetLedger(db, usage, budgets=BUDGETS) as led:
        yield led
