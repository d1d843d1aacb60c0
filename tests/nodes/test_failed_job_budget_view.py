"""A failed job's charge that stands, and why, is shown to the node's admins and auditors.

The node's admin approves a job; its round 1 is committed at the node (usage entry and
charge), then the job fails at the coordinator. The node service releases what the job
did not use and records why round 1 stays charged: the admin sees that reason in
``hamanasu node budget jobs``, the node's admin API and its console budget page, and an
auditor sees it in the node's ledger as the coordinator mirrors it.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from coordinator.runner import RunResult
from coordinator.schemas import PrincipalCreate
from federation.spec import JobSpec
from nodes.cli import app as node_cli
from nodes.client_app import RoundUse
from nodes.enforcement import EnforcementPoint

from .conftest import NODE, World
from .test_node_console import _sign_in as sign_in

MECH = {"type": "subsampled_gaussian", "noise_multiplier": 2.0, "sample_rate": 0.1, "steps": 10}
SUBJECTS = [f"{i:032x}" for i in range(1, 31)]


class FailsAfterRoundOne:
    """Commits round 1 at the node (as its client does before training), then fails."""

    def __init__(self) -> None:
        self.point: EnforcementPoint | None = None

    def run(
        self,
        job: JobSpec,
        job_id: str,
        nodes: Sequence[str],
        on_progress: Callable[[Any], None],
        cancelled: threading.Event,
    ) -> RunResult:
        assert self.point is not None
        self.point.commit(job, RoundUse(job_id, 1, "train", SUBJECTS, 0.5, 1e-5, MECH))
        return RunResult("failed", "women-clinic refused round 2: too few subjects remain")


def _failed_job(make_admin_world: Callable[..., World]) -> tuple[World, str]:
    runner = FailsAfterRoundOne()
    w = make_admin_world(runner=runner)
    runner.point = EnforcementPoint(NODE, w.point.state.root)
    job_id = w.submit(3.0)
    w.service.poll_once()
    r = w.api.post(f"/jobs/{job_id}/approve", headers=w.h())
    assert r.status_code == 200, r.text
    w.coordinator.state.lifecycle.wait(job_id, timeout=30)
    assert w.coordinator.state.store.get_job(job_id)[0].state == "failed"
    assert w.service.poll_once() == {job_id: "released"}
    return w, job_id


def test_the_admin_sees_why_a_failed_jobs_round_stays_charged(make_admin_world) -> None:
    w, job_id = _failed_job(make_admin_world)
    why = "round(s) 1 stay charged"

    out = CliRunner().invoke(
        node_cli, ["budget", "jobs", "--dir", str(w.point.state.root), "--format", "json"]
    )
    assert out.exit_code == 0, out.output
    (row,) = [r for r in json.loads(out.stdout) if r["job_id"] == job_id]
    assert row["status"] == "released" and row["rounds_charged"] == 1
    assert row["used_epsilon"] > 0 and row["released_at"] is not None
    assert row["release_reason"].startswith("job failed at the coordinator")
    assert why in row["release_reason"] and "produced no result" in row["release_reason"]
    table = CliRunner().invoke(node_cli, ["budget", "jobs", "--dir", str(w.point.state.root)])
    assert table.exit_code == 0 and job_id in table.stdout and "stay charged" in table.stdout

    api = w.api.get("/budget/jobs", headers=w.h())
    assert api.status_code == 200, api.text
    assert [j for j in api.json() if j["job_id"] == job_id] == [row]


def test_the_console_budget_page_and_the_auditor_see_it_too(make_admin_world) -> None:
    w, job_id = _failed_job(make_admin_world)
    reason = w.point.budget().reservation(job_id).release_reason
    assert reason and "round(s) 1 stay charged" in reason

    console = sign_in(TestClient(w.admin_app), w.tokens["node_admin"])
    page = console.get("/console/budget")
    assert page.status_code == 200
    row = re.search(rf'<tr data-job="{job_id}">(.*?)</tr>', page.text, re.S)
    assert row is not None, page.text[-3000:]
    assert "released" in row.group(1) and reason in html.unescape(row.group(1))

    # the auditor: the node's ledger, as its service pushed it, holds the same reason
    w.service.link.publish_audit(w.point)
    auditor = w.coordinator.state.store.create_principal(
        PrincipalCreate(name="audit", role="auditor")
    )[1].token
    mirrored = w.http.get(
        f"/audit/nodes/{NODE}/ledger",
        params={"kind": "budget.released"},
        headers={"Authorization": f"Bearer {auditor}"},
    )
    assert mirrored.status_code == 200, mirrored.text
    released = [e for e in mirrored.json()["entries"] if e["payload"]["job_id"] == job_id]
    assert [e["payload"]["reason"] for e in released] == [reason]
