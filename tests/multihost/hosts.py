"""The consortium as separate hosts: the coordinator and each holder in its own namespace.

The same processes as the loopback consortium (``tests/e2e/consortium.py``): the
coordinator's ``hamanasu coordinator serve --engine deployment`` (HTTPS API and SuperLink)
on ``coordinator.iwamizawa.test``, and ``hamanasu node serve`` (node service + SuperNode)
on each ``<holder>.iwamizawa.test``; the holders dial out to the coordinator's name over
the shaped WAN, the certificates name the hosts, and every key is made with
``hamanasu pki`` on the host that keeps it. The test process reaches the coordinator over
its management link, as the operator and the researchers would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from consortium import Consortium, _killpg  # noqa: E402
from netns import Link, Network  # noqa: E402

DOMAIN = "iwamizawa.test"
COORDINATOR = f"coordinator.{DOMAIN}"
API_PORT, SUPERLINK_PORT = 8750, 9092
FAKETIME_LIBS = "/usr/lib/*/faketime/libfaketime.so.1"
_FAKETIME_ENV = {"FAKETIME_DONT_FAKE_MONOTONIC": "1"}  # timeouts and polls keep real time


def city_links(names: list[str], rtt_ms: float, loss: float, slow: str | None) -> dict[str, Link]:
    """Holders' links for a city network: ``rtt_ms`` to the coordinator, ``loss`` each way.

    The coordinator's own link is clean; ``slow`` (if any) has a 2 Mbit/s line.

    Returns:
        host name -> its :class:`Link`.
    """
    links = {n: Link(delay_ms=rtt_ms / 2, loss=loss) for n in names}
    if slow is not None:
        links[slow] = Link(delay_ms=rtt_ms / 2, loss=loss, rate_bps=2_000_000)
    links["coordinator"] = Link()
    return links


@dataclass
class HostsConsortium(Consortium):
    """A :class:`Consortium` whose coordinator and nodes run on separate namespaced hosts."""

    net: Network | None = None
    faketime: dict[str, str] = field(default_factory=dict)

    def build_network(self, links: dict[str, Link]) -> Network:
        """Create the hosts (coordinator + one per name) and the WAN; return the network."""
        hosts = {"coordinator": (COORDINATOR, "198.51.100.1")}
        for i, name in enumerate(self.names):
            hosts[name] = (f"{name}.{DOMAIN}", f"198.51.100.{10 + i}")
        self.port, self.superlink_port = API_PORT, SUPERLINK_PORT
        self.net = Network(self.root / "net", hosts, mgmt_host="coordinator", links=dict(links))
        return self.net.start()

    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace."""
        assert self.net is not None
        return self.net.command(host, argv)

    @property
    def url(self) -> str:
        """The coordinator's API over the management link (what the test process calls)."""
        assert self.net is not None
        return f"https://{self.net.mgmt_addr}:{self.port}"

    @property
    def node_url(self) -> str:
        """The coordinator's API as the holders dial it, by name over the WAN."""
        return f"https://{COORDINATOR}:{self.port}"

    @property
    def superlink_address(self) -> str:
        """The SuperLink as the SuperNodes dial it, by name over the WAN."""
        return f"{COORDINATOR}:{self.superlink_port}"

    def serve_options(self) -> list[str]:
        """Bind the API on every address of the coordinator's host."""
        return ["--host", "0.0.0.0"]

    def env(self) -> dict[str, str]:
        """The services' environment: the SuperLink binds the coordinator's WAN address."""
        env = super().env()
        env["HAMANASU_SUPERLINK_HOST"] = "198.51.100.1"
        env["HAMANASU_APPROVAL_GRACE_SECONDS"] = "60"
        return env

    def _hamanasu(self, calls: dict[str, list[str]]) -> None:
        """Run ``hamanasu ARGS`` on each host of ``calls`` at once; assert each succeeded."""
        procs = {
            host: subprocess.Popen(
                self.command(host, [sys.executable, "-m", "hamanasu", *args]),
                cwd=ROOT,
                env=self.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for host, args in calls.items()
        }
        for host, proc in procs.items():
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, (host, calls[host], err[-2000:])

    def make_pki(self) -> None:
        """``hamanasu pki init`` on the coordinator's host (its name and management address
        in the certificate); ``hamanasu pki node-key`` on each holder's host."""
        assert self.net is not None
        self._hamanasu(
            {
                "coordinator": ["pki", "init", "--dir", str(self.pki.root),
                                "--host", COORDINATOR, "--host", self.net.mgmt_addr],
            }
        )  # fmt: skip
        keys = {}
        for name in self.names:
            own = self.root / "nodepki" / name
            own.mkdir(parents=True, mode=0o700)
            (own / "ca.pem").write_bytes(self.pki.ca_cert.read_bytes())  # handed out by the city
            keys[name] = ["pki", "node-key", name, "--dir", str(own)]
        self._hamanasu(keys)

    # -- faults -------------------------------------------------------------------------------
    def _kill_coordinator_host(self) -> None:
        """SIGKILL everything on the coordinator's host (the API and its SuperLink)."""
        self.kill_coordinator()
        pid_file = self.root / "coordinator" / "flower" / "superlink.pid"
        if pid_file.exists():
            for pgid in pid_file.read_text().split():
                _killpg(int(pgid))

    def restart_coordinator_host(self) -> None:
        """Kill the coordinator host's services mid-flight and start them again."""
        self._kill_coordinator_host()
        self.start_coordinator()

    @contextlib.contextmanager
    def expired_certificate(self) -> Iterator[None]:
        """Serve the API and the SuperLink with an expired certificate, then the valid one."""
        good = self.pki.server_cert.read_bytes()
        self._kill_coordinator_host()
        self.pki.server_cert.write_bytes(_expired(self.pki))
        try:
            self.start_coordinator(verify=False)
            yield
        finally:
            self._kill_coordinator_host()
            self.pki.server_cert.write_bytes(good)
            self.start_coordinator()

    def node_status(self, name: str) -> dict[str, Any]:
        """Node ``name``'s admin ``/status``, read on its own host (its admin API is local)."""
        token = self.tokens[f"{name}-admin"].read_text().strip()  # the admin API is the admin's
        script = (
            "import sys, urllib.request as u; r = u.Request(sys.argv[1], "
            "headers={'Authorization': 'Bearer ' + sys.stdin.read().strip()}); "
            "print(u.urlopen(r, timeout=20).read().decode())"
        )
        url = f"http://127.0.0.1:{self.admin_ports[name]}/status"
        out = subprocess.run(
            self.command(name, [sys.executable, "-c", script, url]),
            input=token, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        status: dict[str, Any] = json.loads(out.stdout)
        return status

    @staticmethod
    def cannot_skew() -> str | None:
        """Return why one host's wall clock cannot be set apart here (None: it can).

        A network namespace shares the machine's wall clock (time namespaces offset only
        the monotonic and boot clocks) and the services have no clock setting, so the
        skew comes from libfaketime, which must also let Python sleep: Debian bookworm's
        0.9.10 fails Python 3.11's ``time.sleep`` (EINVAL, or a hang with the monotonic
        clock faked too), which every service's poll loop calls.
        """
        libs = glob.glob(FAKETIME_LIBS)
        if not libs:
            return "libfaketime is not installed"
        probe = "import time; time.sleep(0.01); print(int(time.time()))"
        env = {**os.environ, "LD_PRELOAD": libs[0], "FAKETIME": "+5m", **_FAKETIME_ENV}
        try:
            out = subprocess.run(
                [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=10
            )
        except subprocess.TimeoutExpired:
            return f"{libs[0]} makes Python's time.sleep hang"
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            return f"{libs[0]} breaks Python's time.sleep ({last})"
        if abs(int(out.stdout) - time.time() - 300) > 30:
            return f"{libs[0]} did not move the clock"
        return None

    def node_env(self, name: str) -> dict[str, str]:
        """The node's environment; with a skew, its processes see the wall clock moved."""
        env = super().node_env(name)
        if name in self.faketime:
            env.update(
                LD_PRELOAD=glob.glob(FAKETIME_LIBS)[0],
                FAKETIME=self.faketime[name],
                **_FAKETIME_ENV,
            )
        return env

    def restart_node(self, name: str, *, faketime: str | None = None) -> None:
        """Kill node ``name``'s service and SuperNode; start it again (``faketime``: skewed)."""
        if faketime is None:
            self.faketime.pop(name, None)
        else:
            self.faketime[name] = faketime
        self.kill_node(name)
        self.start_node(name)

    def stop(self) -> None:
        """Stop the services, then take the network down."""
        try:
            super().stop()
        finally:
            if self.net is not None:
                self.net.stop()


def _expired(pki: Any) -> bytes:
    """The coordinator's certificate re-issued by the CA with a validity that ended yesterday."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    signed = builder.sign(ca_key, hashes.SHA384())  # type: ignore[arg-type]
    return signed.public_bytes(serialization.Encoding.PEM)


def start(root: Path, names: list[str], links: dict[str, Link]) -> HostsConsortium:
    """Build the network, set up the consortium and start every node's service.

    Returns:
        The running :class:`HostsConsortium` (stop it when done).
    """
    c = HostsConsortium(root, list(names))
    try:
        c.build_network(links)
        c.setup()
        for name in names:
            c.start_node(name)
    except BaseException:
        c.stop()
        raise
    return c
