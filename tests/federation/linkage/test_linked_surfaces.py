"""A linked job everywhere a user looks: the Python client and the coordinator API submit and
follow it; node admins see what linkage reveals (coordinator console, node console, CLI)
before approving; the researcher's summary names the cohort and who gave which columns."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from coordinator.api import bootstrap_operator, create_app
from coordinator.client import CoordinatorClient
from coordinator.settings import load_settings
from hamanasu.client import Client
from hamanasu.local_runner import EmbeddedRunner
from nodes import approvals_cli
from nodes.admin_actions import NodeAdmin
from nodes.admin_api import create_admin_app
from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig
from tests.federation.linkage.linked_nodes import make_node

POLICY = """
min_cohort = 20
min_cell_count = 5
require_dp = false
[purposes]
allowed = ["HMB"]
[jobs]
kinds = ["stats", "glm"]
[domains.births]
features = "*"
[approval]
mode = "{mode}"
[linkage]
allowed = true
"""

SPEC = {
    "kind": "stats", "name": "dairy-by-group",
    "purpose": {"duo": ["HMB"], "project": "p", "requester": "uni",
                "requester_type": "academic"},
    "stats": {"measures": ["count", "mean"], "group_by": ["bw_group"],
              "levels": {"bw_group": ["low", "high"]}, "variables": ["dairy_g"],
              "min_cell_count": 5},
    "link": {"key": "subject"},
}
REVEALS_EN = "This node learns which of its own residents are in the linked cohort"
REVEALS_JA = "連結コホートに含まれる者を知り"


def _login(client: TestClient, token: str) -> None:
    nonce = re.search(r'name="nonce" value="([^"]+)"', client.get("/console/login").text)
    r = client.post("/console/login", data={"token": token, "nonce": nonce.group(1)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text


def test_a_linked_job_is_submitted_followed_shown_and_its_linkage_stated_to_admins(
        tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(8)
    ids = [f"{i:032x}" for i in range(1, 61)]
    hosp = pd.DataFrame({"subject": ids, "bw_group": rng.choice(["low", "high"], 60)})
    dairy = pd.DataFrame({"subject": ids[:50], "dairy_g": rng.uniform(0, 500, 50)})
    local = {"hospital": make_node(tmp_path, "hospital", hosp, POLICY.format(mode="automatic")),
             "dairy": make_node(tmp_path, "dairy", dairy, POLICY.format(mode="manual"))}
    app = create_app(load_settings(data_dir=tmp_path / "coord"), EmbeddedRunner(local))
    op = bootstrap_operator(app.state.store).token
    with TestClient(app) as http:
        oper = CoordinatorClient("", op, client=http)
        admins = {}
        for name in local:
            oper.register_node(name)
            admins[name] = oper.create_principal(f"{name}-admin", "node_admin", name).token.token
        oper.register_organisation("uni", "academic", {"p": False})
        researcher = oper.create_principal("aki", "researcher", None, "uni").token.token
        services = {}
        for name, node in local.items():
            cfg = NodeServiceConfig(name=name, coordinator_url="http://testserver",
                                    state_dir=node.state_dir, data_dir=node.data)

            def link(token: str, node: str = name) -> CoordinatorLink:
                return CoordinatorLink(
                    TestClient(app, headers={"Authorization": f"Bearer {token}"}), node)

            # the service polls with its own token; its admin acts with theirs
            service_token = oper.issue_service_token(name).token
            services[name] = NodeService(cfg, link(service_token), admin_link=link(admins[name]))
            services[name].poll_once()

        client = Client("http://testserver", token=researcher)
        client.api = CoordinatorClient("", researcher, client=TestClient(app))
        job_id = client.submit(SPEC)
        assert services["hospital"].poll_once() == {job_id: "approve"}
        services["dairy"].poll_once()  # manual approval: it waits for the dairy's admin

        # What linkage reveals, before approving: the node's own view, CLI and console ...
        (waiting,) = NodeAdmin(services["dairy"]).waiting()
        assert waiting.link_key == "subject" and REVEALS_EN in (waiting.linkage or "")
        monkeypatch.setattr(approvals_cli, "_service", lambda _config: services["dairy"])
        listed = CliRunner().invoke(approvals_cli.app, ["list", "--config", "node.toml"])
        assert listed.exit_code == 0 and "what linkage reveals:" in listed.output
        assert REVEALS_EN in listed.output
        node_console = TestClient(create_admin_app(services["dairy"], token=admins["dairy"]))
        _login(node_console, admins["dairy"])
        page = node_console.get("/console/jobs").text
        assert 'class="linkage"' in page and REVEALS_EN in page
        assert REVEALS_JA in node_console.get("/console/jobs?lang=ja").text
        # ... and the coordinator's console, where a node admin decides with their own token.
        coord_console = TestClient(app)
        _login(coord_console, admins["dairy"])
        page = coord_console.get("/console/node").text
        assert job_id in page and 'class="linkage"' in page and REVEALS_EN in page

        NodeAdmin(services["dairy"]).approve(job_id, "linkage reviewed")
        app.state.lifecycle.wait(job_id, timeout=600)
        done = client.wait(job_id, progress=False)
        assert done.state == "succeeded", done.reason
        states = [e.state for e in client.api.events(job_id)]
        assert states[:3] == ["submitted", "awaiting_approval", "approved"]
        assert states[-1] == "succeeded"
        results = client.results(job_id)
        assert results.report["linked_n"] == 50
        assert results.report["holders"] == {"hospital": ["bw_group"], "dairy": ["dairy_g"]}
        assert not results.cells.empty
        assert "linked cohort of 50 residents (hospital: bw_group; dairy: dairy_g)" in (
            results.summary())
    # A job without [link] states nothing about linkage.
    assert NodeAdmin(services["dairy"]).waiting() == []
