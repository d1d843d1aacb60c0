"""The node's admin HTTP API against a node service linked to a real in-process coordinator:
what waiting jobs would use (subjects after consent filtering included), approve / reject
seen by the coordinator, bad input naming the field and changing nothing, 401 on a wrong
token, 503 / 502 when the coordinator is down or refuses the node, release review, budget,
policy, ledger head and verification, and serving on loopback only."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from nodes.admin_api import create_admin_app, serve_admin
from nodes.service import CoordinatorLink, NodeService

NODE = "city-hospital"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _waiting_job(world, job_id: str) -> dict:
    r = world.api.get("/jobs/waiting", headers=world.h())
    assert r.status_code == 200, r.text
    return next(j for j in r.json() if j["id"] == job_id)


def test_waiting_job_shows_what_it_would_use(admin_world, node_scenario: Path) -> None:
    w = admin_world
    job_id = w.submit(2.0)
    assert w.service.poll_once() == {job_id: "needs_approval"}
    job = _waiting_job(w, job_id)
    assert job["approval_status"] == "needs_approval"
    assert job["policy_outcome"] == "needs_approval"
    assert job["purpose"]["duo"] == ["HMB"] and job["purpose"]["requester"] == "hokkaido-university"
    assert job["purpose"]["commercial"] is False
    assert job["domain"] == "births" and "maternal_age" in job["features"]
    assert job["label"] == "lbw" and job["epsilon"] == pytest.approx(2.0)
    births = pd.read_csv(node_scenario / NODE / "births.csv")
    # consent filtering removed some of the node's subjects, and kept most
    assert 0 < job["subjects_after_consent"] < births["subject"].nunique()
    assert w.api.get(f"/jobs/{job_id}", headers=w.h()).json() == job


def test_approve_through_the_node_api_is_recorded_by_the_coordinator(admin_world) -> None:
    w = admin_world
    job_id = w.submit(3.0)
    w.service.poll_once()
    r = w.api.post(f"/jobs/{job_id}/approve", json={"reason": "ethics ok"}, headers=w.h())
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "approve" and r.json()["source"] == "admin"
    approval = w.approval(job_id)
    assert approval.status == "approved" and approval.source == "admin"
    assert [x.message for x in approval.reasons] == ["ethics ok"]
    assert w.point.budget().reservation(job_id).status == "active"
    births = next(
        row for row in w.api.get("/budget", headers=w.h()).json() if row["domain"] == "births"
    )
    assert births["reserved_epsilon"] == pytest.approx(3.0) and births["active_jobs"] == 1
    # no longer waiting: a second approval is a 404 naming the job, nothing changes
    again = w.api.post(f"/jobs/{job_id}/approve", headers=w.h())
    assert again.status_code == 404 and again.json()["field"] == "job_id"


def test_reject_without_reason_is_422_naming_reason_and_changes_nothing(admin_world) -> None:
    w = admin_world
    job_id = w.submit()
    w.service.poll_once()
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        r = w.api.post(f"/jobs/{job_id}/reject", json=body, headers=w.h())
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "reason" and r.json()["code"] == "invalid_input"
    assert w.approval(job_id).status == "needs_approval"
    r = w.api.post(f"/jobs/{job_id}/reject", json={"reason": "not our cohort"}, headers=w.h())
    assert r.status_code == 200, r.text
    approval = w.approval(job_id)
    assert approval.status == "rejected"
    assert [x.message for x in approval.reasons] == ["not our cohort"]
    assert w.point.budget().reservation(job_id) is None


def test_bad_input_names_the_field(admin_world) -> None:
    w = admin_world
    r = w.api.post("/jobs/no such id/approve", headers=w.h())
    assert r.status_code == 422 and r.json()["field"] == "job_id"
    r = w.api.post("/jobs/abc/reject", json={"reason": "x", "extra": 1}, headers=w.h())
    assert r.status_code == 422 and r.json()["field"] == "extra"
    r = w.api.post("/jobs/abc/reject", content=b"{not json", headers=w.h())
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    r = w.api.get("/budget", params={"at": "2026-01-01T00:00:00"}, headers=w.h())  # no zone
    assert r.status_code == 422 and r.json()["field"] == "at"
    r = w.api.get("/jobs/0123456789abcdef", headers=w.h())
    assert r.status_code == 404 and r.json()["field"] == "job_id"
    job_id = w.submit()
    w.service.poll_once()
    huge = b'{"reason": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    deep = b'{"reason": "x", "r": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    for body, status in ((huge, 413), (deep, 422)):
        headers = {**w.h(), "Content-Type": "application/json"}
        r = w.api.post(f"/jobs/{job_id}/reject", content=body, headers=headers)
        assert r.status_code == status and r.json()["field"] == "body", r.text[:300]
    assert w.approval(job_id).status == "needs_approval"


def test_wrong_or_missing_token_is_401_and_changes_nothing(admin_world) -> None:
    w = admin_world
    job_id = w.submit()
    w.service.poll_once()
    wrong = {"Authorization": "Bearer hmn_not-the-admin"}
    for method, path in (
        ("GET", "/status"),
        ("GET", "/jobs/waiting"),
        ("GET", "/budget"),
        ("GET", "/ledger/head"),
        ("POST", f"/jobs/{job_id}/approve"),
    ):
        for headers in (wrong, {}, {"Authorization": w.tokens["node_admin"]}):
            r = w.api.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
            assert w.tokens["node_admin"] not in r.text
    # another principal's valid coordinator token is not the node admin's
    r = w.api.get("/status", headers=w.h("researcher"))
    assert r.status_code == 401
    assert w.approval(job_id).status == "needs_approval"
    health = w.api.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "node": NODE}


def test_status_reports_the_last_poll_and_the_supernode(admin_world) -> None:
    w = admin_world
    before = w.api.get("/status", headers=w.h()).json()
    assert before["last_poll_at"] is None and before["supernode"]["running"] is True
    stop = threading.Event()
    w.service.serve(stop, tick=stop.set)  # one poll, then the loop sees the stop
    after = w.api.get("/status", headers=w.h()).json()
    assert after["node"] == NODE and after["last_poll_at"] is not None
    assert after["last_poll_error"] is None


def test_coordinator_down_is_503_and_local_views_still_work(admin_world) -> None:
    w = admin_world
    down = f"http://127.0.0.1:{_free_port()}"

    def link(who: str) -> CoordinatorLink:
        bearer = {"Authorization": f"Bearer {w.tokens[who]}"}
        return CoordinatorLink(httpx.Client(base_url=down, headers=bearer, timeout=5), NODE)

    service = NodeService(w.service.config, link("node_service"), link("node_admin"))
    api = TestClient(create_admin_app(service))
    for method, path in (
        ("GET", "/jobs/waiting"),
        ("GET", "/jobs/0123456789abcdef"),
        ("POST", "/jobs/0123456789abcdef/approve"),
        ("GET", "/releases/held"),
    ):
        r = api.request(method, path, headers=w.h())
        assert r.status_code == 503, (path, r.text)
        assert r.json()["code"] == "coordinator_unreachable"
        assert "cannot be reached" in r.json()["detail"]
    r = api.post("/jobs/0123456789abcdef/reject", json={"reason": "x"}, headers=w.h())
    assert r.status_code == 503
    for path in ("/budget", "/policy", "/ledger/head", "/ledger/verify", "/status"):
        assert api.get(path, headers=w.h()).status_code == 200, path


def test_coordinator_refusing_the_node_is_502(admin_world) -> None:
    w = admin_world
    link = CoordinatorLink(
        TestClient(w.coordinator, headers={"Authorization": "Bearer hmn_revoked"}), NODE
    )
    api = TestClient(create_admin_app(NodeService(w.service.config, link), token="local-admin"))
    r = api.get("/jobs/waiting", headers={"Authorization": "Bearer local-admin"})
    assert r.status_code == 502, r.text
    assert r.json()["code"] == "coordinator_refused_credentials"
    assert "hmn_revoked" not in r.text


def test_policy_deny_is_409_and_nothing_is_reserved(admin_world) -> None:
    w = admin_world
    job_id = w.submit(3.0)
    w.service.poll_once()
    # the admin tightens the policy after the job arrived: the job now asks too much ε
    text = w.point.state.policy_path.read_text().replace(
        "max_epsilon_per_job = 3.0", "max_epsilon_per_job = 1.0"
    )
    w.point.state.policy_path.write_text(text)
    job = _waiting_job(w, job_id)
    assert job["policy_outcome"] == "deny" and job["reasons"]
    r = w.api.post(f"/jobs/{job_id}/approve", headers=w.h())
    assert r.status_code == 409 and "policy denies" in r.json()["detail"]
    assert w.point.budget().reservation(job_id) is None
    assert w.approval(job_id).status == "needs_approval"


def test_policy_budget_and_ledger_views(admin_world) -> None:
    w = admin_world
    policy = w.api.get("/policy", headers=w.h()).json()
    assert policy["policy"]["approval"]["mode"] == "manual"
    assert 'mode = "manual"' in policy["toml"]
    rows = w.api.get("/budget", headers=w.h()).json()
    births = next(r for r in rows if r["domain"] == "births")
    assert births["budget_epsilon"] == pytest.approx(10.0)
    assert births["remaining_epsilon"] == pytest.approx(10.0)
    earlier = w.api.get("/budget", params={"at": "2020-06-01T00:00:00Z"}, headers=w.h()).json()
    assert next(r for r in earlier if r["domain"] == "births")["period"] == "2020"

    before = w.api.get("/ledger/head", headers=w.h()).json()
    job_id = w.submit(1.0)
    w.service.poll_once()
    assert w.api.post(f"/jobs/{job_id}/approve", headers=w.h()).status_code == 200
    head = w.api.get("/ledger/head", headers=w.h()).json()
    size = head["size"]
    assert size > before["size"]  # the reservation is in the ledger, under a signed head
    assert head["covers_all"] is True and head["latest_head"]["tree_size"] == size
    assert w.api.get("/ledger/head", headers=w.h()).json() == head  # reading signs nothing
    checked = w.api.get("/ledger/verify", headers=w.h()).json()["heads_checked"]
    signed = w.api.post("/ledger/head", headers=w.h())
    assert signed.status_code == 200 and signed.json()["tree_size"] == size
    assert w.api.get("/ledger/head", headers=w.h()).json()["latest_head"] == signed.json()
    verdict = w.api.get("/ledger/verify", headers=w.h()).json()
    assert verdict["ok"] is True and verdict["tree_size"] == size
    assert verdict["heads_checked"] == checked + 1
    assert verdict["entries_by_kind"]["budget.reserved"] == 1

    # an entry rewritten behind the ledger's back is caught
    db = sqlite3.connect(w.point.state.ledger_path)
    db.execute("DROP TRIGGER entries_append_only_u")
    db.execute("UPDATE entries SET data = CAST(data || ' ' AS BLOB) WHERE idx = 1")
    db.commit()
    verdict = w.api.get("/ledger/verify", headers=w.h()).json()
    assert verdict["ok"] is False and verdict["bad_index"] == 1 and verdict["reason"]
    db.execute("UPDATE entries SET data = CAST(data AS TEXT) WHERE idx = 2")  # not even a blob
    db.commit()
    db.close()
    r = w.api.get("/ledger/verify", headers=w.h())
    assert r.status_code == 200 and r.json()["ok"] is False


def test_release_review_through_the_node_api(make_admin_world) -> None:
    w = make_admin_world(release_review="admin")
    job_id = w.submit(1.0)
    w.service.poll_once()
    assert w.api.post(f"/jobs/{job_id}/approve", headers=w.h()).status_code == 200
    store = w.coordinator.state.store
    while store.get_job(job_id)[0].state not in ("succeeded", "failed"):  # the runner is instant
        time.sleep(0.05)
    held = w.api.get("/releases/held", headers=w.h()).json()
    assert [v["job_id"] for v in held] == [job_id]
    r = w.api.post(f"/releases/{job_id}/withhold", json={"reason": " "}, headers=w.h())
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = w.api.post(f"/releases/{job_id}/release", json={"reason": "checked"}, headers=w.h())
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "released"
    entries = list(w.point.ledger().entries(kind="result.released"))
    assert [e.payload["job_id"] for e in entries] == [job_id]
    assert w.api.get("/releases/held", headers=w.h()).json() == []
    r = w.api.post(f"/releases/{job_id}/release", headers=w.h())
    assert r.status_code == 404 and r.json()["field"] == "job_id"


def test_serve_admin_listens_on_loopback_only_until_stopped(admin_world) -> None:
    with pytest.raises(ValueError, match="host"):
        serve_admin(admin_world.admin_app, "0.0.0.0", 0, threading.Event())
    with pytest.raises(ValueError, match="host"):
        serve_admin(admin_world.admin_app, "example.org", 0, threading.Event())
    stop = threading.Event()
    server = serve_admin(admin_world.admin_app, "127.0.0.1", 0, stop)
    try:
        while not server.server.started:
            time.sleep(0.02)
        r = httpx.get(f"http://127.0.0.1:{server.port}/health")
        assert r.status_code == 200 and r.json()["node"] == NODE
        with pytest.raises(OSError):  # the port is taken: fails at once, not in the thread
            serve_admin(admin_world.admin_app, "127.0.0.1", server.port, threading.Event())
    finally:
        stop.set()
        server.join(10)
    assert not server.is_alive()


def test_a_broken_policy_file_is_409_naming_the_policy(admin_world) -> None:
    w = admin_world
    w.submit()
    w.service.poll_once()
    w.point.state.policy_path.write_text("max_epsilon_per_job = 'lots'\n")
    for path in ("/policy", "/jobs/waiting"):
        r = w.api.get(path, headers=w.h())
        assert r.status_code == 409, (path, r.text)
        assert r.json()["code"] == "policy_invalid" and r.json()["field"] == "policy"
