"""API tests: roles (401/403 with a JSON body, nothing changes), spec validation (422 naming
the field, nothing stored), the lifecycle with a scripted runner, results and cancellation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.api import bootstrap_operator, create_app
from coordinator.runner import RoundProgress, RunResult
from federation.spec import JobSpec

from .conftest import Api, fast_settings

SPEC = {
    "kind": "train",
    "name": "t",
    "features": ["maternal_age", "parity"],
    "label": "lbw",
    "rounds": 3,
    "min_nodes": 2,
    "privacy": {"epsilon": 1.0},
}


def _count(api: Api) -> tuple[int, int, int]:
    h = api.h(api.operator)
    c = api.client
    return (
        len(c.get("/jobs", headers=h).json()),
        len(c.get("/principals", headers=h).json()),
        len(c.get("/audit/approvals", headers=h).json()),
    )


@pytest.fixture
def world(api: Api) -> dict[str, str]:
    tokens = {
        "admin0": api.node("n0", max_epsilon_per_job=3.0),
        "admin1": api.node("n1", max_epsilon_per_job=3.0),
    }
    tokens["researcher"] = api.principal("aki", "researcher")
    tokens["other"] = api.principal("ben", "researcher")
    tokens["auditor"] = api.principal("audit", "auditor")
    return tokens


def test_call_api_without_or_with_unknown_token_401(api: Api, world: dict[str, str]) -> None:
    before = _count(api)
    for headers in (
        {},
        {"Authorization": "Bearer hmn_000000000000_" + "x" * 43},
        {"Authorization": "Basic abc"},
        {"Authorization": f"Bearer {world['researcher']}x"},
    ):
        r = api.client.post("/jobs", json={"spec": SPEC}, headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text
        assert r.headers["www-authenticate"] == "Bearer"
    assert _count(api) == before


def test_call_endpoints_with_wrong_role_403_changes_nothing(
    api: Api, world: dict[str, str]
) -> None:
    job = api.client.post("/jobs", json={"spec": SPEC}, headers=api.h(world["researcher"])).json()
    before = _count(api)
    denied = [
        ("auditor", "POST", "/jobs", {"spec": SPEC}),  # auditor cannot submit
        (
            "researcher",
            "POST",
            f"/nodes/n0/jobs/{job['id']}/decision",
            {"outcome": "approve"},
        ),  # nor approve
        ("researcher", "POST", "/principals", {"name": "x", "role": "operator"}),
        (
            "admin0",
            "POST",
            f"/nodes/n1/jobs/{job['id']}/decision",
            {"outcome": "approve"},
        ),  # another node
        ("admin0", "GET", "/audit/jobs", None),
        ("other", "GET", f"/jobs/{job['id']}", None),  # not their job
        ("other", "POST", f"/jobs/{job['id']}/cancel", None),
        ("auditor", "POST", f"/jobs/{job['id']}/cancel", None),
        ("researcher", "POST", "/nodes", {"name": "n9"}),
    ]
    for who, method, path, body in denied:
        r = api.client.request(method, path, json=body, headers=api.h(world[who]))
        assert r.status_code == 403, (who, path, r.text)
        assert r.json()["code"] == "forbidden" and r.json()["detail"]
    assert _count(api) == before
    assert (
        api.client.get(f"/jobs/{job['id']}", headers=api.h(world["researcher"])).json()["state"]
        == "awaiting_approval"
    )


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"privacy": {"epsilon": -1}}, "privacy.epsilon"),
        ({"privacy": {"epsilon": 5.0}}, "privacy.epsilon"),  # above both nodes' caps
        ({"nodes": ["n0", "nowhere"]}, "nodes"),
        ({"features": ["bad name"]}, "features"),
        ({"kind": "sql"}, "kind"),
        ({"rounds": 10**9}, "rounds"),
        ({"min_nodes": 3}, "min_nodes"),
    ],
)
def test_submit_job_invalid_spec_422_names_field(
    api: Api, world: dict[str, str], patch: dict, field: str
) -> None:
    r = api.client.post(
        "/jobs", json={"spec": {**SPEC, **patch}}, headers=api.h(world["researcher"])
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == field and body["detail"][0]["msg"].startswith(field)
    assert _count(api)[0] == 0 and _count(api)[2] == 0


def test_submit_job_malformed_body_422(api: Api, world: dict[str, str]) -> None:
    for body in ({}, {"spec": "x"}, {"spec": SPEC, "extra": 1}):
        r = api.client.post("/jobs", json=body, headers=api.h(world["researcher"]))
        assert r.status_code == 422
    assert _count(api)[0] == 0


def test_log_tokens_never_written(
    api: Api, world: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.client.get("/jobs", headers=api.h(world["researcher"]))
    api.client.get("/jobs", headers=api.h(world["researcher"] + "x"))
    r = api.client.get("/principals", headers=api.h(api.operator))
    assert all(world["researcher"] not in rec.getMessage() for rec in caplog.records)
    assert "hash" not in r.text and world["researcher"] not in r.text


def test_revoke_token_stops_cached_token(api: Api, world: dict[str, str]) -> None:
    h = api.h(world["auditor"])
    assert api.client.get("/audit/jobs", headers=h).status_code == 200
    prefix = world["auditor"].split("_")[1]
    assert api.client.delete(f"/tokens/{prefix}", headers=api.h(api.operator)).status_code == 200
    assert api.client.get("/audit/jobs", headers=h).status_code == 401


class ScriptedRunner:
    """A runner that reports rounds without an engine; ``gate`` holds it before round 2."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: list[tuple[str, list[str]]] = []

    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        self.calls.append((job_id, list(nodes)))
        for k in range(1, job.rounds + 1):
            on_progress(RoundProgress(k, job.rounds, {"auc": 0.5 + k / 100}))
            if k == 1:
                self.gate.wait(10)
        return RunResult(
            "succeeded",
            "done",
            report={"rounds": job.rounds},
            model={"parameters": [[0.1]]},
            epsilon_by_node={n: 0.5 for n in nodes},
            plot_png=b"\x89PNG\r\n",
        )


@pytest.fixture
def scripted(tmp_path: Path):
    runner = ScriptedRunner()
    app = create_app(fast_settings(tmp_path / "c"), runner)
    op = bootstrap_operator(app.state.store).token
    with TestClient(app) as client:
        api = Api(client, op)
        tokens = {
            "a0": api.node("n0"),
            "a1": api.node("n1"),
            "r": api.principal("aki", "researcher"),
        }
        tokens["s0"] = api.service("n0")
        yield api, runner, tokens, app


def test_run_job_reports_rounds_and_result(scripted) -> None:
    api, runner, t, app = scripted
    job = api.client.post("/jobs", json={"spec": SPEC}, headers=api.h(t["r"])).json()
    for n, tok in (("n0", "a0"), ("n1", "a1")):
        r = api.client.post(
            f"/nodes/{n}/jobs/{job['id']}/decision",
            json={"outcome": "approve"},
            headers=api.h(t[tok]),
        )
        assert r.status_code == 200 and r.json()["status"] == "approved"
    for _ in range(200):
        status = api.client.get(f"/jobs/{job['id']}", headers=api.h(t["r"])).json()
        if status["round"] == 1:
            break
        threading.Event().wait(0.02)
    assert (
        status["state"] == "running" and status["round"] == 1 and status["metrics"]["auc"] == 0.51
    )
    assert api.client.get(f"/jobs/{job['id']}/result", headers=api.h(t["r"])).status_code == 404
    runner.gate.set()
    app.state.lifecycle.wait(job["id"], timeout=10)
    done = api.client.get(f"/jobs/{job['id']}", headers=api.h(t["r"])).json()
    assert done["state"] == "succeeded" and done["round"] == 3 and done["has_result"]
    res = api.client.get(f"/jobs/{job['id']}/result", headers=api.h(t["r"])).json()
    assert res["epsilon_by_node"] == {"n0": 0.5, "n1": 0.5} and res["model"] == {
        "parameters": [[0.1]]
    }
    png = api.client.get(f"/jobs/{job['id']}/result/plot.png", headers=api.h(t["r"]))
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    assert runner.calls == [(job["id"], ["n0", "n1"])]
    r = api.client.post(f"/jobs/{job['id']}/cancel", headers=api.h(t["r"]))
    assert r.status_code == 409 and r.json()["code"] == "conflict"


def _submit_and_approve(api: Api, t: dict[str, str]) -> dict:
    job = api.client.post("/jobs", json={"spec": SPEC}, headers=api.h(t["r"])).json()
    for n, tok in (("n0", "a0"), ("n1", "a1")):
        api.client.post(
            f"/nodes/{n}/jobs/{job['id']}/decision",
            json={"outcome": "approve"},
            headers=api.h(t[tok]),
        )
    return job


def test_get_result_as_auditor_operator_or_node_admin_403_metadata_and_epsilon_visible(
    scripted,
) -> None:
    """Only the submitting researcher reads a result; auditors see metadata and ε."""
    api, runner, t, app = scripted
    aud = api.principal("ines", "auditor")
    other = api.principal("ren", "researcher")
    job = _submit_and_approve(api, t)
    runner.gate.set()
    app.state.lifecycle.wait(job["id"], timeout=10)
    for who in (aud, api.operator, t["a0"], other):
        for path in (f"/jobs/{job['id']}/result", f"/jobs/{job['id']}/result/plot.png"):
            r = api.client.get(path, headers=api.h(who))
            assert r.status_code == 403, (path, r.text)
            assert "0.1" not in r.text and "PNG" not in r.text
    meta = api.client.get(f"/jobs/{job['id']}", headers=api.h(aud)).json()
    assert meta["state"] == "succeeded" and meta["has_result"]
    eps = {
        e["node"]: e["by_job"] for e in api.client.get("/audit/epsilon", headers=api.h(aud)).json()
    }
    assert eps == {"n0": {job["id"]: 0.5}, "n1": {job["id"]: 0.5}}
    assert api.client.get(f"/jobs/{job['id']}/result", headers=api.h(t["r"])).status_code == 200


def test_cancel_running_job_stops_at_next_round(scripted) -> None:
    api, runner, t, app = scripted
    job = _submit_and_approve(api, t)
    for _ in range(200):
        if api.client.get(f"/jobs/{job['id']}", headers=api.h(t["r"])).json()["round"] == 1:
            break
        threading.Event().wait(0.02)
    r = api.client.post(f"/jobs/{job['id']}/cancel", headers=api.h(t["r"]))
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    runner.gate.set()
    app.state.lifecycle.wait(job["id"], timeout=10)
    final = api.client.get(f"/jobs/{job['id']}", headers=api.h(t["r"])).json()
    assert final["state"] == "cancelled" and final["round"] == 1 and "aki" in final["reason"]


def test_node_jobs_lists_only_its_jobs_and_decision_reasons(scripted) -> None:
    api, _, t, _ = scripted
    spec = {**SPEC, "nodes": ["n0", "n1"]}
    job = api.client.post("/jobs", json={"spec": spec}, headers=api.h(t["r"])).json()
    view = api.client.get("/nodes/n0/jobs", headers=api.h(t["s0"])).json()
    assert [v["id"] for v in view] == [job["id"]] and view[0]["spec"]["features"] == SPEC[
        "features"
    ]
    r = api.client.post(
        f"/nodes/n0/jobs/{job['id']}/decision", json={"outcome": "reject"}, headers=api.h(t["a0"])
    )
    assert r.status_code == 422 and r.json()["field"] == "reasons"
    r = api.client.post(
        f"/nodes/n0/jobs/{job['id']}/decision",
        headers=api.h(t["a0"]),
        json={
            "outcome": "reject",
            "source": "admin",
            "reasons": [{"code": "admin_rejected", "message": "not now"}],
        },
    )
    assert r.status_code == 200
    j = api.client.get(f"/jobs/{job['id']}", headers=api.h(t["r"])).json()
    assert j["state"] == "failed" and "admin_rejected" in j["reason"]


def test_status_reads_with_a_cached_token_keep_roles_revocation_and_fresh_state(
    api: Api, world: dict[str, str]
) -> None:
    mine = api.h(world["researcher"])
    job = api.client.post("/jobs", json={"spec": SPEC}, headers=mine).json()
    first = api.client.get(f"/jobs/{job['id']}", headers=mine)  # verifies, then caches
    assert first.status_code == 200 and first.json()["approvals"][0]["status"] == "pending"
    r = api.client.post(
        f"/nodes/n0/jobs/{job['id']}/decision",
        json={"outcome": "approve"},
        headers=api.h(world["admin0"]),
    )
    assert r.status_code == 200, r.text
    again = api.client.get(f"/jobs/{job['id']}", headers=mine).json()  # cached token
    assert [(a["node"], a["status"]) for a in again["approvals"]] == [
        ("n0", "approved"),
        ("n1", "pending"),
    ]
    # A cached node admin still has no researcher role; another researcher no access.
    assert api.client.get(f"/jobs/{job['id']}", headers=api.h(world["admin0"])).status_code == 403
    assert api.client.get(f"/jobs/{job['id']}", headers=api.h(world["other"])).status_code == 403
    prefix = world["researcher"].split("_")[1]
    assert api.client.delete(f"/tokens/{prefix}", headers=api.h(api.operator)).status_code == 200
    r = api.client.get(f"/jobs/{job['id']}", headers=mine)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


@pytest.mark.parametrize("local", [True, False])
def test_get_job_on_event_loop_or_thread_pool_same_answers(
    api: Api, world: dict[str, str], local: bool
) -> None:
    store = api.client.app.state.store  # type: ignore[attr-defined]
    store.reads_are_local = local  # False: the path PostgreSQL takes (thread pool)
    mine = api.h(world["researcher"])
    job = api.client.post("/jobs", json={"spec": SPEC}, headers=mine).json()
    r = api.client.get(f"/jobs/{job['id']}", headers=mine)
    assert r.status_code == 200 and r.json() == job
    assert api.client.get(f"/jobs/{job['id']}", headers=api.h(world["other"])).status_code == 403
    r = api.client.get("/jobs/nope", headers=mine)
    assert r.status_code == 404 and r.json()["field"] == "job_id"
