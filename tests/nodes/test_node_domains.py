"""A node declares the domains it holds in node.toml: checked against the data model,
published, and a job on any other domain is refused."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from federation.api_models import ApprovalPublic, NodeJobView
from nodes.cli import init_node
from nodes.service import (
    CoordinatorLink,
    NodeService,
    NodeServiceConfig,
    NodeServiceError,
    load_node_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "iwamizawa"


def _job(spec: dict) -> NodeJobView:
    now = datetime.now(UTC)
    approval = ApprovalPublic(job_id="j1", node="city", status="pending", updated_at=now)
    return NodeJobView(
        id="j1",
        name="j",
        owner="aki",
        state="awaiting_approval",
        reason="",
        spec=spec,
        submitted_at=now,
        approval=approval,
    )


def test_a_node_publishes_its_declared_domains_and_refuses_a_job_on_another(tmp_path):
    state = tmp_path / "city"
    init_node(state, "city", EXAMPLES / "policies" / "city.toml")
    held = ["checkups", "watching_over"]
    cfg = NodeServiceConfig(
        name="city", coordinator_url="http://127.0.0.1:1", state_dir=state, domains=held
    )
    service = NodeService(cfg, CoordinatorLink(httpx.Client(), "city"))
    assert set(service.registration().domains) == set(held)  # the policy lists more

    spec = tomllib.loads((EXAMPLES / "lbw_rate_by_year.toml").read_text())
    decision = service.evaluate(_job(spec))
    assert decision.outcome == "reject"
    assert [r.code for r in decision.reasons] == ["domain_not_held"]
    assert "holds no births" in decision.reasons[0].message

    spec.update(
        domain="watching_over",
        stats={"measures": ["count", "mean"], "variables": ["alerts"], "min_cell_count": 10},
    )
    assert service.evaluate(_job(spec)).reasons[0].code != "domain_not_held"


def test_a_node_config_naming_a_domain_outside_the_data_model_is_refused(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\nname = "city"\ncoordinator_url = "http://127.0.0.1:1"\n'
        'state_dir = "s"\ndomains = ["checkups", "walks"]\n'
    )
    with pytest.raises(NodeServiceError, match=r"domains: .*\['walks'\] not in the data model"):
        load_node_config(path)
