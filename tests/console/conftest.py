"""Console test fixtures: a coordinator with a scripted runner, two nodes, a principal per role;
optionally, city-hospital's node state (key, policy, 60 consents, a budget reservation and
charge) pushed as the node service does, so the auditor's ledger views have something to show."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from coordinator.api import bootstrap_operator, create_app
from coordinator.runner import RoundProgress, RunResult
from coordinator.schemas import NodeCreate, OrganisationCreate, PrincipalCreate
from coordinator.settings import load_settings
from federation.api_models import NodeRegistration
from federation.spec import JobSpec

NODE_POLICY = """\
min_cohort = 20
min_cell_count = 10
max_epsilon_per_job = 3.0
require_dp = true

[purposes]
allowed = ["GRU", "HMB"]

[domains.births]
features = "*"

[budget.births]
epsilon = 10.0
delta = 1e-4
period = "year"

[approval]
mode = "manual"
"""

COLUMNS = ["maternal_age", "parity", "bmi_pre", "smoking", "lbw"]

SPEC_TOML = """\
kind = "train"
name = "lbw-console"
domain = "births"
features = ["maternal_age", "parity", "bmi_pre", "smoking"]
label = "lbw"
rounds = 3
min_nodes = 1
nodes = ["city-hospital"]

[purpose]
duo = ["HMB"]
project = "console-test"
requester = "hokkaido-university"
requester_type = "academic"

[privacy]
epsilon = 2.0
delta = 1e-5
"""


class ScriptedRunner:
    """Reports ``rounds`` rounds with made-up metrics, ``delay`` seconds apart, then succeeds."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay

    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        rounds = []
        for k in range(1, job.rounds + 1):
            time.sleep(self.delay)
            metrics = {"auc": 0.6 + 0.05 * k, "log_loss": 0.7 - 0.05 * k}
            rounds.append({"round": k, "metrics": metrics})
            on_progress(RoundProgress(k, job.rounds, metrics))
        return RunResult(
            "succeeded",
            f"{job.rounds} round(s) done",
            report={"rounds": rounds},
            model={"parameters": [[0.1, 0.2]]},
            epsilon_by_node={n: 1.5 for n in nodes},
            plot_png=b"\x89PNG\r\n\x1a\n",
        )


def node_state(folder: Path) -> Any:
    """city-hospital's node state: key, policy, 60 consents (40 GRU, 12 HMB only, 8 deny), a
    reservation of ε 2 on births with a charge of ε 0.5, and one released job that spent ε 1."""
    from consent.model import Consent, Provision
    from nodes.cli import init_node
    from nodes.enforcement import EnforcementPoint

    policy = folder.parent / "city-hospital-policy.toml"
    policy.write_text(NODE_POLICY, encoding="utf-8")
    init_node(folder, "city-hospital", policy)
    point = EnforcementPoint("city-hospital", folder)
    start = datetime.now(UTC) - timedelta(days=30)
    consents = []
    for i in range(60):
        purposes = ("GRU",) if i < 40 else ("HMB",) if i < 52 else ()
        consents.append(
            Consent(
                id=f"c-{i:03d}",
                subject=f"s{i:03d}",
                status="active",
                decision="deny",
                provisions=(Provision(purposes=purposes),) if purposes else (),
                recorded_at=start + timedelta(hours=i),
            )
        )
    point.registry().import_consents(consents, "console-test", point.ledger())
    budget = point.budget()
    now = datetime.now(UTC)
    budget.reserve("done-job", "births", 1.0, 1e-6, now)
    budget.charge("done-job", 0, {"type": "pure", "epsilon": 1.0}, at=now)
    budget.release("done-job", "finished", now)
    budget.reserve("live-job", "births", 2.0, 1e-6, now)
    budget.charge("live-job", 0, {"type": "pure", "epsilon": 0.5}, at=now)
    return point


def push_audit(app: FastAPI, token: str, point: Any) -> Any:
    """Push the node's audit snapshot as its service does on every poll; return the receipt."""
    from fastapi.testclient import TestClient

    from nodes.audit_publish import push_audit_snapshot

    def check(response: Any) -> Any:
        assert response.status_code < 400, response.text
        return response.json()

    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    return push_audit_snapshot(client, point.node, point, check)


def build_world(
    data_dir: Path, delay: float = 0.3, audit: bool = False
) -> tuple[FastAPI, dict[str, str]]:
    """The app and a token per role: researcher, other researcher, node admin, auditor, operator.

    With ``audit``, city-hospital's node state (:func:`node_state`) is made beside
    ``data_dir``, its ledger key registered and its audit snapshot pushed; ``app.state``
    then holds ``console_test_point``.
    """
    app = create_app(load_settings(data_dir=data_dir), ScriptedRunner(delay))
    store = app.state.store
    tokens: dict[str, Any] = {"operator": bootstrap_operator(store).token}
    for name in ("city-hospital", "women-clinic"):
        store.register_node(NodeCreate(name=name))
        store.publish_node(
            name, NodeRegistration(max_epsilon_per_job=3.0, domains={"births": COLUMNS})
        )
    tokens["node_admin"] = store.create_principal(
        PrincipalCreate(name="hospital-admin", role="node_admin", node="city-hospital")
    )[1].token
    store.register_organisation(
        OrganisationCreate(
            name="hokkaido-university", type="academic", projects=[{"name": "console-test"}]
        )
    )
    for key, name in (("researcher", "aki"), ("other", "ren")):
        tokens[key] = store.create_principal(
            PrincipalCreate(name=name, role="researcher", organisation="hokkaido-university")
        )[1].token
    tokens["auditor"] = store.create_principal(PrincipalCreate(name="audit", role="auditor"))[
        1
    ].token
    if audit:
        point = node_state(data_dir.parent / "city-hospital-node")
        store.publish_node(
            "city-hospital",
            NodeRegistration(
                max_epsilon_per_job=3.0,
                domains={"births": COLUMNS},
                public_key_pem=point.state.public_key_path.read_text(encoding="utf-8"),
            ),
        )
        tokens["node_service"] = store.issue_service_token("city-hospital").token
        receipt = push_audit(app, tokens["node_service"], point)  # as the node's service
        assert receipt.status == "verified", receipt
        app.state.console_test_point = point
    return app, tokens


@pytest.fixture(scope="session")
def spec_toml() -> str:
    """A valid job spec (TOML) the console tests submit."""
    return SPEC_TOML


@pytest.fixture(scope="session")
def world_factory() -> Callable[..., tuple[FastAPI, dict[str, str]]]:
    """``build_world(data_dir, delay)``: the app and a token per role."""
    return build_world
