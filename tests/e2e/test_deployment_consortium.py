"""The whole platform as real processes on loopback, over Flower's deployment engine.

The coordinator (HTTPS API + SuperLink, TLS, SuperNode authentication) and three node
services, each running its own SuperNode with its own key. A researcher submits over
HTTPS; the nodes approve by policy and reserve their budgets; the job runs with DP-SGD
and SecAgg+; results and per-node ε are fetched; each node's ledger shows the usage.
Then a node dies mid-job (the job goes on with the rest; the node, back, releases what
the job reserved), and the coordinator dies mid-job (nothing committed is lost; the
interrupted job fails with the reason; its orphaned SuperLink is replaced).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from consortium import Consortium, fleet  # noqa: E402

from coordinator.client import CoordinatorClient  # noqa: E402
from nodes.enforcement import EnforcementPoint  # noqa: E402

pytestmark = pytest.mark.slow

NAMES = ["n1", "n2", "n3"]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory):
    c = Consortium(tmp_path_factory.mktemp("consortium"), list(NAMES))
    try:
        c.setup()
        for name in NAMES:
            c.start_node(name)
        yield c
    finally:
        c.stop()


def _until(pred, timeout: float, what: str, poll: float = 0.3):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _submit(c: Consortium, rounds: int, name: str, stage_timeout: float = 60.0) -> str:
    # A stage timeout well above a loaded CI machine's slowest training stage (~20 s seen
    # at load 10 on 2 cores); the node-death test sets its own, shorter one.
    spec = fleet.tiny_job(NAMES, rounds=rounds, min_nodes=2, timeout=stage_timeout)
    body = spec.model_dump(mode="json")
    body["name"] = name
    return c.client("researcher").submit(body).id


def _reservation(c: Consortium, node: str, job_id: str):
    return EnforcementPoint(node, c.nodes[node][1]).budget().reservation(job_id)


def test_researcher_job_runs_over_the_deployment_engine(consortium: Consortium) -> None:
    c = consortium
    researcher = c.client("researcher")
    _until(
        lambda: all(n.supernode_online for n in c.client("operator").nodes()),
        120,
        "every SuperNode to connect",
    )
    job_id = _submit(c, rounds=2, name="lbw-deployment")
    done = researcher.wait(job_id, poll=0.5, timeout=420)
    assert done.state == "succeeded", (done.reason, c.log_tail("coordinator"))
    assert sorted(a.node for a in done.approvals) == NAMES
    ran = sorted(a.node for a in done.approvals if a.status == "approved")
    assert ran == NAMES  # the job waited for every node's policy, all approved
    assert {a.source for a in done.approvals if a.status == "approved"} == {"policy"}
    for a in done.approvals:  # each node said how many subjects the job would use there
        counts = [r.message for r in a.reasons if r.code == "subjects_after_consent"]
        assert len(counts) == 1 and int(counts[0].split()[0]) > 0, a.reasons
    result = researcher.result(job_id)
    assert result.report["engine"] == "deployment"
    assert result.report["secure_aggregation"] is True
    assert result.report["rounds_planned"] == 2
    assert {r["round"] for r in result.report["rounds"]} >= {1, 2}
    assert set(result.epsilon_by_node) == set(ran)
    budget = fleet.tiny_job(NAMES).privacy.epsilon
    assert all(0 < eps <= budget + 1e-9 for eps in result.epsilon_by_node.values())
    assert result.model is not None and result.model["parameters"]
    for node in ran:
        point = EnforcementPoint(node, c.nodes[node][1])
        usage = [e for e in point.ledger().entries("job.usage") if e.payload["job_id"] == job_id]
        assert all(e.payload["n_subjects"] > 0 for e in usage)
        # two training rounds and the evaluation round (a retried round logs its re-read)
        assert sorted({e.payload["round"] for e in usage}) == [1, 2, 3], node
        charged = [
            e for e in point.ledger().entries("budget.charged") if e.payload["job_id"] == job_id
        ]
        assert charged, f"{node}: no budget charge in the ledger"
    for node in NAMES:  # what the job reserved and did not use goes back to every node
        _until(
            lambda n=node: _reservation(c, n, job_id).status != "active",
            30,
            f"{node} to release what the job left",
        )
    # the auditor sees the same ε per node as the researcher's result
    audit = {
        e.node: e.by_job.get(job_id) for e in c.client("auditor").epsilon_by_node() if e.by_job
    }
    assert audit == pytest.approx(result.epsilon_by_node)


def test_unregistered_key_cannot_be_registered_twice_or_by_others(consortium: Consortium) -> None:
    from coordinator.client import CoordinatorAPIError
    from federation.pki import Pki

    c = consortium
    pub = Pki(c.root / "nodepki" / "n1").node("n1").public_key.read_text()
    with pytest.raises(CoordinatorAPIError) as again:
        c.client("operator").register_supernode_key("n1", pub)
    assert again.value.status == 409
    with pytest.raises(CoordinatorAPIError) as denied:
        c.client("researcher").register_supernode_key("n1", pub)
    assert denied.value.status == 403
    with pytest.raises(CoordinatorAPIError) as bad:
        c.client("operator").register_supernode_key("n2", "ecdsa-sha2-nistp384 AAAAnotakey")
    assert bad.value.status == 422 and bad.value.field == "public_key"


def test_a_node_dies_mid_job_and_comes_back(consortium: Consortium) -> None:
    c = consortium
    researcher = c.client("researcher")
    # Two rounds: the node dies in (or just before) the second, which goes on without it.
    job_id = _submit(c, rounds=2, name="lbw-node-dies", stage_timeout=30.0)
    job = _until(
        lambda: (j := researcher.status(job_id)).round >= 1 and j, 300, "round 1", poll=0.2
    )
    ran = sorted(a.node for a in job.approvals if a.status == "approved")
    if len(ran) < 3:
        pytest.fail(f"the job runs on {ran}; killing one would leave fewer than min_nodes")
    victim = ran[-1]
    assert _reservation(c, victim, job_id).status == "active"
    at_kill = researcher.status(job_id).round
    c.kill_node(victim)
    killed = time.monotonic()
    _until(lambda: researcher.status(job_id).round > at_kill, 120, "the next round", poll=0.2)
    went_on = time.monotonic() - killed
    print(f"round {at_kill + 1} finished {went_on:.1f} s after the node died")
    # the job's SecAgg+ stage timeout is 30 s: the round goes on without the dead node
    assert went_on <= 90.0
    done = researcher.wait(job_id, poll=0.5, timeout=300)
    assert done.state == "succeeded", done.reason
    result = researcher.result(job_id)
    last = result.report["rounds"][-1]
    assert victim not in last["nodes"] and len(last["nodes"]) == 2
    # the node comes back: its service releases what the ended job had reserved
    assert _reservation(c, victim, job_id).status == "active"
    c.start_node(victim)
    _until(
        lambda: _reservation(c, victim, job_id).status == "released", 60, "the reservation release"
    )
    _until(lambda: c.supernode_groups(victim), 30, "the node's SuperNode to start again")


def test_coordinator_killed_mid_job_and_restarted(consortium: Consortium) -> None:
    c = consortium
    researcher = c.client("researcher")
    before = {j.id: j.state for j in researcher.jobs()}
    assert "succeeded" in before.values()
    job_id = _submit(c, rounds=20, name="lbw-coordinator-dies")
    _until(lambda: researcher.status(job_id).state == "running", 300, "the job to run")
    c.kill_coordinator()
    c.start_coordinator()
    researcher = CoordinatorClient(
        c.url, c.tokens["researcher"].read_text().strip(), ca_file=c.pki.ca_cert
    )
    after = researcher.status(job_id)
    assert after.state == "failed"
    assert "restart" in after.reason
    for jid, state in before.items():
        assert researcher.status(jid).state == state
        if state == "succeeded":
            assert researcher.result(jid).epsilon_by_node
    for n in NAMES:
        _until(
            lambda n=n: _reservation(c, n, job_id).status == "released",
            60,
            f"{n} to release the failed job's reservation",
        )
        # never charged twice: one charge per round the node took part in (a round read
        # again after a halt logs another usage entry, with no spend)
        rounds = [
            e.payload["round"]
            for e in EnforcementPoint(n, c.nodes[n][1]).ledger().entries("budget.charged")
            if e.payload["job_id"] == job_id
        ]
        assert len(rounds) == len(set(rounds))
    # the restarted coordinator's SuperLink runs jobs again
    job2 = _submit(c, rounds=1, name="lbw-after-restart")
    assert researcher.wait(job2, poll=0.5, timeout=420).state == "succeeded"


def test_node_admin_api_runs_beside_the_service(consortium: Consortium) -> None:
    import httpx

    c = consortium
    base = f"http://127.0.0.1:{c.admin_ports['n2']}"
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    assert httpx.get(f"{base}/status", timeout=10).status_code == 401
    token = c.tokens["n2-admin"].read_text().strip()  # the admin's own token, not the service's
    service = {"Authorization": f"Bearer {c.tokens['n2'].read_text().strip()}"}
    assert httpx.get(f"{base}/status", headers=service, timeout=10).status_code == 401
    status = httpx.get(f"{base}/status", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert status.status_code == 200
    body = status.json()
    assert body["supernode"]["running"] is True
    assert token not in status.text
