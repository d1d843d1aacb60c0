"""Release review on the node side: the node publishes its policy's ``[release] review`` with its
caps, and its admins' ``release`` / ``withhold`` (service and ``hamanasu node approvals``) post
the decision to the coordinator and append ``result.released`` / ``result.withheld`` to the
node's signed ledger: job id, reviewer principal id (no name, no e-mail), decision, reason,
result hash."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from coordinator.api import bootstrap_operator, create_app
from coordinator.runner import RoundProgress, RunResult
from coordinator.settings import load_settings
from federation.spec import JobSpec
from nodes import approvals_cli
from nodes.cli import init_node
from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig, NodeServiceError
from policies import ReleaseRules, default_policy, policy_to_toml

SPEC = {
    "kind": "train",
    "name": "t",
    "features": ["maternal_age", "parity"],
    "label": "lbw",
    "rounds": 1,
    "min_nodes": 2,
    "privacy": {"epsilon": 1.0},
}


class InstantRunner:
    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        return RunResult(
            "succeeded",
            "done",
            report={"auc": 0.7},
            model={"parameters": [[0.1]]},
            epsilon_by_node={n: 0.5 for n in nodes},
        )


@pytest.fixture
def setup(tmp_path: Path, university: dict):
    policy = default_policy().model_copy(update={"release": ReleaseRules(review="two_reviewers")})
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy_to_toml(policy), encoding="utf-8")
    state = tmp_path / "n0-state"
    init_node(state, "n0", policy_file)

    app = create_app(load_settings(data_dir=tmp_path / "coord"), InstantRunner())
    op = bootstrap_operator(app.state.store).token
    with TestClient(app) as http:
        h = {"Authorization": f"Bearer {op}"}
        tokens = {}
        for n in ("n0", "n1"):
            assert http.post("/nodes", json={"name": n}, headers=h).status_code == 201
        http.post("/organisations", json=university, headers=h)
        for who, role, node in (
            ("n0-admin", "node_admin", "n0"),
            ("n0-second", "node_admin", "n0"),
            ("n1-admin", "node_admin", "n1"),
            ("aki", "researcher", None),
        ):
            org = university["name"] if role == "researcher" else None
            body = {"name": who, "role": role, "node": node, "organisation": org}
            r = http.post("/principals", json=body, headers=h)
            tokens[who] = (r.json()["principal"]["id"], r.json()["token"]["token"])
        svc = http.post("/nodes/n0/service-token", headers=h).json()["token"]
        cfg = NodeServiceConfig(name="n0", coordinator_url="http://testserver", state_dir=state)

        def link(token: str) -> CoordinatorLink:
            return CoordinatorLink(
                TestClient(app, headers={"Authorization": f"Bearer {token}"}), "n0"
            )

        def service(who: str) -> NodeService:
            """n0's service (its own token) with ``who`` as the admin reviewing results."""
            return NodeService(cfg, link(svc), admin_link=link(tokens[who][1]))

        def run_job() -> str:
            rh = {"Authorization": f"Bearer {tokens['aki'][1]}"}
            job = http.post("/jobs", json={"spec": SPEC}, headers=rh).json()
            for n, who in (("n0", "n0-admin"), ("n1", "n1-admin")):
                http.post(
                    f"/nodes/{n}/jobs/{job['id']}/decision",
                    json={"outcome": "approve"},
                    headers={"Authorization": f"Bearer {tokens[who][1]}"},
                )
            app.state.lifecycle.wait(job["id"], timeout=10)
            return str(job["id"])

        yield http, tokens, service, run_job


def _entries(service: NodeService, kind: str) -> list[dict]:
    return [e.payload for e in service.point.ledger().entries(kind=kind)]


def test_release_decisions_are_written_to_the_node_ledger(setup) -> None:
    http, tokens, service, run_job = setup
    first, second = service("n0-admin"), service("n0-second")
    first.poll_once()  # publishes caps, including the policy's release review
    node = next(
        n
        for n in http.get("/nodes", headers={"Authorization": f"Bearer {tokens['aki'][1]}"}).json()
        if n["name"] == "n0"
    )
    assert node["release_review"] == "two_reviewers"
    job_id = run_job()
    researcher = {"Authorization": f"Bearer {tokens['aki'][1]}"}
    assert http.get(f"/jobs/{job_id}/result", headers=researcher).status_code == 409

    [view] = first.held()
    assert view.job_id == job_id and view.reviews_needed == 2
    first.review_result(job_id, "release", "aggregate only, checked")
    with pytest.raises(NodeServiceError, match="409"):  # the same reviewer twice
        first.review_result(job_id, "release")
    assert len(_entries(first, "result.released")) == 1
    assert http.get(f"/jobs/{job_id}/result", headers=researcher).status_code == 409
    out = second.review_result(job_id, "release")
    assert out.status == "released"
    assert http.get(f"/jobs/{job_id}/result", headers=researcher).status_code == 200

    entries = _entries(first, "result.released")
    assert [e["reviewer"] for e in entries] == [tokens["n0-admin"][0], tokens["n0-second"][0]]
    assert all(
        e["job_id"] == job_id
        and e["decision"] == "release"
        and e["result_hash"] == view.result_hash
        for e in entries
    )
    assert entries[0]["reason"] == "aggregate only, checked"
    assert not any(
        "n0-admin" in str(e) or "n0-second" in str(e) for e in entries
    )  # ids, never names


def test_withhold_through_the_cli_writes_the_ledger_and_keeps_the_result_held(
    setup, monkeypatch
) -> None:
    http, tokens, service, run_job = setup
    admin = service("n0-admin")
    admin.poll_once()
    job_id = run_job()
    monkeypatch.setattr(approvals_cli, "_service", lambda config: admin)
    cli = CliRunner()
    res = cli.invoke(approvals_cli.app, ["held", "--config", "node.toml"])
    assert res.exit_code == 0 and job_id in res.stdout
    # A reason the ledger refuses (an e-mail address) is refused before anything is posted.
    res = cli.invoke(
        approvals_cli.app, ["withhold", job_id, "--config", "node.toml", "--reason", "ask a@b.org"]
    )
    assert res.exit_code == 2 and "e-mail" in res.output
    assert admin.held()[0].decisions == []
    res = cli.invoke(
        approvals_cli.app, ["withhold", job_id, "--config", "node.toml", "--reason", "small cell"]
    )
    assert res.exit_code == 0, res.output
    [entry] = _entries(admin, "result.withheld")
    assert entry == {
        "job_id": job_id,
        "reviewer": tokens["n0-admin"][0],
        "decision": "withhold",
        "reason": "small cell",
        "result_hash": entry["result_hash"],
    }
    assert len(entry["result_hash"]) == 64
    r = http.get(f"/jobs/{job_id}/result", headers={"Authorization": f"Bearer {tokens['aki'][1]}"})
    assert r.status_code == 409 and "small cell" in r.json()["detail"]
    res = cli.invoke(approvals_cli.app, ["release", job_id, "--config", "node.toml"])
    assert res.exit_code == 2 and "no result" in res.output  # withheld: nothing waits any more
    assert _entries(admin, "result.released") == []
