"""Node services authenticate as services: a ``node_service`` token bound to its node, issued
and rotated by the operator, accepted by the routes the service calls and by none a human
admin's decision needs; an approval's label follows the caller's role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import coordinator.cli as coordinator_cli_module
from coordinator.cli import app as coordinator_cli
from coordinator.client import CoordinatorClient
from federation.api_client import read_token, write_token

from .conftest import Api
from .test_api import SPEC


def _service_token(api: Api, node: str) -> dict[str, Any]:
    r = api.client.post(f"/nodes/{node}/service-token", headers=api.h(api.operator))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _world(api: Api) -> dict[str, str]:
    tokens = {
        "admin0": api.node("n0", max_epsilon_per_job=3.0),
        "admin1": api.node("n1", max_epsilon_per_job=3.0),
        "researcher": api.principal("aki", "researcher"),
    }
    tokens["svc0"] = _service_token(api, "n0")["token"]
    return tokens


def _submit(api: Api, t: dict[str, str]) -> str:
    r = api.client.post("/jobs", json={"spec": SPEC}, headers=api.h(t["researcher"]))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _approvals(api: Api, job_id: str) -> dict[str, dict[str, Any]]:
    r = api.client.get("/audit/approvals", headers=api.h(api.operator))
    return {a["node"]: a for a in r.json() if a["job_id"] == job_id}


def test_service_token_polls_and_decides_by_policy_for_its_own_node_only(api: Api) -> None:
    t = _world(api)
    svc = api.h(t["svc0"])
    r = api.client.put("/nodes/n0/registration", json={"max_epsilon_per_job": 3.0}, headers=svc)
    assert r.status_code == 200, r.text
    job_id = _submit(api, t)
    jobs = api.client.get("/nodes/n0/jobs", headers=svc)
    assert jobs.status_code == 200 and [j["id"] for j in jobs.json()] == [job_id]
    r = api.client.post(
        f"/nodes/n0/jobs/{job_id}/decision", json={"outcome": "approve"}, headers=svc
    )
    assert r.status_code == 200, r.text
    assert (r.json()["source"], r.json()["status"]) == ("policy", "approved")
    for method, path, body in (
        ("GET", "/nodes/n1/jobs", None),
        ("PUT", "/nodes/n1/registration", {"max_epsilon_per_job": 3.0}),
        ("POST", f"/nodes/n1/jobs/{job_id}/decision", {"outcome": "approve"}),
        ("GET", "/nodes/n1/releases", None),
    ):
        r = api.client.request(method, path, json=body, headers=svc)
        assert r.status_code == 403, (path, r.text)
    assert _approvals(api, job_id)["n1"]["status"] == "pending"


def test_service_token_cannot_act_as_a_human_admin(api: Api) -> None:
    t = _world(api)
    svc = api.h(t["svc0"])
    job_id = _submit(api, t)
    r = api.client.post(
        f"/nodes/n0/jobs/{job_id}/decision",
        json={"outcome": "approve", "source": "admin"},
        headers=svc,
    )
    assert r.status_code == 403 and r.json()["field"] == "source", r.text
    assert _approvals(api, job_id)["n0"]["status"] == "pending"
    r = api.client.post(
        f"/nodes/n0/jobs/{job_id}/release", json={"decision": "release"}, headers=svc
    )
    assert r.status_code == 403, r.text
    for method, path in (("GET", "/principals"), ("POST", "/nodes/n0/service-token")):
        assert api.client.request(method, path, headers=svc).status_code == 403, path


def test_human_admin_cannot_pass_a_decision_off_as_the_policy(api: Api) -> None:
    t = _world(api)
    job_id = _submit(api, t)
    r = api.client.post(
        f"/nodes/n0/jobs/{job_id}/decision",
        json={"outcome": "approve", "source": "policy"},
        headers=api.h(t["admin0"]),
    )
    assert r.status_code == 403 and r.json()["field"] == "source", r.text
    assert "node's service credential" in r.json()["detail"]
    assert _approvals(api, job_id)["n0"]["status"] == "pending"
    r = api.client.post(  # deciding as themselves, the admin is labelled admin
        f"/nodes/n0/jobs/{job_id}/decision", json={"outcome": "approve"}, headers=api.h(t["admin0"])
    )
    assert r.status_code == 200, r.text
    assert _approvals(api, job_id)["n0"]["source"] == "admin"


#: Every route a node's service pushes to or polls: (method, path, body).
SERVICE_ROUTES = (
    ("PUT", "/nodes/n0/registration", {"max_epsilon_per_job": 3.0}),
    ("GET", "/nodes/n0/jobs", None),
    ("GET", "/nodes/n0/audit/state", None),
    ("POST", "/nodes/n0/audit/entries", {"start": 0, "entries": []}),  # (empty: 422)
    ("PUT", "/nodes/n0/audit/snapshot", {"head": None}),
)


def test_a_humans_token_is_refused_on_every_route_a_node_service_uses(api: Api) -> None:
    """The node's own admin (and the operator) get 403 JSON saying the route needs the
    node's service credential; nothing they sent is stored; the service token is served."""
    t = _world(api)
    job_id = _submit(api, t)
    for token in (t["admin0"], api.operator):
        for method, path, body in SERVICE_ROUTES:
            r = api.client.request(method, path, json=body, headers=api.h(token))
            assert r.status_code == 403, (path, r.text)
            answer = r.json()
            assert answer["code"] == "forbidden", answer
            assert "needs the node's service credential" in answer["detail"], answer
            assert "node-service-token" in answer["detail"], answer
    nodes = {n["name"]: n for n in api.client.get("/nodes", headers=api.h(api.operator)).json()}
    assert nodes["n0"]["max_epsilon_per_job"] == 3.0 and nodes["n0"]["last_seen_at"] is None
    for method, path, body in SERVICE_ROUTES:  # the service passes (an empty upload: 422)
        r = api.client.request(method, path, json=body, headers=api.h(t["svc0"]))
        assert r.status_code in (200, 422), (path, r.text)
    # the human routes stay the admin's: its budget, its held results, its decisions
    for path in ("/nodes/n0/budget", "/nodes/n0/releases"):
        assert api.client.get(path, headers=api.h(t["admin0"])).status_code == 200, path
    r = api.client.post(
        f"/nodes/n0/jobs/{job_id}/decision",
        json={"outcome": "reject", "reasons": [{"code": "admin_rejected", "message": "no"}]},
        headers=api.h(t["admin0"]),
    )
    assert r.status_code == 200 and r.json()["source"] == "admin", r.text


def test_rotated_out_service_token_gets_401(api: Api) -> None:
    t = _world(api)
    new = _service_token(api, "n0")
    assert api.client.get("/nodes/n0/jobs", headers=api.h(t["svc0"])).status_code == 401
    assert api.client.get("/nodes/n0/jobs", headers=api.h(new["token"])).status_code == 200
    services = [
        p
        for p in api.client.get("/principals", headers=api.h(api.operator)).json()
        if p["role"] == "node_service"
    ]
    assert [(p["name"], p["node"]) for p in services] == [("n0.service", "n0")]
    r = api.client.post("/nodes/n9/service-token", headers=api.h(api.operator))
    assert r.status_code == 404 and r.json()["field"] == "name", r.text


def test_cli_writes_the_service_token_0600_and_rotates_it(
    api: Api, tmp_path: Path, monkeypatch: Any
) -> None:
    _world(api)

    class _Client(CoordinatorClient):
        def close(self) -> None:  # the test's client outlives each command
            pass

    def client(url: str, token_file: Path | None) -> CoordinatorClient:
        assert token_file is not None
        return _Client(url, read_token(token_file, "--token-file"), client=api.client)

    monkeypatch.setattr(coordinator_cli_module, "_client", client)
    op_file = tmp_path / "op.token"
    write_token(op_file, api.operator)
    out = tmp_path / "svc" / "n0.token"
    runner = CliRunner()
    args = ["--token-file", str(op_file)]
    first = runner.invoke(coordinator_cli, ["node-service-token", "n0", "--out", str(out), *args])
    assert first.exit_code == 0, first.output
    assert out.stat().st_mode & 0o777 == 0o600
    token1 = out.read_text().strip()
    assert token1 not in first.output
    second = runner.invoke(
        coordinator_cli, ["node-add", "n0", "--service-token-out", str(out), *args]
    )
    assert second.exit_code == 0, second.output
    token2 = out.read_text().strip()
    assert token2 != token1
    assert api.client.get("/nodes/n0/jobs", headers=api.h(token1)).status_code == 401
    assert api.client.get("/nodes/n0/jobs", headers=api.h(token2)).status_code == 200


def test_node_admin_actions_go_with_the_admins_own_token(api: Api, tmp_path: Path) -> None:
    """A node service running on its service token still lets its human admin decide:
    the admin's actions go through a link carrying the admin's own token."""
    from fastapi.testclient import TestClient

    from hamanasu.demo import EXAMPLES
    from nodes.cli import init_node
    from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig, NodeServiceError

    t = _world(api)
    job_id = _submit(api, t)
    init_node(tmp_path / "n0", "n0", EXAMPLES / "policies" / "women-clinic.toml")
    cfg = NodeServiceConfig(
        name="n0", coordinator_url="http://testserver", state_dir=tmp_path / "n0"
    )

    def link(token: str) -> CoordinatorLink:
        return CoordinatorLink(TestClient(api.client.app, headers=api.h(token)), "n0")

    service_only = NodeService(cfg, link(t["svc0"]))
    try:
        service_only.reject(job_id, "not this year")
    except NodeServiceError as exc:
        assert "403" in str(exc) or "admin" in str(exc), exc
    else:
        raise AssertionError("a service token decided as the human admin")
    assert _approvals(api, job_id)["n0"]["status"] == "pending"

    both = NodeService(cfg, link(t["svc0"]), admin_link=link(t["admin0"]))
    both.reject(job_id, "not this year")
    n0 = _approvals(api, job_id)["n0"]
    assert (n0["status"], n0["source"]) == ("rejected", "admin")


def test_node_serve_with_a_humans_token_stops_at_start_in_one_line(
    api: Api, tmp_path: Path, monkeypatch: Any
) -> None:
    """An old node.toml naming the admin's token in token_file: `hamanasu node serve` stops
    before its first poll, with one line telling the admin to ask for a service token."""
    from fastapi.testclient import TestClient

    import nodes.approvals_cli as approvals_cli
    from hamanasu.demo import EXAMPLES
    from nodes.cli import app as node_cli
    from nodes.cli import init_node
    from nodes.service import CoordinatorLink

    t = _world(api)
    init_node(tmp_path / "state", "n0", EXAMPLES / "policies" / "women-clinic.toml")

    def connect(url: str, token: str, node: str, ca_file: Any = None) -> CoordinatorLink:
        return CoordinatorLink(TestClient(api.client.app, headers=api.h(token)), node)

    monkeypatch.setattr(approvals_cli.CoordinatorLink, "connect", staticmethod(connect))
    monkeypatch.setattr(approvals_cli, "install_stop_signals", lambda stop: stop.set())
    config = tmp_path / "node.toml"
    config.write_text(
        '[node]\nname = "n0"\ncoordinator_url = "http://testserver"\n'
        'state_dir = "state"\ntoken_file = "token"\n'
    )
    runner = CliRunner()
    for token, ok in ((t["admin0"], False), (t["svc0"], True)):
        write_token(tmp_path / "token", token)
        result = runner.invoke(node_cli, ["serve", "--config", str(config)])
        if ok:  # the service token starts (and, stopped at once, stops)
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: token_file: "), result.stderr
        assert "holds a node_admin token" in lines[0]
        assert "hamanasu coordinator node-service-token n0" in lines[0]
        assert token not in result.output
    nodes = {n["name"]: n for n in api.client.get("/nodes", headers=api.h(api.operator)).json()}
    assert nodes["n0"]["last_seen_at"] is None  # the refused start published nothing
