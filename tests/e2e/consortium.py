"""A consortium of real processes on loopback for the end-to-end tests.

The coordinator (``hamanasu coordinator serve --engine deployment``: HTTPS API + a SuperLink
with TLS and SuperNode authentication) and one ``hamanasu node serve`` per node, each
starting its own SuperNode with its own key. Everything talks over TLS with the
federation's CA; every token sits in a 0600 file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from coordinator.client import CoordinatorClient
from federation.launchers import HEARTBEAT_ENV
from federation.pki import Pki, create_node_key, init_pki
from federation.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "deployment"))

import fleet  # noqa: E402


def _secret(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    return path


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@dataclass
class Consortium:
    """Coordinator + SuperLink + node services as processes under ``root``."""

    root: Path
    names: list[str]
    port: int = field(default_factory=free_port)
    superlink_port: int = field(default_factory=free_port)
    coordinator: subprocess.Popen[bytes] | None = None
    services: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    tokens: dict[str, Path] = field(default_factory=dict)
    nodes: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    admin_ports: dict[str, int] = field(default_factory=dict)

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HAMANASU_SSL_CERTFILE=str(self.pki.server_cert),
            HAMANASU_SSL_KEYFILE=str(self.pki.server_key),
            HAMANASU_ACCESS_LOG="false",
            PYTHONUNBUFFERED="1",
        )
        # the node services' SuperNodes: a killed or cut-off node counts as offline (and
        # its round goes on without it) after 20 s, not Flower's default minute
        env[HEARTBEAT_ENV] = f"{fleet.HEARTBEAT_S:g}"
        env.pop("HAMANASU_TOKEN", None)
        return env

    def client(self, who: str) -> CoordinatorClient:
        token = self.tokens[who].read_text().strip()
        return CoordinatorClient(self.url, token, ca_file=self.pki.ca_cert, timeout=60)

    # -- set-up ------------------------------------------------------------------------------
    # -- where things run (a multi-host consortium overrides these) --------------------------
    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` as run on ``host`` (``coordinator`` or a node's name): here, as is."""
        return argv

    @property
    def node_url(self) -> str:
        """The coordinator's URL as the node services dial it."""
        return self.url

    @property
    def superlink_address(self) -> str:
        """The SuperLink's ``host:port`` as the SuperNodes dial it."""
        return f"127.0.0.1:{self.superlink_port}"

    def node_env(self, name: str) -> dict[str, str]:
        """The environment node ``name``'s service starts with."""
        return self.env()

    def serve_options(self) -> list[str]:
        """Extra ``coordinator serve`` options (the bind address on a real network)."""
        return []

    def make_pki(self) -> None:
        """The federation's CA and certificate, and each node's own key in its own folder."""
        init_pki(self.pki.root)
        for name in self.names:
            own = Pki(self.root / "nodepki" / name)  # the node's own PKI folder
            own.root.mkdir(parents=True)
            (own.root / "ca.pem").write_bytes(self.pki.ca_cert.read_bytes())
            create_node_key(own, name)

    def setup(self) -> Consortium:
        """PKI, node data and state, coordinator database, principals, keys, node configs."""
        self.make_pki()
        self.nodes = fleet.make_nodes(self.root, self.names)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "hamanasu",
                "coordinator",
                "init",
                "--data-dir",
                str(self.root / "coordinator"),
                "--token-out",
                str(self.root / "tokens" / "operator"),
            ],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "hmn_" not in out.stderr
        self.tokens["operator"] = self.root / "tokens" / "operator"
        self.start_coordinator()
        oper = self.client("operator")
        for name in self.names:
            oper.register_node(name)
            pub = Pki(self.root / "nodepki" / name).node(name).public_key.read_text()
            oper.register_supernode_key(name, pub)
            issued = oper.create_principal(f"{name}-admin", "node_admin", name)
            admin_file = self.root / "tokens" / f"{name}-admin"
            self.tokens[f"{name}-admin"] = _secret(admin_file, issued.token.token)
            service = oper.issue_service_token(name)  # the node service's own credential
            self.tokens[name] = _secret(self.root / "tokens" / name, service.token)
            self.write_node_config(name)
        oper.register_organisation("hokkaido-university", "academic", {"iwamizawa-mch-2017": False})
        issued = oper.create_principal("aki@hokudai", "researcher", None, "hokkaido-university")
        self.tokens["researcher"] = _secret(self.root / "tokens" / "researcher", issued.token.token)
        issued = oper.create_principal("audit@city", "auditor")
        self.tokens["auditor"] = _secret(self.root / "tokens" / "auditor", issued.token.token)
        return self

    def write_node_config(self, name: str) -> Path:
        data, state = self.nodes[name]
        path = self.root / "config" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "[node]\n"
            f'name = "{name}"\n'
            f'coordinator_url = "{self.node_url}"\n'
            f'state_dir = "{state}"\n'
            f'data_dir = "{data}"\n'
            f'token_file = "{self.tokens[name]}"\n'
            f'admin_token_file = "{self.tokens[f"{name}-admin"]}"\n'
            f'ca_file = "{self.pki.ca_cert}"\n'
            "poll_interval = 0.5\n\n"
            "[node.supernode]\n"
            f'superlink = "{self.superlink_address}"\n'
            f'pki_dir = "{self.root / "nodepki" / name}"\n'
            "restart_after = 1.0\n\n"
            "[node.admin]\n"
            f"port = {self.admin_ports.setdefault(name, free_port())}\n"
        )
        return path

    # -- processes ---------------------------------------------------------------------------
    def start_coordinator(self, timeout: float = 90.0, *, verify: bool = True) -> None:
        """Start ``coordinator serve --engine deployment`` and wait for /health over HTTPS.

        ``verify=False`` waits without checking the certificate (a test serving a bad one).
        """
        (self.root / "logs").mkdir(exist_ok=True)
        log = (self.root / "logs" / "coordinator.log").open("ab")
        self.coordinator = subprocess.Popen(
            self.command(
                "coordinator",
                [
                    sys.executable,
                    "-m",
                    "hamanasu",
                    "coordinator",
                    "serve",
                    "--data-dir",
                    str(self.root / "coordinator"),
                    "--port",
                    str(self.port),
                    "--engine",
                    "deployment",
                    "--pki-dir",
                    str(self.pki.root),
                    "--superlink-port",
                    str(self.superlink_port),
                    *self.serve_options(),
                ],
            ),
            env=self.env(),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.coordinator.poll() is None, self.log_tail("coordinator")
            with contextlib.suppress(httpx.HTTPError):
                ca = str(self.pki.ca_cert) if verify else False
                r = httpx.get(f"{self.url}/health", verify=ca, timeout=2)
                if r.status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"coordinator did not start:\n{self.log_tail('coordinator')}")

    def kill_coordinator(self) -> None:
        """SIGKILL the coordinator process alone (its SuperLink is left as an orphan)."""
        assert self.coordinator is not None
        os.kill(self.coordinator.pid, signal.SIGKILL)
        self.coordinator.wait(timeout=10)

    def start_node(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``hamanasu node serve --config`` for ``name``."""
        (self.root / "logs").mkdir(exist_ok=True)
        log = (self.root / "logs" / f"service-{name}.log").open("ab")
        proc = subprocess.Popen(
            self.command(
                name,
                [
                    sys.executable,
                    "-m",
                    "hamanasu",
                    "node",
                    "serve",
                    "--config",
                    str(self.root / "config" / f"{name}.toml"),
                ],
            ),
            env=self.node_env(name),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.services[name] = proc
        return proc

    def supernode_groups(self, name: str) -> list[int]:
        """The process groups of ``name``'s SuperNode and executor (from its pid file)."""
        pid_file = self.nodes[name][1] / "flower" / "supernode.pid"
        return [int(x) for x in pid_file.read_text().split()] if pid_file.exists() else []

    def kill_node(self, name: str) -> None:
        """A node dies: SIGKILL its service, its SuperNode and its executor."""
        groups = self.supernode_groups(name)
        _killpg(self.services[name].pid)
        for pgid in groups:
            _killpg(pgid)
        self.services[name].wait(timeout=10)

    def log_tail(self, which: str, chars: int = 3000) -> str:
        path = self.root / "logs" / f"{which}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        """Stop every process (services first, so their SuperNodes stop cleanly)."""
        for proc in self.services.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.services.items():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
            for pgid in self.supernode_groups(name):
                _killpg(pgid)
        if self.coordinator is not None and self.coordinator.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.coordinator.pid, signal.SIGTERM)
            try:
                self.coordinator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _killpg(self.coordinator.pid)
        pid_file = self.root / "coordinator" / "flower" / "superlink.pid"
        if pid_file.exists():
            for pgid in pid_file.read_text().split():
                _killpg(int(pgid))
