"""The budget ledger: reserve, charge, release, periods, usage-ledger atomicity, crash recovery."""

import math
import multiprocessing as mp
import os
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import (
    BudgetError,
    BudgetExceeded,
    BudgetLedger,
    BudgetRule,
    ReservationNotFound,
    UsageLedgerError,
    compose_epsilon,
)

from .conftest import BUDGETS, DPSGD, NOW, FailingLedger, RecordingLedger

GAUSS = {"type": "gaussian", "sigma": 6.0, "sensitivity": 1.0}


def test_reserve_charge_release(ledger, usage):
    res = ledger.reserve("j1", "births", 3.0, 1e-5, NOW)
    assert (res.period, res.remaining_epsilon) == ("2025", 7.0)
    assert res.remaining_delta == pytest.approx(9e-5)
    c0 = ledger.charge("j1", 0, DPSGD, 0.9, NOW)
    c1 = ledger.charge("j1", 1, DPSGD, 0.1, NOW)
    assert c1.job_epsilon_spent == pytest.approx(compose_epsilon([DPSGD, DPSGD], 1e-5))
    assert c0.job_epsilon_spent < c1.job_epsilon_spent < 3.0
    # While the job runs, its whole reservation counts.
    assert ledger.remaining("births", NOW).epsilon == pytest.approx(7.0)
    assert ledger.spent("births", NOW) == pytest.approx(c1.job_epsilon_spent)
    rel = ledger.release("j1", "finished", NOW)
    assert rel.used_epsilon == pytest.approx(c1.job_epsilon_spent)
    assert rel.freed_epsilon == pytest.approx(3.0 - c1.job_epsilon_spent)
    assert ledger.remaining("births", NOW).epsilon == pytest.approx(10.0 - c1.job_epsilon_spent)
    assert usage.kinds() == [
        "budget.reserved",
        "budget.charged",
        "budget.charged",
        "budget.released",
    ]
    assert all(at == NOW for _, _, at in usage.entries)
    assert usage.entries[1][1]["mechanism"]["noise_multiplier"] == 1.1
    assert usage.entries[1][1]["reported_epsilon"] == 0.9


def test_budget_exhausted_is_refused_and_charges_nothing(ledger, usage):
    ledger.reserve("a", "births", 3.0, 1e-5, NOW)
    ledger.reserve("b", "births", 3.0, 1e-5, NOW)
    before = ledger.status("births", NOW)
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("c", "births", 4.5, 1e-5, NOW)
    err = info.value
    assert (err.domain, err.requested, err.remaining) == ("births", 4.5, pytest.approx(4.0))
    assert "births" in str(err) and "4.5" in str(err) and "remaining epsilon 4" in str(err)
    assert ledger.status("births", NOW) == before
    assert ledger.reservation("c") is None
    assert usage.kinds() == ["budget.reserved", "budget.reserved"]
    ledger.reserve("c", "births", 4.0, 1e-5, NOW)  # exactly what is left fits
    with pytest.raises(BudgetExceeded):
        ledger.reserve("d", "births", 1e-9, 0.0, NOW)


def test_delta_budget_is_enforced(ledger):
    with pytest.raises(BudgetExceeded) as info:
        ledger.reserve("a", "purchases", 0.5, 2e-5, NOW)
    assert info.value.field == "delta"


def test_charge_past_the_reservation_is_refused(ledger, usage):
    ledger.reserve("j", "births", 1.0, 1e-5, NOW)
    rounds = 0
    with pytest.raises(BudgetExceeded) as info:
        for rounds in range(100):
            ledger.charge("j", rounds, DPSGD, None, NOW)
    assert info.value.domain == "births"
    charged = ledger.charges("j")
    assert len(charged) == rounds  # the refused round left nothing
    assert charged[-1].job_epsilon_spent <= 1.0
    assert ledger.reservation("j").used_epsilon == charged[-1].job_epsilon_spent
    assert usage.kinds().count("budget.charged") == rounds


def test_charge_is_idempotent_per_round(ledger, usage):
    ledger.reserve("j", "births", 3.0, 1e-5, NOW)
    first = ledger.charge("j", 0, DPSGD, None, NOW)
    again = ledger.charge("j", 0, dict(DPSGD), None, NOW + timedelta(hours=1))
    assert again.duplicate and not first.duplicate
    assert again.job_epsilon_spent == first.job_epsilon_spent
    assert ledger.reservation("j").charges == 1
    assert usage.kinds().count("budget.charged") == 1
    with pytest.raises(BudgetError, match="already charged"):
        ledger.charge("j", 0, GAUSS, None, NOW)


def test_unknown_and_released_jobs(ledger):
    with pytest.raises(ReservationNotFound):
        ledger.charge("ghost", 0, DPSGD, None, NOW)
    with pytest.raises(ReservationNotFound):
        ledger.release("ghost", "cancelled", NOW)
    ledger.reserve("j", "births", 1.0, 1e-5, NOW)
    ledger.release("j", "cancelled", NOW)
    with pytest.raises(BudgetError, match="released"):
        ledger.charge("j", 0, DPSGD, None, NOW)
    again = ledger.release("j", "cancelled twice", NOW)
    assert again.duplicate and again.reason == "cancelled"
    with pytest.raises(BudgetError, match="already holds"):
        ledger.reserve("j", "births", 1.0, 1e-5, NOW)


def test_reserve_retry_returns_the_same_reservation(ledger, usage):
    a = ledger.reserve("j", "births", 2.0, 1e-5, NOW)
    b = ledger.reserve("j", "births", 2.0, 1e-5, NOW)
    assert (a.job_id, a.epsilon, a.period) == (b.job_id, b.epsilon, b.period)
    assert usage.kinds() == ["budget.reserved"]
    assert ledger.remaining("births", NOW).epsilon == pytest.approx(8.0)
    with pytest.raises(BudgetError, match="already holds"):
        ledger.reserve("j", "births", 2.5, 1e-5, NOW)


def test_a_cancelled_job_gives_everything_back(ledger):
    ledger.reserve("j", "births", 3.0, 1e-5, NOW)
    rel = ledger.release("j", "cancelled", NOW)
    assert rel.freed_epsilon == 3.0
    assert ledger.remaining("births", NOW).epsilon == 10.0
    assert ledger.remaining("births", NOW).delta == 1e-4


def test_periods_renew(ledger):
    ledger.reserve("y", "births", 10.0, 1e-5, NOW)
    ledger.reserve("m", "checkups", 5.0, 1e-5, NOW)
    ledger.reserve("t", "purchases", 2.0, 1e-5, NOW)
    next_month = NOW + timedelta(days=31)
    next_year = datetime(2026, 1, 1, tzinfo=UTC)
    assert ledger.remaining("births", next_month).epsilon == 0.0
    assert ledger.remaining("births", next_year).epsilon == 10.0
    assert ledger.remaining("checkups", next_month).epsilon == 5.0
    assert ledger.remaining("checkups", next_month).period == "2025-07"
    assert ledger.remaining("purchases", next_year).epsilon == 0.0
    ledger.reserve("y2", "births", 1.0, 1e-5, next_year)


def test_period_follows_the_time_zone_given(ledger):
    jst = timezone(timedelta(hours=9))
    new_year_jst = datetime(2026, 1, 1, 0, 30, tzinfo=jst)  # still 2025 in UTC
    res = ledger.reserve("j", "births", 1.0, 1e-5, new_year_jst)
    assert res.period == "2026"


def test_bad_arguments_are_refused(ledger):
    with pytest.raises(BudgetError, match="timezone-aware"):
        ledger.reserve("j", "births", 1.0, 1e-5, datetime(2025, 1, 1))
    with pytest.raises(BudgetError) as info:
        ledger.reserve("j", "births", float("nan"), 1e-5, NOW)
    assert info.value.field == "epsilon"
    with pytest.raises(BudgetError) as info:
        ledger.reserve("j", "births", 0.0, 1e-5, NOW)
    assert info.value.field == "epsilon"
    with pytest.raises(BudgetError) as info:
        ledger.reserve("j", "births", 1.0, 1.0, NOW)
    assert info.value.field == "delta"
    with pytest.raises(BudgetError) as info:
        ledger.reserve("j", "dairy", 1.0, 1e-5, NOW)
    assert info.value.field == "domain"
    with pytest.raises(BudgetError) as info:
        ledger.reserve("", "births", 1.0, 1e-5, NOW)
    assert info.value.field == "job_id"
    ledger.reserve("j", "births", 1.0, 1e-5, NOW)
    with pytest.raises(BudgetError) as info:
        ledger.charge("j", -1, DPSGD, None, NOW)
    assert info.value.field == "round"
    with pytest.raises(BudgetError) as info:
        ledger.charge("j", 0, {"type": "gaussian"}, None, NOW)
    assert info.value.field == "mechanism.sigma"
    with pytest.raises(BudgetError):
        BudgetLedger(ledger.path, usage_ledger=object())


@pytest.mark.parametrize("failing", ["budget.reserved", "budget.charged", "budget.released"])
def test_usage_ledger_failure_rolls_back(db, failing):
    usage = FailingLedger(fail_on={failing})
    led = BudgetLedger(db, usage, budgets=BUDGETS)
    if failing == "budget.reserved":
        with pytest.raises(UsageLedgerError):
            led.reserve("j", "births", 3.0, 1e-5, NOW)
        assert led.reservation("j") is None
        assert led.remaining("births", NOW).epsilon == 10.0
        return
    led.reserve("j", "births", 3.0, 1e-5, NOW)
    if failing == "budget.charged":
        with pytest.raises(UsageLedgerError):
            led.charge("j", 0, DPSGD, None, NOW)
        assert led.charges("j") == []
        assert led.reservation("j").used_epsilon == 0.0
        return
    led.charge("j", 0, DPSGD, None, NOW)
    before = led.status("births", NOW)
    with pytest.raises(UsageLedgerError):
        led.release("j", "finished", NOW)
    assert led.reservation("j").status == "active"
    assert led.status("births", NOW) == before
    usage.fail_on = set()
    led.release("j", "finished", NOW)
    assert led.reservation("j").status == "released"


def test_budgets_are_stored_for_later_instances(db):
    BudgetLedger(db, budgets=BUDGETS).close()
    with BudgetLedger(db) as cli_view:
        rows = cli_view.show(NOW)
    assert [r.domain for r in rows] == ["births", "checkups", "purchases"]
    assert rows[0].remaining_epsilon == 10.0
    assert set(rows[0].as_dict()) >= {"domain", "period", "remaining_epsilon", "spent_epsilon"}
    with BudgetLedger(db, budgets={"births": BudgetRule(epsilon=4.0)}) as changed:
        assert changed.remaining("births", NOW).epsilon == 4.0
        assert set(changed.remaining_by_domain(NOW)) == {"births", "checkups", "purchases"}


def _crash_after_charges(path: str) -> None:
    led = BudgetLedger(path, budgets=BUDGETS)
    led.reserve("crashy", "births", 3.0, 1e-5, NOW)
    led.charge("crashy", 0, DPSGD, None, NOW)
    led.charge("crashy", 1, DPSGD, None, NOW)
    os._exit(1)  # the node dies: no release, no close


def test_crash_between_reserve_and_release_is_recovered(db):
    BudgetLedger(db, budgets=BUDGETS).close()
    proc = mp.get_context("fork").Process(target=_crash_after_charges, args=(str(db),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 1
    usage = RecordingLedger()
    led = BudgetLedger(db, usage)
    assert led.reservation("crashy").status == "active"
    assert led.remaining("births", NOW).epsilon == pytest.approx(7.0)  # still held
    # The restarted node re-sends round 1: it is not charged twice.
    assert led.charge("crashy", 1, DPSGD, None, NOW).duplicate
    led.reserve("alive", "births", 1.0, 1e-5, NOW)
    released = led.recover({"alive"}, NOW)
    assert [r.job_id for r in released] == ["crashy"]
    used = compose_epsilon([DPSGD, DPSGD], 1e-5)
    assert released[0].used_epsilon == pytest.approx(used)
    assert led.remaining("births", NOW).epsilon == pytest.approx(10.0 - used - 1.0)
    assert led.recover({"alive"}, NOW) == []
    assert usage.kinds() == ["budget.reserved", "budget.released"]
    assert usage.entries[-1][1]["reason"].startswith("recovered")


def test_dropped_object_without_release_is_recovered(db):
    led = BudgetLedger(db, budgets=BUDGETS)
    led.reserve("j", "births", 3.0, 1e-5, NOW)
    led.charge("j", 0, GAUSS, None, NOW)
    del led  # "crash": no release
    led = BudgetLedger(db)
    assert [r.job_id for r in led.recover(None, NOW)] == ["j"]
    assert led.spent("births", NOW) == pytest.approx(compose_epsilon([GAUSS], 1e-5))
    assert led.remaining("births", NOW).epsilon == pytest.approx(10.0 - led.spent("births", NOW))


OPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "charge", "release"]),
        st.integers(0, 7),
        st.floats(0.2, 4.0),
        st.sampled_from(
            [
                DPSGD,
                GAUSS,
                {"type": "laplace", "scale": 5.0},
                {"type": "pure", "epsilon": 0.3, "delta": 1e-7},
            ]
        ),
    ),
    max_size=40,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(OPS)
def test_spent_plus_reserved_never_exceeds_the_budget(tmp_path_factory, ops):
    led = BudgetLedger(tmp_path_factory.mktemp("b") / "b.sqlite", budgets=BUDGETS)
    rounds: dict[str, int] = {}
    for op, job, eps, mech in ops:
        job_id = f"j{job}"
        try:
            if op == "reserve":
                led.reserve(job_id, "births", eps, 1e-5, NOW)
            elif op == "charge":
                led.charge(job_id, rounds.get(job_id, 0), mech, None, NOW)
                rounds[job_id] = rounds.get(job_id, 0) + 1
            else:
                led.release(job_id, "finished", NOW)
        except BudgetError:
            pass
        st_ = led.status("births", NOW)
        assert st_.committed_epsilon <= 10.0
        assert st_.remaining_delta >= -1e-18
        assert st_.spent_epsilon <= st_.committed_epsilon + 1e-9
        assert not math.isnan(st_.remaining_epsilon)
    led.recover(None, NOW)
    final = led.status("births", NOW)
    assert final.spent_epsilon == pytest.approx(final.committed_epsilon)
    assert final.committed_epsilon <= 10.0
    led.close()


def test_with_the_real_consent_ledger(tmp_path):
    from consent.ledger import Ledger

    with Ledger(tmp_path / "usage.sqlite") as usage:
        led = BudgetLedger(tmp_path / "budget.sqlite", usage, budgets=BUDGETS)
        led.reserve("j", "births", 2.0, 1e-5, NOW)
        c0 = led.charge("j", 0, DPSGD, 0.95, NOW)
        c1 = led.charge("j", 1, GAUSS, None, NOW)
        rel = led.release("j", "finished", NOW)
        entries = list(usage.entries())
        led.close()
    assert [e.kind for e in entries] == [
        "budget.reserved",
        "budget.charged",
        "budget.charged",
        "budget.released",
    ]
    assert entries[0].payload["epsilon"] == 2.0
    assert entries[1].payload["epsilon"] == pytest.approx(c0.job_epsilon_spent)
    assert entries[2].payload["epsilon"] == pytest.approx(
        c1.job_epsilon_spent - c0.job_epsilon_spent
    )
    assert entries[3].payload["epsilon"] == pytest.approx(rel.freed_epsilon)
    assert entries[0].at == NOW


def test_usage_ledger_can_be_swapped(ledger, usage):
    other = RecordingLedger()
    ledger.usage_ledger = other
    assert ledger.usage_ledger is other
    ledger.reserve("j", "births", 1.0, 1e-5, NOW)
    assert other.kinds() == ["budget.reserved"] and usage.kinds() == []
    with pytest.raises(BudgetError):
        ledger.usage_ledger = object()  # type: ignore[assignment]
