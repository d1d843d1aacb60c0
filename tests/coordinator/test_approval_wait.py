"""A job with enough approvals waits for the targeted nodes still evaluating it, then runs on
every node that approved; after the approval grace it runs without the late ones."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from coordinator.api import create_app
from coordinator.runner import RunResult
from coordinator.schemas import NodeCreate, PrincipalCreate
from coordinator.store import Store
from federation.api_models import DecisionCreate
from federation.spec import parse_job_spec

from .conftest import fast_settings

SPEC = {
    "kind": "train",
    "features": ["maternal_age"],
    "label": "lbw",
    "rounds": 1,
    "min_nodes": 2,
    "privacy": {"epsilon": 1.0},
}
APPROVE = DecisionCreate(outcome="approve")


def _job(store: Store, n_nodes: int = 3) -> str:
    for i in range(n_nodes):
        store.register_node(NodeCreate(name=f"n{i}", max_epsilon_per_job=3.0))
    researcher, _ = store.create_principal(PrincipalCreate(name="aki", role="researcher"))
    return store.create_job(researcher, parse_job_spec(SPEC)).id


def test_enough_approvals_wait_for_pending_nodes_then_all_run(store: Store) -> None:
    job_id = _job(store)
    assert store.decide(job_id, "n0", APPROVE, "a")[1] is False
    assert store.decide(job_id, "n1", APPROVE, "b")[1] is False
    job = store.get_job(job_id)[0]
    assert job.state == "awaiting_approval" and "waiting for 1 node(s)" in job.reason
    assert store.decide(job_id, "n2", APPROVE, "c")[1] is True
    assert store.job_spec(job_id)[1] == ["n0", "n1", "n2"]


def test_a_node_waiting_for_its_admin_does_not_hold_the_job(store: Store) -> None:
    job_id = _job(store)
    store.decide(job_id, "n0", DecisionCreate(outcome="needs_approval"), "a")
    store.decide(job_id, "n1", APPROVE, "b")
    assert store.decide(job_id, "n2", APPROVE, "c")[1] is True
    assert store.job_spec(job_id)[1] == ["n1", "n2"]


def test_close_approvals_runs_without_late_nodes_only_with_quorum(store: Store) -> None:
    job_id = _job(store)
    store.decide(job_id, "n0", APPROVE, "a")
    assert store.close_approvals(job_id) is False  # one approval: not enough
    store.decide(job_id, "n1", APPROVE, "b")
    assert store.close_approvals(job_id) is True
    job = store.get_job(job_id)[0]
    assert job.state == "approved" and "n2 did not decide in time" in job.reason
    assert store.job_spec(job_id)[1] == ["n0", "n1"]
    assert store.close_approvals(job_id) is False  # already approved


class _Recorder:
    def __init__(self) -> None:
        self.nodes: list[list[str]] = []

    def run(self, job, job_id, nodes, on_progress, cancelled) -> RunResult:  # noqa: ANN001
        self.nodes.append(list(nodes))
        return RunResult("succeeded", "done", epsilon_by_node=dict.fromkeys(nodes, 0.5))


def test_lifecycle_runs_after_the_grace_without_the_silent_node(tmp_path) -> None:
    runner = _Recorder()
    app = create_app(
        fast_settings(tmp_path / "c", approval_grace_seconds=0.5),
        runner,  # type: ignore[arg-type]
    )
    with TestClient(app):
        store, lifecycle = app.state.store, app.state.lifecycle
        job_id = _job(store)
        lifecycle.decide(job_id, "n0", APPROVE, "a")
        lifecycle.decide(job_id, "n1", APPROVE, "b")
        assert store.get_job(job_id)[0].state == "awaiting_approval"
        end = time.monotonic() + 20
        while store.get_job(job_id)[0].state != "succeeded" and time.monotonic() < end:
            time.sleep(0.05)
        assert store.get_job(job_id)[0].state == "succeeded"
    assert runner.nodes == [["n0", "n1"]]
