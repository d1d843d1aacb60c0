"""Flower's deployment engine for real: SuperLink + SuperNodes as processes, TLS, node auth.

A whole job over node services and their SuperNodes is tests/e2e/test_deployment_consortium.py.
"""

import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet  # noqa: E402
from local_deployment import LocalDeployment  # noqa: E402

from coordinator.deployment_runner import DeploymentRunner  # noqa: E402
from federation.pki import create_node_key, init_pki, load_node_public_key  # noqa: E402


def test_pki_certificate_san_and_private_keys(tmp_path):
    pki = init_pki(tmp_path / "pki")
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cert.verify_directly_issued_by(ca)
    key = create_node_key(pki, "city-hospital")
    assert isinstance(load_node_public_key(key.public_key), ec.EllipticCurvePublicKey)
    assert key.private_key.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    for private in (pki.ca_key, pki.server_key, key.private_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    with pytest.raises(FileExistsError):
        create_node_key(pki, "city-hospital")
    with pytest.raises(ValueError):
        pki.node("../evil")


@pytest.mark.slow
def test_unregistered_supernode_is_refused(tmp_path):
    with LocalDeployment(tmp_path / "dep") as dep:
        dep.register("member")
        dep.start_node("member", {"data-dir": str(tmp_path)})
        rogue_key = create_node_key(dep.pki, "rogue")  # a valid key, never registered
        rogue = dep.start_node(
            "rogue", {"data-dir": str(tmp_path)}, private_key=rogue_key.private_key
        )
        dep.wait_online(["member"])
        rogue.popen.wait(timeout=60)
        assert rogue.popen.returncode != 0
        assert "Failed to activate SuperNode" in rogue.log_tail(5000)
        with dep.control() as ctl:
            nodes = ctl.nodes()
        assert [n.name for n in nodes if n.online] == ["member"]
        assert "rogue" not in [n.name for n in nodes]


@pytest.mark.slow
def test_traced_superlink_records_each_request_it_serves(tmp_path, monkeypatch):
    import json

    from federation.deploy_trace import TRACE_ENV

    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    with LocalDeployment(tmp_path / "dep") as dep:
        assert "federation.launchers superlink" in " ".join(dep.superlink.popen.args)
        dep.register("member")
        with dep.control() as ctl:
            assert [n.name for n in ctl.nodes()] == ["member"]
    paths = [
        e["path"]
        for e in map(json.loads, trace.read_text().splitlines())
        if e["event"] == "superlink.request"
    ]
    assert len(paths) >= 2 and all(p.startswith("/v1/control/") for p in paths), paths


def _deploy(tmp_path, names):
    nodes = fleet.make_nodes(tmp_path, names)
    dep = LocalDeployment(tmp_path / "dep", heartbeat_interval=fleet.HEARTBEAT_S).start()
    for name, (data, state) in nodes.items():
        dep.register(name)
        dep.start_node(name, {"data-dir": str(data), "state-dir": str(state)})
    dep.wait_online(names)
    return dep, nodes


@pytest.mark.slow
def test_one_of_five_supernodes_killed_mid_round(tmp_path):
    names = ["n1", "n2", "n3", "n4", "n5"]
    dep, nodes = _deploy(tmp_path, names)
    victim = "n5"
    # One training round (the one the victim dies in) and the evaluation round after it.
    job = fleet.tiny_job(names, rounds=1, min_nodes=3, timeout=15.0)
    job = job.model_copy(
        update={"secure_aggregation": job.secure_aggregation.model_copy(update={"max_retries": 6})}
    )
    fleet.accept(nodes, job, "job-kill")
    runner = DeploymentRunner(
        dep.superlink.control_address,
        dep.pki.ca_cert,
        tmp_path / "store",
        app=dep.flower_app(),
        max_records=fleet.max_records(nodes, job),
    )
    out = {}
    rounds_at = {}

    def on_progress(p):
        rounds_at.setdefault(len(rounds_at) + 1, time.monotonic())

    thread = threading.Thread(
        target=lambda: out.setdefault(
            "result", runner.run(job, "job-kill", names, on_progress, threading.Event())
        )
    )
    try:
        thread.start()
        # Kill the victim mid-round: right after its gate committed round 1 (it is training).
        subjects = nodes[victim][1] / "salts" / "job-kill.subjects.json"
        end = time.monotonic() + 120
        while not subjects.exists() and time.monotonic() < end:
            time.sleep(0.05)
        assert subjects.exists(), "the victim never started round 1"
        dep.nodes[victim].kill()
        killed_at = time.monotonic()
        thread.join(timeout=240)
        assert not thread.is_alive(), "the job did not finish"
    finally:
        dep.stop()
    result = out["result"]
    assert result.status == "succeeded", result.reason
    rounds = result.report["rounds"]
    assert sorted(rounds[0]["nodes"]) == names[:4]  # round 1 completed without the victim
    assert rounds_at[1] - killed_at <= 30.0, "round 1 did not go on within 30 s of the death"
    assert all(victim not in r["nodes"] for r in rounds) and len(rounds) == 2
    # The victim comes back: its reservation for the finished job is released.
    from nodes.enforcement import EnforcementPoint

    point = EnforcementPoint(victim, nodes[victim][1])
    assert point.budget().reservation("job-kill") is not None
    released = point.budget().recover(active_job_ids=set())
    assert [r.job_id for r in released] == ["job-kill"]
    assert point.budget().reservation("job-kill").status == "released"
