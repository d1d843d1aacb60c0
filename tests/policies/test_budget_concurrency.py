"""50 concurrent reservations against one budget never overspend (threads and processes)."""

import multiprocessing as mp
import threading

import pytest

from policies import BudgetExceeded, BudgetLedger, BudgetRule

from .conftest import NOW, RecordingLedger

N = 50
EPS = 0.3  # 33 of them fit in epsilon = 10 (fsum of 33 x 0.3 = 9.9)
FIT = 33
BUDGETS = {"births": BudgetRule(epsilon=10.0, delta=1.0 - 1e-9, period="year")}


def _attempt(led: BudgetLedger, job_id: str) -> str:
    try:
        led.reserve(job_id, "births", EPS, 1e-6, NOW)
        return "ok"
    except BudgetExceeded:
        return "refused"


def _check(db, outcomes):
    assert outcomes.count("ok") == FIT
    assert outcomes.count("refused") == N - FIT
    with BudgetLedger(db) as led:
        status = led.status("births", NOW)
    assert status.active_jobs == FIT
    assert status.committed_epsilon <= 10.0
    assert status.committed_epsilon == pytest.approx(FIT * EPS)


def test_threads_each_with_its_own_ledger(db):
    BudgetLedger(db, budgets=BUDGETS).close()
    start = threading.Barrier(N)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        led = BudgetLedger(db)
        start.wait()
        result = _attempt(led, f"t{i}")
        led.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    _check(db, outcomes)


def test_threads_sharing_one_ledger(db):
    usage = RecordingLedger()
    led = BudgetLedger(db, usage, budgets=BUDGETS)
    start = threading.Barrier(N)
    outcomes: list[str] = []

    def worker(i: int) -> None:
        start.wait()
        outcomes.append(_attempt(led, f"s{i}"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    led.close()
    _check(db, outcomes)
    assert usage.kinds() == ["budget.reserved"] * FIT


def _process_worker(path: str, i: int, gate, results) -> None:
    led = BudgetLedger(path)
    gate.wait()
    results.put(_attempt(led, f"p{i}"))
    led.close()


def test_separate_processes(db):
    BudgetLedger(db, budgets=BUDGETS).close()
    ctx = mp.get_context("fork")
    gate = ctx.Event()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(str(db), i, gate, results)) for i in range(N)
    ]
    for p in procs:
        p.start()
    gate.set()
    outcomes = [results.get(timeout=60) for _ in range(N)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    _check(db, outcomes)
