"""A job's requester is the organisation the operator registered, never what the spec claims.

A researcher of one university who writes another's name (or another type, a commercial
flag, an unregistered project) into ``[purpose]`` is refused with 422 naming the field and
nothing is stored; a spec without those claims is filled in by the coordinator, and the
node sees, and its policy evaluates, the vouched identity.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.api import bootstrap_operator, create_app
from federation.api_models import NodeJobView
from federation.spec import parse_job_spec
from policies import NodePolicy, PolicyState, evaluate

from .conftest import Api, fast_settings

SPEC = {
    "name": "lbw",
    "kind": "train",
    "features": ["age", "bmi"],
    "label": "low_birth_weight",
    "rounds": 1,
    "privacy": {"epsilon": 1.0},
    "min_nodes": 1,
}

#: A node that trusts Hokkaido University only, and approves its jobs automatically.
TRUSTING = NodePolicy.model_validate(
    {
        "requesters": {"allowed": ["hokkaido-university"]},
        "approval": {"mode": "automatic_for", "automatic_for": ["hokkaido-university"]},
        "domains": {"births": {"features": "*"}},
        "budget": {"births": {"epsilon": 10.0, "delta": 1e-4, "period": "year"}},
    }
)


@pytest.fixture
def world(tmp_path: Path):
    app = create_app(fast_settings(tmp_path / "c"))
    with TestClient(app) as client:
        api = Api(client, bootstrap_operator(app.state.store).token)
        api.node("n0")
        api.organisation("hokkaido-university", "academic", ("iwamizawa-mch-2017",))
        api.organisation("sapporo-medical", "academic", ("cohort-a", "cohort-b"))
        api.organisation("dairy-company", "commercial", ("dairy-rnd-2026",))
        tokens = {
            "sapporo": api.principal("sato", "researcher", organisation="sapporo-medical"),
            "dairy": api.principal("dan", "researcher", organisation="dairy-company"),
            "service": api.service("n0"),  # the node's service polls its jobs
        }
        yield api, tokens


def _submit(api: Api, token: str, purpose: dict) -> object:
    return api.client.post(
        "/jobs", json={"spec": {**SPEC, "purpose": purpose}}, headers=api.h(token)
    )


def _jobs(api: Api) -> int:
    return len(api.client.get("/jobs", headers=api.h(api.operator)).json())


@pytest.mark.parametrize(
    ("claim", "field"),
    [
        ({"requester": "hokkaido-university", "project": "cohort-a"}, "purpose.requester"),
        ({"requester_type": "public", "project": "cohort-a"}, "purpose.requester_type"),
        ({"commercial": True, "project": "cohort-a"}, "purpose.commercial"),
        ({"project": "iwamizawa-mch-2017"}, "purpose.project"),
        ({}, "purpose.project"),  # two registered projects: the spec must name one
    ],
)
def test_submit_claiming_another_identity_422_names_the_field_stores_nothing(
    world, claim: dict, field: str
) -> None:
    api, t = world
    r = _submit(api, t["sapporo"], claim)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert _jobs(api) == 0


def _node_views(api: Api, service: str) -> dict[str, NodeJobView]:
    views = api.client.get("/nodes/n0/jobs", headers=api.h(service)).json()
    return {v["owner"]: NodeJobView.model_validate(v) for v in views}


def _outcome(view: NodeJobView) -> tuple[str, set[str]]:
    job = parse_job_spec(view.spec).to_policy_request(view.id)
    decision = evaluate(job, TRUSTING, PolicyState(now=datetime.now(UTC)))
    return decision.outcome, {r.code for r in decision.reasons}


def test_node_sees_and_its_policy_evaluates_the_vouched_identity(world) -> None:
    api, t = world
    hokudai = api.principal("aki", "researcher", organisation="hokkaido-university")
    assert _submit(api, hokudai, {}).status_code == 201
    r = _submit(api, t["sapporo"], {"project": "cohort-b", "requester": "sapporo-medical"})
    assert r.status_code == 201, r.text
    views = _node_views(api, t["service"])
    purpose = views["sato"].spec["purpose"]
    assert purpose["requester"] == "sapporo-medical"
    assert purpose["requester_type"] == "academic" and purpose["commercial"] is False
    assert purpose["project"] == "cohort-b"
    assert views["aki"].spec["purpose"]["requester"] == "hokkaido-university"
    # the node trusting Hokkaido University auto-approves its researcher only
    assert _outcome(views["aki"]) == ("allow", set())
    outcome, codes = _outcome(views["sato"])
    assert outcome == "deny" and "requester_not_allowed" in codes


def test_commercial_organisation_is_vouched_commercial(world) -> None:
    api, t = world
    r = _submit(api, t["dairy"], {"commercial": False})
    assert r.status_code == 422 and r.json()["field"] == "purpose.commercial"
    assert _submit(api, t["dairy"], {}).status_code == 201
    purpose = _node_views(api, t["service"])["dan"].spec["purpose"]
    assert purpose["requester"] == "dairy-company"
    assert purpose["requester_type"] == "commercial" and purpose["commercial"] is True
    assert purpose["project"] == "dairy-rnd-2026"


def test_researcher_without_organisation_403_until_the_operator_gives_one(world) -> None:
    api, t = world
    r = api.client.post(
        "/principals", json={"name": "old", "role": "researcher"}, headers=api.h(api.operator)
    )
    token, pid = r.json()["token"]["token"], r.json()["principal"]["id"]
    r = _submit(api, token, {})
    assert r.status_code == 403 and r.json()["field"] == "organisation"
    assert _jobs(api) == 0
    put = api.client.put(
        f"/principals/{pid}/organisation",
        json={"organisation": "hokkaido-university"},
        headers=api.h(api.operator),
    )
    assert put.status_code == 200 and put.json()["organisation"] == "hokkaido-university"
    assert _submit(api, token, {}).status_code == 201
    moved = api.client.put(
        f"/principals/{pid}/organisation",
        json={"organisation": "sapporo-medical"},
        headers=api.h(api.operator),
    )
    assert moved.status_code == 409 and moved.json()["field"] == "organisation"


def test_organisation_registration_errors(world) -> None:
    api, t = world
    op = api.h(api.operator)
    body = {"name": "x-uni", "type": "academic", "projects": [{"name": "p"}]}
    assert (
        api.client.post("/organisations", json=body, headers=api.h(t["sapporo"])).status_code == 403
    )
    for bad, field in (
        ({**body, "type": "ngo"}, "type"),
        ({**body, "projects": []}, "projects"),
        ({**body, "projects": [{"name": "p"}, {"name": "p"}]}, "projects"),
    ):
        r = api.client.post("/organisations", json=bad, headers=op)
        assert r.status_code == 422 and field in r.text, r.text
    dup = {**body, "name": "sapporo-medical"}
    assert api.client.post("/organisations", json=dup, headers=op).status_code == 409
    for principal, status in (
        ({"name": "a1", "role": "auditor", "organisation": "sapporo-medical"}, 422),
        ({"name": "r1", "role": "researcher", "organisation": "nowhere"}, 404),
    ):
        r = api.client.post("/principals", json=principal, headers=op)
        assert r.status_code == status and "organisation" in r.text, r.text
