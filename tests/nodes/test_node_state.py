"""The node's state folder under concurrent processes: salts and per-round subject records."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

from nodes.node_state import NodeState

ROUNDS_PER_PROCESS = 25
PROCESSES = 4


def _charge_rounds(root: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    state = NodeState(Path(root))
    start.wait()
    for i in range(ROUNDS_PER_PROCESS):
        round_no = worker * ROUNDS_PER_PROCESS + i
        state.record_subjects("job-1", round_no, [f"{round_no:032x}", f"{worker:032x}"])


def _salt(
    root: str, out: multiprocessing.queues.Queue, start: multiprocessing.synchronize.Event
) -> None:
    start.wait()
    out.put(NodeState(Path(root)).salt("job-2").hex())


def _run(target, args_for) -> list[int]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=args_for(w, start)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    return [p.exitcode for p in procs]


def test_concurrent_processes_recording_one_job_lose_no_round(tmp_path: Path) -> None:
    codes = _run(_charge_rounds, lambda w, start: (str(tmp_path), w, start))
    assert codes == [0] * PROCESSES
    rounds = NodeState(tmp_path).disclosure("job-1")["rounds"]
    assert isinstance(rounds, dict)
    assert sorted(int(r) for r in rounds) == list(range(PROCESSES * ROUNDS_PER_PROCESS))
    assert rounds["37"] == sorted({f"{37:032x}", f"{1:032x}"})
    salts = tmp_path / "salts"
    assert [p.name for p in salts.iterdir() if p.name.endswith(".tmp")] == []
    for name in ("job-1.json", "job-1.subjects.json"):
        assert stat.S_IMODE(os.stat(salts / name).st_mode) == 0o600


def test_concurrent_processes_creating_a_salt_all_get_the_same_one(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    codes = _run(_salt, lambda w, start: (str(tmp_path), out, start))
    assert codes == [0] * PROCESSES
    salts = {out.get(timeout=10) for _ in range(PROCESSES)}
    assert len(salts) == 1 and salts == {NodeState(tmp_path).salt("job-2").hex()}
