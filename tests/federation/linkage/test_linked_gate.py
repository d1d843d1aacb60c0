"""A linked job passes every holder's gate first: policy rule for linkage, consent, usage."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd

from federation.spec import parse_job_spec
from hamanasu.local_runner import EmbeddedRunner, LocalNode
from nodes.cli import import_consents, init_node
from nodes.enforcement import EnforcementPoint

POLICY = """
min_cohort = 20
min_cell_count = 5
require_secure_aggregation = true
require_dp = false
[purposes]
allowed = ["GRU", "HMB", "DS"]
[jobs]
kinds = ["stats", "glm"]
[domains.births]
features = "*"
[approval]
mode = "automatic"
[linkage]
allowed = {allowed}
purposes = ["HMB"]
"""

SUBJECTS = [f"{i:032x}" for i in range(1, 61)]
WITHDRAWN = SUBJECTS[3]


def _node(tmp: Path, name: str, frame: pd.DataFrame, allowed: bool) -> LocalNode:
    policy = tmp / f"{name}-policy.toml"
    policy.write_text(POLICY.replace("{allowed}", "true" if allowed else "false"))
    state = tmp / f"{name}-state"
    init_node(state, name, policy)
    lines = ["subject,recorded_at,status,decision,purposes,commercial,domains,period_start,period_end"]
    for s in frame["subject"]:
        refused = name == "dairy" and s == WITHDRAWN
        decision = "deny" if refused else "permit"
        lines.append(f"{s},2025-01-01T00:00:00+00:00,active,{decision},HMB,no,,,")
    consents = tmp / f"{name}-consents.csv"
    consents.write_text("\n".join(lines) + "\n")
    import_consents(EnforcementPoint(name, state), consents)
    data = tmp / f"{name}.csv"
    frame.to_csv(data, index=False)
    return LocalNode(name, data, state)


def _run(tmp: Path, dairy_allows: bool) -> tuple[dict, dict[str, LocalNode]]:
    rng = np.random.default_rng(4)
    group = rng.choice(["low", "high"], len(SUBJECTS))
    hosp = pd.DataFrame({"subject": SUBJECTS, "bw_group": group})
    dairy = pd.DataFrame({"subject": SUBJECTS[:55], "dairy_g": rng.uniform(0, 500, 55)})
    nodes = {"hospital": _node(tmp, "hospital", hosp, True),
             "dairy": _node(tmp, "dairy", dairy, dairy_allows)}
    job = parse_job_spec({
        "kind": "stats", "purpose": {"duo": ["HMB"], "requester": "uni"},
        "stats": {"measures": ["count", "mean"], "group_by": ["bw_group"],
                  "levels": {"bw_group": ["low", "high"]}, "variables": ["dairy_g"],
                  "min_cell_count": 5},
        "link": {"key": "subject"},
    })
    res = EmbeddedRunner(nodes).run(job, "job-1", list(nodes), lambda _p: None, threading.Event())
    return {"status": res.status, "reason": res.reason, "report": res.report}, nodes


def _usage(node: LocalNode) -> list[dict]:
    point = EnforcementPoint(node.name, node.state_dir)
    return [e.payload for e in point.ledger().entries(kind="job.usage")]


def test_a_holder_whose_policy_forbids_linkage_refuses_the_job_with_its_reason(tmp_path):
    res, nodes = _run(tmp_path, dairy_allows=False)
    assert res["status"] == "failed"
    assert "linkage_not_allowed" in res["reason"] and "dairy" in res["reason"]
    assert _usage(nodes["hospital"]) == [] and _usage(nodes["dairy"]) == []


def test_a_linked_job_links_only_consenting_residents_and_logs_usage_at_every_holder(tmp_path):
    res, nodes = _run(tmp_path, dairy_allows=True)
    assert res["status"] == "succeeded", res["reason"]
    assert res["report"]["linked_n"] == 54  # 55 at the dairy company, one withdrew there
    for name in ("hospital", "dairy"):
        (entry,) = _usage(nodes[name])
        assert entry["job_id"] == "job-1" and entry["n_subjects"] == 54
