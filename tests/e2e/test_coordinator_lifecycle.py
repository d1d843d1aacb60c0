"""The whole job lifecycle over HTTP, in process: researcher submits, node services decide by
their policies, the EmbeddedRunner trains on the scenario's two maternity nodes, the
researcher fetches the result and ε per node; auditors see approvals and ε."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator.api import bootstrap_operator, create_app
from coordinator.client import CoordinatorClient
from coordinator.settings import load_settings
from hamanasu.demo import EXAMPLES, MATERNITY
from hamanasu.local_runner import EmbeddedRunner, LocalNode
from nodes.cli import import_consents, init_node
from nodes.enforcement import EnforcementPoint
from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodes.scenario import generate

    out = tmp_path_factory.mktemp("scenario")
    generate("iwamizawa", out / "data", years=[2019])
    return out


def _nodes(root: Path, scenario: Path) -> dict[str, LocalNode]:
    out = {}
    for name in MATERNITY:
        state = root / "nodes" / name
        shutil.rmtree(state, ignore_errors=True)
        init_node(state, name, EXAMPLES / "policies" / f"{name}.toml")
        import_consents(EnforcementPoint(name, state), scenario / "data" / name / "consents.csv")
        out[name] = LocalNode(name, scenario / "data" / name, state)
    return out


SPEC = {
    "kind": "train",
    "name": "lbw-mini",
    "domain": "births",
    "features": ["maternal_age", "parity", "bmi_pre", "smoking"],
    "label": "lbw",
    "rounds": 2,
    "min_nodes": 2,
    "nodes": list(MATERNITY),
    "purpose": {
        "duo": ["HMB"],
        "project": "t",
        "requester": "hokkaido-university",
        "requester_type": "academic",
    },
    "privacy": {"epsilon": 2.0, "delta": 1e-5},
    "training": {"batch_size": 512, "learning_rate": 4.0},
}


@pytest.mark.slow
def test_run_job_lifecycle_over_http(tmp_path: Path, scenario: Path) -> None:
    local = _nodes(tmp_path, scenario)
    app = create_app(load_settings(data_dir=tmp_path / "coord"), EmbeddedRunner(local))
    op = bootstrap_operator(app.state.store).token
    with TestClient(app) as http:
        oper = CoordinatorClient("", op, client=http)
        admins = {}
        for name in MATERNITY:
            oper.register_node(name)
            admins[name] = oper.create_principal(f"{name}-admin", "node_admin", name).token.token
        oper.register_organisation("hokkaido-university", "academic", {"t": False})
        researcher = oper.create_principal("aki", "researcher", None, "hokkaido-university")
        researcher = researcher.token.token
        auditor = oper.create_principal("audit", "auditor").token.token

        services = {}
        for name, node in local.items():
            cfg = NodeServiceConfig(
                name=name,
                coordinator_url="http://testserver",
                state_dir=node.state_dir,
                data_dir=node.data,
            )

            def link(token: str, node: str = name) -> CoordinatorLink:
                return CoordinatorLink(
                    TestClient(app, headers={"Authorization": f"Bearer {token}"}), node
                )

            # the service polls and pushes with its own token; its admin acts with theirs
            service_token = oper.issue_service_token(name).token
            services[name] = NodeService(cfg, link(service_token), admin_link=link(admins[name]))
            services[name].poll_once()  # publishes caps (ε cap 3.0)

        res = CoordinatorClient("", researcher, client=TestClient(app))
        # ε above every node's published cap: 422 naming the field, nothing stored.
        with pytest.raises(Exception) as err:
            res.submit({**SPEC, "privacy": {"epsilon": 5.0}})
        assert getattr(err.value, "status", None) == 422 and err.value.field == "privacy.epsilon"
        assert res.jobs() == []

        job = res.submit(SPEC)
        assert job.state == "awaiting_approval"
        decided = {name: s.poll_once() for name, s in services.items()}
        # The hospital approves automatically; the clinic approves Hokkaido University's jobs.
        assert decided == {n: {job.id: "approve"} for n in MATERNITY}
        app.state.lifecycle.wait(job.id, timeout=240)
        done = res.status(job.id)
        assert done.state == "succeeded", done.reason
        assert done.round == 2 and done.started_at and done.finished_at
        states = [e.state for e in res.events(job.id)]
        assert states[:4] == ["submitted", "awaiting_approval", "approved", "running"]
        assert states[-1] == "succeeded"
        result = res.result(job.id)
        assert set(result.epsilon_by_node) == set(MATERNITY)
        assert all(0 < e <= 2.0 for e in result.epsilon_by_node.values())
        assert result.model and len(result.model["parameters"]) >= 1
        out = res.download(job.id, tmp_path / "results")
        assert (tmp_path / "results" / "plot.png").read_bytes()[:4] == b"\x89PNG" and len(out) == 3

        # Each node charged each round once (the final evaluation's noisy release too), and
        # its reservation is released.
        for name, node in local.items():
            budget = EnforcementPoint(name, node.state_dir).budget()
            assert [c.round for c in budget.charges(job.id)] == [1, 2, 3]
            assert budget.reservation(job.id).status == "released"

        aud = CoordinatorClient("", auditor, client=TestClient(app))
        assert {a.status for a in aud.approvals(job.id)} == {"approved"}
        eps = {e.node: e.epsilon_total for e in aud.epsilon_by_node()}
        assert eps == pytest.approx(result.epsilon_by_node)
