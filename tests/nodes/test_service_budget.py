"""The node service reserves a job's whole (ε, δ) before it approves, refuses by policy what its
budget cannot cover, and releases what ended (or unknown) jobs reserved: after a cancel, and
on its first poll after a restart."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.api import bootstrap_operator, create_app
from coordinator.settings import load_settings
from nodes.cli import init_node
from nodes.enforcement import EnforcementPoint
from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "iwamizawa"


@pytest.fixture
def world(tmp_path: Path, university: dict):
    state = tmp_path / "n0"
    init_node(state, "n0", EXAMPLES / "policies" / "city-hospital.toml")
    app = create_app(load_settings(data_dir=tmp_path / "coord"))
    op = bootstrap_operator(app.state.store).token
    with TestClient(app) as http:
        oh = {"Authorization": f"Bearer {op}"}
        tokens = {}
        for n in ("n0", "n1"):
            assert http.post("/nodes", json={"name": n}, headers=oh).status_code == 201
        http.post("/organisations", json=university, headers=oh)
        for who, role, node in (("n0-admin", "node_admin", "n0"), ("aki", "researcher", None)):
            org = university["name"] if role == "researcher" else None
            body = {"name": who, "role": role, "node": node, "organisation": org}
            r = http.post("/principals", json=body, headers=oh)
            tokens[who] = r.json()["token"]["token"]
        tokens["n0"] = http.post("/nodes/n0/service-token", headers=oh).json()["token"]
        cfg = NodeServiceConfig(name="n0", coordinator_url="http://testserver", state_dir=state)

        def service() -> NodeService:
            h = {"Authorization": f"Bearer {tokens['n0']}"}  # the node service's own token
            return NodeService(cfg, CoordinatorLink(TestClient(app, headers=h), "n0"))

        def submit(epsilon: float) -> str:
            spec = tomllib.loads((EXAMPLES / "lbw_model.toml").read_text())
            spec["privacy"]["epsilon"] = epsilon
            h = {"Authorization": f"Bearer {tokens['aki']}"}
            r = http.post("/jobs", json={"spec": spec}, headers=h)
            assert r.status_code == 201, r.text
            return r.json()["id"]

        def cancel(job_id: str) -> None:
            h = {"Authorization": f"Bearer {tokens['aki']}"}
            assert http.post(f"/jobs/{job_id}/cancel", headers=h).status_code == 200

        yield service, submit, cancel, EnforcementPoint("n0", state), app


def test_approval_reserves_and_cancel_releases(world) -> None:
    service, submit, cancel, point, app = world
    svc = service()
    job_id = submit(3.0)
    assert svc.poll_once() == {job_id: "approve"}
    held = point.budget().reservation(job_id)
    assert held.status == "active" and held.epsilon == pytest.approx(3.0)
    approval = next(a for a in app.state.store.approvals(job_id) if a.node == "n0")
    assert approval.status == "approved"
    cancel(job_id)
    assert svc.poll_once() == {job_id: "released"}
    assert point.budget().reservation(job_id).status == "released"


def test_a_job_the_budget_cannot_cover_is_rejected_with_the_reason(world) -> None:
    service, submit, _, point, app = world
    svc = service()
    taken = [submit(3.0) for _ in range(3)]  # 9 of the year's ε = 10 on births
    assert svc.poll_once() == dict.fromkeys(taken, "approve")
    over = submit(3.0)
    assert svc.poll_once() == {over: "reject"}
    approval = next(a for a in app.state.store.approvals(over) if a.node == "n0")
    assert approval.status == "rejected"
    assert any("budget" in r.code for r in approval.reasons), approval.reasons
    assert point.budget().reservation(over) is None


def test_first_poll_after_a_restart_releases_reservations_of_gone_jobs(world) -> None:
    service, submit, _, point, _ = world
    live = submit(3.0)
    assert service().poll_once() == {live: "approve"}
    point.budget().reserve("ghost-job", "births", 1.0, 1e-6, datetime.now(UTC))
    restarted = service()
    assert restarted.poll_once() == {"ghost-job": "released"}
    assert point.budget().reservation("ghost-job").status == "released"
    assert point.budget().reservation(live).status == "active"  # its job is still open
    assert restarted.poll_once() == {}
