"""An outsider holding only the public CA certificate, against the coordinator's SuperLink.

The SuperLink runs as a real process, started the way the coordinator starts it
(:class:`coordinator.flower_engine.FlowerEngine`). The attacker reaches the address
SuperNodes dial and tries Flower's own ``flwr supernode register``/``unregister`` CLI, a
direct Control API client, and raw HTTPS requests to the Control and Runtime APIs. Every
attempt must be refused and the SuperLink's node list must not change; the Fleet API must
still be served there.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from coordinator.flower_control import FlowerApp, FlowerControl, FlowerControlError
from coordinator.flower_engine import FlowerEngine
from coordinator.settings import load_settings
from federation.pki import create_node_key, init_pki
from federation.processes import free_port
from hamanasu import FLOWER_APP_DIR

pytestmark = pytest.mark.slow

_FLWR = str(Path(sys.executable).parent / "flwr")


def _node_list(engine: FlowerEngine) -> list[tuple[int, str, str]]:
    with FlowerControl(engine.control_address, engine.pki.ca_cert) as ctl:
        return sorted((n.node_id, n.name, n.status) for n in ctl.nodes())


def _flwr_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
    )
    return subprocess.run(  # noqa: S603 - Flower's own CLI, fixed arguments
        [_FLWR, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> FlowerEngine:
    root = tmp_path_factory.mktemp("superlink")
    pki = init_pki(root / "pki")
    settings = load_settings(
        data_dir=root / "coord",
        engine="deployment",
        pki_dir=pki.root,
        superlink_port=free_port(),
    )
    flower = FlowerEngine(settings, FlowerApp.load(FLOWER_APP_DIR)).start()
    for name in ("city-hospital", "insurer"):
        flower.register_node(name, create_node_key(pki, name).public_key.read_text())
    yield flower
    flower.stop()


@pytest.fixture
def attacker(tmp_path: Path, engine: FlowerEngine) -> Path:
    """The attacker's folder: the public ``ca.pem``, their own key, a Flower connection."""
    shutil.copy(engine.pki.ca_cert, tmp_path / "ca.pem")
    subprocess.run(  # noqa: S603, S607 - OpenSSH's key tool, as the Flower docs use it
        ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(tmp_path / "k")],
        check=True,
    )
    home = tmp_path / "flwr"
    home.mkdir()
    (home / "config.toml").write_text(
        "[superlink]\n"
        'default = "target"\n\n'
        "[superlink.target]\n"
        f'address = "{engine.address}"\n'
        f'root-certificates = "{tmp_path / "ca.pem"}"\n',
        encoding="utf-8",
    )
    return tmp_path


def test_flwr_cli_cannot_register_or_unregister_through_the_fleet_address(
    engine: FlowerEngine, attacker: Path
) -> None:
    before = _node_list(engine)
    assert {name for _, name, _ in before} == {"city-hospital", "insurer"}
    reg = _flwr_cli(attacker / "flwr", "supernode", "register", str(attacker / "k.pub"), "target")
    assert reg.returncode != 0, reg.stdout + reg.stderr
    victim = before[0][0]
    unreg = _flwr_cli(attacker / "flwr", "supernode", "unregister", str(victim), "target")
    assert unreg.returncode != 0, unreg.stdout + unreg.stderr
    listed = _flwr_cli(attacker / "flwr", "supernode", "list", "target")
    assert listed.returncode != 0 and "insurer" not in listed.stdout

    assert _node_list(engine) == before


def test_direct_control_api_calls_are_refused_at_the_fleet_address(
    engine: FlowerEngine, attacker: Path
) -> None:
    before = _node_list(engine)
    with FlowerControl(engine.address, attacker / "ca.pem", timeout=10) as ctl:
        with pytest.raises(FlowerControlError):
            ctl.register_node(attacker / "k.pub", "rogue")
        with pytest.raises(FlowerControlError):
            ctl.unregister_node(before[0][0])
        with pytest.raises(FlowerControlError):
            ctl.nodes()
        with pytest.raises(FlowerControlError):
            ctl.start_run(engine.app, {})
    assert _node_list(engine) == before


def test_raw_requests_reach_only_the_fleet_api(engine: FlowerEngine, attacker: Path) -> None:
    before = _node_list(engine)
    base = f"https://{engine.address}"
    with httpx.Client(verify=str(attacker / "ca.pem"), timeout=10) as http:
        for path in (
            "/v1/control/register-node",
            "/v1/control/unregister-node",
            "/v1/control/list-nodes",
            "/v1/control/start-run",
            "/v1/runtime/acquire-task",
            "/v1/runtime/get-run",
            "/docs",
            "/openapi.json",
            "/health",
            "/v1/fleet%2F..%2Fcontrol/list-nodes",
            "//v1/control/list-nodes",
        ):
            r = http.post(base + path, content=b"")
            assert r.status_code == 404, (path, r.status_code, r.text)
        # The Fleet API itself is served there: an unsigned request is refused by Flower's
        # node authentication, not by the gate.
        r = http.post(base + "/v1/fleet/pull-messages", content=b"")
        assert r.status_code != 404, r.text
    # dot segments sent as they are (an HTTP client would have removed them)
    for raw in ("/v1/fleet/../control/list-nodes", "/v1/fleet/%2e%2e/control/list-nodes"):
        assert _raw_status(engine.address, attacker / "ca.pem", raw) == 404, raw
    assert _node_list(engine) == before


def _raw_status(address: str, ca: Path, path: str) -> int:
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, int(port)), timeout=10) as tcp,
        context.wrap_socket(tcp, server_hostname=host) as tls,
    ):
        tls.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {address}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        head = tls.recv(64).decode("latin-1")
    return int(head.split()[1])


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def test_control_listener_is_not_reachable_off_loopback(engine: FlowerEngine) -> None:
    host, _, port = engine.control_address.rpartition(":")
    assert host == "127.0.0.1" and int(port) != engine.settings.superlink_port
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe from")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, int(port)), timeout=5).close()
