"""A linked job passes every holder's gate first: policy rule for linkage, consent, usage."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd

from federation.spec import parse_job_spec
from hamanasu.local_runner import EmbeddedRunner, LocalNode
from tests.federation.linkage.linked_nodes import make_node, usage_entries

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
    policy = POLICY.replace("{allowed}", "true" if allowed else "false")
    refused = frozenset({WITHDRAWN}) if name == "dairy" else frozenset()
    return make_node(tmp, name, frame, policy, refused)


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
    return usage_entries(node)


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
