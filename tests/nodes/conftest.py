"""Fixtures of the node admin tests: a node service linked to a real in-process coordinator,
and its admin app.

The node ``city-hospital`` has the Iwamizawa scenario's data and consents for 2019 and a
policy that waits for its admin (``[approval] mode = "manual"``, optionally a release
review); the coordinator runs approved jobs with ``InstantRunner`` (or holds them).
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from coordinator.api import bootstrap_operator, create_app
from coordinator.runner import RoundProgress, RunResult
from coordinator.settings import load_settings
from federation.spec import JobSpec
from nodes.admin_api import create_admin_app
from nodes.cli import import_consents, init_node
from nodes.enforcement import EnforcementPoint
from nodes.scenario.generator import generate
from nodes.service import CoordinatorLink, NodeService, NodeServiceConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "iwamizawa"
#: The organisation test researchers belong to (the example specs' requester and project).
UNIVERSITY = {
    "name": "hokkaido-university",
    "type": "academic",
    "projects": [{"name": "iwamizawa-mch-2017"}],
}
NODE = "city-hospital"


@pytest.fixture
def university() -> dict[str, object]:
    """The organisation body to register for test researchers (``POST /organisations``)."""
    return UNIVERSITY


class InstantRunner:
    """Finishes every job at once with one round and 0.5 ε per node."""

    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[RoundProgress], None],
        cancelled: threading.Event,
    ) -> RunResult:
        on_progress(RoundProgress(1, 1, {"auc": 0.7}))
        return RunResult(
            "succeeded",
            "done",
            report={"auc": 0.7},
            model={"parameters": [[0.1]]},
            epsilon_by_node={n: 0.5 for n in nodes},
        )


def manual_policy(tmp: Path, release_review: str = "none") -> Path:
    """The city hospital's policy with manual approval (and a release review)."""
    text = (EXAMPLES / "policies" / "city-hospital.toml").read_text(encoding="utf-8")
    text = text.replace('mode = "automatic"', 'mode = "manual"')
    text += f'\n[release]\nreview = "{release_review}"\n'
    path = tmp / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class World:
    """The coordinator, the node service and its admin app, and helpers."""

    coordinator: FastAPI
    http: TestClient
    tokens: dict[str, str]
    service: NodeService
    admin_app: FastAPI
    api: TestClient
    point: EnforcementPoint

    def h(self, who: str = "node_admin") -> dict[str, str]:
        """Bearer headers for ``who``."""
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def submit(self, epsilon: float = 3.0, **changes: Any) -> str:
        """Submit the low-birth-weight model job targeting this node; return its id."""
        spec = tomllib.loads((EXAMPLES / "lbw_model.toml").read_text(encoding="utf-8"))
        spec["privacy"]["epsilon"] = epsilon
        spec.update(nodes=[NODE], min_nodes=1, **changes)
        r = self.http.post("/jobs", json={"spec": spec}, headers=self.h("researcher"))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def approval(self, job_id: str) -> Any:
        """This node's approval of ``job_id`` as the coordinator stores it."""
        store = self.coordinator.state.store
        return next(a for a in store.approvals(job_id) if a.node == NODE)


def build_world(
    tmp: Path, scenario: Path | None, release_review: str = "none", runner: Any = None
) -> tuple[World, TestClient]:
    """Build the world (the caller enters and exits the returned coordinator TestClient)."""
    state = tmp / "node-state"
    init_node(state, NODE, manual_policy(tmp, release_review))
    point = EnforcementPoint(NODE, state)
    if scenario is not None:
        import_consents(point, scenario / NODE / "consents.csv")
    coordinator = create_app(load_settings(data_dir=tmp / "coord"), runner or InstantRunner())
    op = bootstrap_operator(coordinator.state.store).token
    http = TestClient(coordinator)
    oh = {"Authorization": f"Bearer {op}"}
    tokens = {"operator": op}
    for n in (NODE, "women-clinic"):
        assert http.post("/nodes", json={"name": n}, headers=oh).status_code == 201
    assert http.post("/organisations", json=UNIVERSITY, headers=oh).status_code == 201
    for who, role, node in (("node_admin", "node_admin", NODE), ("researcher", "researcher", None)):
        org = UNIVERSITY["name"] if role == "researcher" else None
        body = {"name": who, "role": role, "node": node, "organisation": org}
        r = http.post("/principals", json=body, headers=oh)
        assert r.status_code == 201, r.text
        tokens[who] = r.json()["token"]["token"]
    cfg = NodeServiceConfig(
        name=NODE,
        coordinator_url="http://testserver",
        state_dir=state,
        data_dir=scenario / NODE if scenario is not None else None,
    )
    r = http.post(f"/nodes/{NODE}/service-token", headers=oh)
    assert r.status_code == 201, r.text
    tokens["node_service"] = r.json()["token"]

    def link(who: str) -> CoordinatorLink:
        bearer = {"Authorization": f"Bearer {tokens[who]}"}
        return CoordinatorLink(TestClient(coordinator, headers=bearer), NODE)

    # the service polls and pushes with its own token; its admin decides with theirs
    service = NodeService(cfg, link("node_service"), admin_link=link("node_admin"))
    admin_app = create_admin_app(service, lambda: {"running": True, "superlink": "127.0.0.1:1"})
    world = World(coordinator, http, tokens, service, admin_app, TestClient(admin_app), point)
    return world, http


@pytest.fixture(scope="session")
def node_scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Iwamizawa scenario's data and consents for 2019 (generated once per session)."""
    out = tmp_path_factory.mktemp("admin-scenario")
    generate("iwamizawa", out, seed=5, years=[2019])
    return out


@pytest.fixture
def make_admin_world(tmp_path: Path, node_scenario: Path) -> Iterator[Callable[..., World]]:
    """``make(release_review="none", runner=None)``: a world; closed after the test."""
    opened: list[TestClient] = []

    def make(release_review: str = "none", runner: Any = None) -> World:
        world, http = build_world(tmp_path, node_scenario, release_review, runner)
        http.__enter__()
        opened.append(http)
        return world

    yield make
    for http in opened:
        http.__exit__(None, None, None)


@pytest.fixture
def admin_world(make_admin_world: Callable[..., World]) -> World:
    """A world with a manual-approval policy and no release review."""
    return make_admin_world()
