"""Release review (issue 8, output checking): a node whose policy says ``[release] review =
"admin" | "two_reviewers"`` has the results of jobs it ran held at the coordinator until its
admin (or two distinct admins) release them; a withheld result stays held with the reason;
other nodes' admins cannot decide; every decision is an event auditors see. The migration
(0002) is checked on SQLite and, when HAMANASU_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from coordinator.api import bootstrap_operator, create_app
from coordinator.db import migrate
from coordinator.errors import Conflict, Forbidden, ResultHeld
from coordinator.runner import RoundProgress, RunResult
from coordinator.schemas import NodeCreate, PrincipalCreate
from coordinator.store import Store, result_hash
from federation.api_models import DecisionCreate, ReleaseDecisionCreate
from federation.spec import JobSpec, parse_job_spec

from .conftest import Api, fast_settings

SPEC = {
    "kind": "train",
    "name": "t",
    "features": ["maternal_age", "parity"],
    "label": "lbw",
    "rounds": 1,
    "min_nodes": 2,
    "privacy": {"epsilon": 1.0},
}
RESULT = RunResult(
    "succeeded",
    "done",
    report={"rounds": 1, "auc": 0.7},
    model={"parameters": [[0.1]]},
    epsilon_by_node={"n0": 0.5, "n1": 0.5},
    plot_png=b"\x89PNG\r\n",
)


class InstantRunner:
    """Finishes every job at once with :data:`RESULT`."""

    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        on_progress(RoundProgress(1, 1, {"auc": 0.7}))
        return RESULT


@pytest.fixture
def world(tmp_path: Path):
    """n0 reviews (mode set per test through its published caps), n1 does not."""
    app = create_app(fast_settings(tmp_path / "c"), InstantRunner())
    op = bootstrap_operator(app.state.store).token
    with TestClient(app) as client:
        api = Api(client, op)
        t = {
            "a0": api.node("n0"),
            "a1": api.node("n1"),
            "r": api.principal("aki", "researcher"),
            "aud": api.principal("audit", "auditor"),
        }
        t["a0b"] = api.principal("n0-second-admin", "node_admin", "n0")
        t["s0"] = api.service("n0")  # n0's service publishes its caps

        def run(review: str) -> str:
            r = client.put(
                "/nodes/n0/registration", json={"release_review": review}, headers=api.h(t["s0"])
            )
            assert r.status_code == 200 and r.json()["release_review"] == review, r.text
            job = client.post("/jobs", json={"spec": SPEC}, headers=api.h(t["r"])).json()
            for n, tok in (("n0", "a0"), ("n1", "a1")):
                client.post(
                    f"/nodes/{n}/jobs/{job['id']}/decision",
                    json={"outcome": "approve"},
                    headers=api.h(t[tok]),
                )
            app.state.lifecycle.wait(job["id"], timeout=10)
            return str(job["id"])

        yield api, t, run


def _release(
    api: Api,
    token: str,
    job_id: str,
    node: str = "n0",
    decision: str = "release",
    reason: str | None = None,
):
    return api.client.post(
        f"/nodes/{node}/jobs/{job_id}/release",
        json={"decision": decision, "reason": reason},
        headers=api.h(token),
    )


def _held(api: Api, token: str, job_id: str) -> dict:
    for path in (f"/jobs/{job_id}/result", f"/jobs/{job_id}/result/plot.png"):
        r = api.client.get(path, headers=api.h(token))
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["code"] == "result_held" and body["field"] == "job_id" and "0.1" not in r.text
    return body


def test_held_result_not_downloadable_until_node_admin_releases(world) -> None:
    api, t, run = world
    job_id = run("admin")
    status = api.client.get(f"/jobs/{job_id}", headers=api.h(t["r"])).json()
    assert status["state"] == "succeeded" and status["has_result"] and status["held"]
    body = _held(api, t["r"], job_id)
    assert "held until node(s) n0 release it" in body["detail"]
    for path in (f"/jobs/{job_id}/result", f"/jobs/{job_id}/result/plot.png"):
        # auditors never read a result, held or not
        assert api.client.get(path, headers=api.h(t["aud"])).status_code == 403

    views = api.client.get("/nodes/n0/releases", headers=api.h(t["a0"])).json()
    assert [v["job_id"] for v in views] == [job_id]
    view = views[0]
    assert view["status"] == "held" and view["review"] == "admin" and view["reviews_needed"] == 1
    assert view["has_model"] and view["has_plot"] and view["epsilon"] == 0.5
    assert view["result_hash"] == result_hash(
        RESULT.status, RESULT.report, RESULT.model, RESULT.epsilon_by_node, RESULT.plot_png
    )
    assert (
        "report" not in view and "model" not in view and "0.1" not in str(view)
    )  # a summary, no data
    assert api.client.get("/nodes/n1/releases", headers=api.h(t["a1"])).json() == []

    r = _release(api, t["a0"], job_id, reason="checked: aggregate only")
    assert r.status_code == 200 and r.json()["status"] == "released", r.text
    res = api.client.get(f"/jobs/{job_id}/result", headers=api.h(t["r"]))
    assert res.status_code == 200 and res.json()["model"] == {"parameters": [[0.1]]}
    assert res.json()["result_hash"] == view["result_hash"]
    assert (
        api.client.get(f"/jobs/{job_id}/result/plot.png", headers=api.h(t["r"])).status_code == 200
    )
    assert not api.client.get(f"/jobs/{job_id}", headers=api.h(t["r"])).json()["held"]

    reasons = [
        e["reason"] for e in api.client.get(f"/jobs/{job_id}/events", headers=api.h(t["r"])).json()
    ]
    assert any(r.startswith("result held for release review by n0 (admin)") for r in reasons)
    assert any(
        "released by n0 (reviewer n0-admin" in r and "the result is released" in r for r in reasons
    )
    audit = api.client.get(
        "/audit/releases", params={"job_id": job_id}, headers=api.h(t["aud"])
    ).json()
    assert [(a["node"], a["decision"], a["reviewer"]) for a in audit] == [
        ("n0", "release", "n0-admin")
    ]
    assert (
        audit[0]["at"]
        and audit[0]["reviewer_id"]
        and audit[0]["result_hash"] == view["result_hash"]
    )


def test_job_of_nodes_without_review_is_not_held(world) -> None:
    api, t, run = world
    job_id = run("none")
    assert not api.client.get(f"/jobs/{job_id}", headers=api.h(t["r"])).json()["held"]
    assert api.client.get(f"/jobs/{job_id}/result", headers=api.h(t["r"])).status_code == 200
    assert api.client.get("/nodes/n0/releases", headers=api.h(t["a0"])).json() == []


def test_client_reports_a_held_result_and_auditors_read_decisions(world) -> None:
    from coordinator.client import CoordinatorAPIError, CoordinatorClient

    api, t, run = world
    job_id = run("admin")
    researcher = CoordinatorClient("", t["r"], client=TestClient(api.client.app))
    with pytest.raises(CoordinatorAPIError) as err:
        researcher.result(job_id)
    assert err.value.status == 409 and err.value.code == "result_held" and "n0" in err.value.message
    assert researcher.status(job_id).held
    assert _release(api, t["a0"], job_id).status_code == 200
    assert researcher.result(job_id).model == {"parameters": [[0.1]]}
    auditor = CoordinatorClient("", t["aud"], client=TestClient(api.client.app))
    assert [d.reviewer for d in auditor.release_decisions(job_id)] == ["n0-admin"]


def test_two_reviewers_need_two_distinct_reviewers(world) -> None:
    api, t, run = world
    job_id = run("two_reviewers")
    r = _release(api, t["a0"], job_id)
    assert r.status_code == 200 and r.json()["status"] == "held" and r.json()["reviews_needed"] == 2
    _held(api, t["r"], job_id)
    # The same reviewer again, also through another token of the same principal: refused.
    me = api.client.get("/me", headers=api.h(t["a0"])).json()
    again = api.client.post(f"/principals/{me['id']}/tokens", headers=api.h(api.operator)).json()[
        "token"
    ]
    for token in (t["a0"], again):
        r = _release(api, token, job_id)
        assert (
            r.status_code == 409
            and r.json()["code"] == "conflict"
            and "distinct reviewer" in r.json()["detail"]
        )
    _held(api, t["r"], job_id)
    r = _release(api, t["a0b"], job_id)
    assert r.status_code == 200 and r.json()["status"] == "released"
    assert [d["reviewer"] for d in r.json()["decisions"]] == ["n0-admin", "n0-second-admin"]
    assert api.client.get(f"/jobs/{job_id}/result", headers=api.h(t["r"])).status_code == 200


def test_other_nodes_admin_and_other_roles_refused(world) -> None:
    api, t, run = world
    job_id = run("admin")
    for who, node in (("a1", "n0"), ("r", "n0"), ("aud", "n0"), ("a1", "n0")):
        r = _release(api, t[who], job_id, node=node)
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (who, r.text)
    assert api.client.get("/nodes/n0/releases", headers=api.h(t["a1"])).status_code == 403
    r = _release(api, t["a1"], job_id, node="n1")  # n1 does not review: nothing of it is held
    assert r.status_code == 404
    assert api.client.get("/audit/releases", headers=api.h(t["aud"])).json() == []
    _held(api, t["r"], job_id)


def test_withheld_result_stays_held_with_the_reason(world) -> None:
    api, t, run = world
    job_id = run("two_reviewers")
    r = _release(api, t["a0"], job_id, decision="withhold")
    assert r.status_code == 422  # a withhold needs a reason
    r = _release(api, t["a0"], job_id, decision="withhold", reason="cell of 3 births in the report")
    assert r.status_code == 200 and r.json()["status"] == "withheld"
    body = _held(api, t["r"], job_id)
    assert "withheld" in body["detail"] and "n0: cell of 3 births in the report" in body["detail"]
    r = _release(api, t["a0b"], job_id)  # a withhold is final for the node
    assert r.status_code == 409
    _held(api, t["r"], job_id)
    assert api.client.get(f"/jobs/{job_id}", headers=api.h(t["r"])).json()["held"]
    audit = api.client.get("/audit/releases", headers=api.h(api.operator)).json()
    assert [(a["decision"], a["reason"]) for a in audit] == [
        ("withhold", "cell of 3 births in the report")
    ]
    views = api.client.get(
        "/nodes/n0/releases", params={"status": "withheld"}, headers=api.h(t["a0"])
    ).json()
    assert [v["job_id"] for v in views] == [job_id]


# -- store and migration, on SQLite and PostgreSQL ----------------------------------------------
def test_store_release_review_on_backend(store: Store) -> None:
    from coordinator.schemas import PrincipalPublic
    from federation.api_models import NodeRegistration

    for n in ("n0", "n1"):
        store.register_node(NodeCreate(name=n))
    store.publish_node("n0", NodeRegistration(release_review="admin"))
    researcher, _ = store.create_principal(PrincipalCreate(name="aki", role="researcher"))
    admin, _ = store.create_principal(
        PrincipalCreate(name="n0-admin", role="node_admin", node="n0")
    )
    other, _ = store.create_principal(
        PrincipalCreate(name="n1-admin", role="node_admin", node="n1")
    )
    job = store.create_job(researcher, parse_job_spec(SPEC))
    for n in ("n0", "n1"):
        store.decide(job.id, n, DecisionCreate(outcome="approve"), n)
    assert store.start(job.id) and store.finish(job.id, RESULT)
    assert store.get_job(job.id)[0].held
    with pytest.raises(ResultHeld):
        store.result(job.id)
    with pytest.raises(Forbidden):
        store.release_decide(job.id, "n0", ReleaseDecisionCreate(decision="release"), other)
    assert isinstance(admin, PrincipalPublic)
    assert (
        store.release_decide(job.id, "n0", ReleaseDecisionCreate(decision="release"), admin).status
        == "released"
    )
    with pytest.raises(Conflict):
        store.release_decide(job.id, "n0", ReleaseDecisionCreate(decision="release"), admin)
    assert store.result(job.id).result_hash and not store.get_job(job.id)[0].held
    assert [d.reviewer_id for d in store.release_decisions(job.id)] == [admin.id]


def test_migration_0002_applies_over_0001_data(backend) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from coordinator.db import MIGRATIONS
    from coordinator.models import Base

    _, engine, schema = backend
    migrate(engine, "0001", schema=schema)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO nodes (name, registered_at, domains) VALUES ('n0', '2026-01-01', '{}')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO principals (id, name, role, created_at) "
                "VALUES ('p1', 'aki', 'researcher', '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO jobs (id, owner_id, name, kind, spec, nodes, min_nodes, state, reason, round, "
                "rounds_total, metrics, submitted_at, updated_at) VALUES ('j1', 'p1', 'old', 'train', '{}', "
                "'[\"n0\"]', 1, 'succeeded', '', 1, 1, '{}', '2026-01-01', '2026-01-01')"
            )
        )
    migrate(engine, schema=schema)
    tables = set(inspect(engine).get_table_names(schema=schema))
    assert {"release_reviews", "release_decisions"} <= tables
    with engine.connect() as conn:
        (held,) = conn.execute(text("SELECT held FROM jobs WHERE id = 'j1'")).one()
        (review,) = conn.execute(text("SELECT release_review FROM nodes WHERE name = 'n0'")).one()
        assert not held and review is None
        head = ScriptDirectory(str(MIGRATIONS)).get_current_head()  # 0002, or a later revision
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        assert (
            compare_metadata(
                MigrationContext.configure(conn, opts={"include_schemas": False}), Base.metadata
            )
            == []
        )
    migrate(engine, schema=schema)  # idempotent
