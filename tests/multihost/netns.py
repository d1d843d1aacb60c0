"""Hosts as Linux network namespaces, joined by a shaped WAN (the multi-host tests' network).

Each host is a namespace with its loopback, one WAN interface ``wan0`` holding its
address, and an ``/etc/netns/<ns>/hosts`` file naming every host, so ``ip netns exec``
resolves the consortium's hostnames inside it. The WAN is a star; each host's link has a
one-way delay, a loss rate and optionally a rate limit, and can be partitioned:

* with ``tc netem`` (when the kernel has it): a veth pair per host to a bridge in a router
  namespace, netem on both ends;
* otherwise with :mod:`wan` (userspace): a TUN device per host, forwarded by one process.

The test process itself stays in the root namespace; ``mgmt`` gives it a direct, unshaped
veth to one host (the coordinator's), as an operator's or researcher's own network would.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _tc(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True, check=check
    )


def unavailable() -> str | None:
    """Return why namespaces cannot be built here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"hmn-probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    try:
        if not netem_available(probe) and not os.path.exists("/dev/net/tun"):
            return "neither tc netem nor /dev/net/tun is available to shape links"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def netem_available(ns: str) -> bool:
    """Return whether the kernel takes a netem qdisc (tried on a dummy device in ``ns``)."""
    if shutil.which("tc") is None:
        return False
    made = _ip("-n", ns, "link", "add", "nmprobe", "type", "dummy", check=False)
    if made.returncode != 0:
        return False
    try:
        return _tc(ns, "qdisc", "add", "dev", "nmprobe", "root", "netem", "delay", "1ms",
                   check=False).returncode == 0  # fmt: skip
    finally:
        _ip("-n", ns, "link", "del", "nmprobe", check=False)


@dataclass
class Link:
    """A host's link: one-way delay (ms), loss (0–1) and rate limit (bit/s; 0: none)."""

    delay_ms: float = 0.0
    loss: float = 0.0
    rate_bps: float = 0.0


@dataclass
class Network:
    """The namespaces of ``hosts`` (name -> (hostname, address)) and the WAN between them.

    ``mgmt_host`` gets a veth to the root namespace: a /30 of 198.18.0.0/15 (the range
    kept for network tests; a machine's own network may well be TEST-NET-1) picked by
    ``mgmt_net``, ``mgmt_addr`` on the host's side.
    """

    root: Path
    hosts: dict[str, tuple[str, str]]
    mgmt_host: str | None = None
    mgmt_net: int = field(default_factory=lambda: (os.getpid() % 32768) * 4)
    userspace: bool | None = None  # None: netem when the kernel has it
    tag: str = field(default_factory=lambda: f"hmn{os.getpid() % 100000}")
    links: dict[str, Link] = field(default_factory=dict)
    _wan: subprocess.Popen[bytes] | None = None
    _made: list[str] = field(default_factory=list)

    # -- names --------------------------------------------------------------------------------
    def ns(self, name: str) -> str:
        """Return host ``name``'s namespace name."""
        return f"{self.tag}-{name}"

    @property
    def router(self) -> str:
        return f"{self.tag}-router"

    @property
    def mgmt_addr(self) -> str:
        """The management address of ``mgmt_host`` (reachable from the root namespace)."""
        return self._mgmt(2)

    def _mgmt(self, host: int) -> str:
        return str(ipaddress.IPv4Address("198.18.0.0") + self.mgmt_net + host)

    @property
    def control(self) -> Path:
        return self.root / "wan.sock"

    # -- build --------------------------------------------------------------------------------
    def start(self) -> Network:
        """Create every namespace, link and hosts file; start the WAN; return self.

        Raises:
            subprocess.CalledProcessError: an ``ip``/``tc`` command failed.
            RuntimeError: the userspace WAN did not start.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        hosts_text = "127.0.0.1 localhost\n" + "".join(
            f"{addr} {hostname}\n" for hostname, addr in self.hosts.values()
        )
        for name in self.hosts:
            ns = self.ns(name)
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            folder = Path("/etc/netns") / ns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(hosts_text)
        if self.userspace is None:
            self.userspace = not netem_available(self.ns(next(iter(self.hosts))))
        if self.userspace:
            self._start_userspace()
        else:
            self._start_netem()
        if self.mgmt_host is not None:
            ns = self.ns(self.mgmt_host)
            here = f"{self.tag}m"
            _ip("link", "add", here, "type", "veth", "peer", "name", "mgmt0", "netns", ns)
            _ip("addr", "add", f"{self._mgmt(1)}/30", "dev", here)
            _ip("link", "set", here, "up")
            _ip("-n", ns, "addr", "add", f"{self.mgmt_addr}/30", "dev", "mgmt0")
            _ip("-n", ns, "link", "set", "mgmt0", "up")
        for name in self.hosts:
            self.set_link(name, self.links.get(name, Link()))
        return self

    def _start_userspace(self) -> None:
        config: dict[str, Any] = {"hosts": {}, "seed": 1}
        for name, (_, addr) in self.hosts.items():
            ns = self.ns(name)
            _ip("-n", ns, "tuntap", "add", "dev", "wan0", "mode", "tun")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "wan0")
            _ip("-n", ns, "link", "set", "wan0", "up")
            config["hosts"][name] = {"netns": ns, "addr": addr}
        (self.root / "wan.json").write_text(json.dumps(config))
        log = (self.root / "wan.log").open("ab")
        self._wan = subprocess.Popen(
            [sys.executable, str(HERE / "wan.py"), str(self.root / "wan.json"), str(self.control)],
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        assert self._wan.stdout is not None
        if self._wan.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the userspace WAN did not start: {self.wan_log()}")

    def _start_netem(self) -> None:
        _ip("netns", "add", self.router)
        self._made.append(self.router)
        _ip("-n", self.router, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.router, "link", "set", "br0", "up")
        for i, (name, (_, addr)) in enumerate(self.hosts.items()):
            ns, port = self.ns(name), f"p{i}"
            _ip("-n", ns, "link", "add", "wan0", "type", "veth", "peer", "name", port,
                "netns", self.router)  # fmt: skip
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "wan0")
            _ip("-n", ns, "link", "set", "wan0", "up")
            _ip("-n", self.router, "link", "set", port, "master", "br0", "up")

    def wan_log(self) -> str:
        """The userspace WAN's stderr (empty with netem)."""
        path = self.root / "wan.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # -- shaping ------------------------------------------------------------------------------
    def _wan_call(self, msg: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.control))
            s.sendall(json.dumps(msg).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply: dict[str, Any] = json.loads(buf)
        if "error" in reply:
            raise ValueError(reply["error"])
        return reply

    def _netem_ends(self, name: str) -> list[tuple[str, str]]:
        i = list(self.hosts).index(name)
        return [(self.ns(name), "wan0"), (self.router, f"p{i}")]

    def _netem(self, name: str, link: Link, loss: float) -> None:
        args = ["netem", "delay", f"{link.delay_ms}ms", "loss", f"{loss * 100:g}%",
                "limit", "10000"]  # fmt: skip
        if link.rate_bps:
            args += ["rate", f"{int(link.rate_bps)}bit"]
        for ns, dev in self._netem_ends(name):
            _tc(ns, "qdisc", "replace", "dev", dev, "root", *args)

    def set_link(self, name: str, link: Link) -> None:
        """Shape host ``name``'s link (each direction) as ``link``."""
        self.links[name] = link
        if self.userspace:
            self._wan_call({"cmd": "link", "host": name, **vars(link)})
        else:
            self._netem(name, link, link.loss)

    def partition(self, name: str, seconds: float) -> None:
        """Drop every packet to and from host ``name`` for ``seconds`` (0 heals at once)."""
        if self.userspace:
            self._wan_call({"cmd": "partition", "host": name, "seconds": seconds})
            return
        self._netem(name, self.links[name], 1.0 if seconds > 0 else self.links[name].loss)
        if seconds > 0:
            timer = threading.Timer(
                seconds, self._netem, (name, self.links[name], self.links[name].loss)
            )
            timer.daemon = True
            timer.start()

    def tx_bytes(self) -> dict[str, int]:
        """Bytes each host has sent on the WAN so far (IP packets, before any loss)."""
        if self.userspace:
            return {k: v["tx_bytes"] for k, v in self._wan_call({"cmd": "stats"}).items()}
        out = {}
        for name in self.hosts:
            shown = _ip("-n", self.ns(name), "-s", "-j", "link", "show", "wan0")
            out[name] = int(json.loads(shown.stdout)[0]["stats64"]["tx"]["bytes"])
        return out

    # -- processes ----------------------------------------------------------------------------
    def command(self, name: str, argv: Sequence[str]) -> list[str]:
        """Return ``argv`` wrapped to run inside host ``name``'s namespace."""
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def run(self, name: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in host ``name``'s namespace to the end; return the result."""
        return subprocess.run(self.command(name, argv), capture_output=True, text=True, **kw)

    def stop(self) -> None:
        """Kill what still runs in the namespaces, stop the WAN, delete the namespaces."""
        for ns in self._made:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        if self._wan is not None and self._wan.poll() is None:
            self._wan.terminate()
            try:
                self._wan.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._wan.kill()
        _ip("link", "del", f"{self.tag}m", check=False)
        time.sleep(0.1)
        for ns in self._made:
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        self._made.clear()

    def __enter__(self) -> Network:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
