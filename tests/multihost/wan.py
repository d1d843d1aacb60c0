"""A userspace WAN between network namespaces, for kernels without ``tc netem``.

Every host namespace has a TUN device (``wan0``, made persistent by :mod:`netns`); this
process attaches to each of them and forwards the IPv4 packets one host sends to the host
that owns the destination address, as a router at the centre of a star would. Each host's
link has, in each direction:

* a one-way delay (half the round trip the link adds),
* a random loss rate,
* a rate limit (packets are serialised at the link's rate; a queue over
  ``queue_bytes`` drops at the tail),
* and can be partitioned (every packet to or from the host dropped) for a time.

A packet from A to B crosses A's link then B's link. It counts every packet and byte each
host sends (before loss), so a benchmark can tell what a node puts on the wire per round.

It is started as ``python wan.py CONFIG.json CONTROL.sock`` (as root) and is driven over
its control socket, one JSON object a line, one JSON reply a line:
``{"cmd": "stats"}``, ``{"cmd": "link", "host": H, "delay_ms": .., "loss": .., "rate_bps": ..}``,
``{"cmd": "partition", "host": H, "seconds": S}`` (0 heals it), ``{"cmd": "stop"}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000


@dataclass
class Link:
    """One host's link to the router: one-way delay, loss, rate, queue, partition."""

    delay_ms: float = 0.0
    loss: float = 0.0
    rate_bps: float = 0.0  # 0: no rate limit
    queue_bytes: int = 256_000
    partitioned_until: float = 0.0


@dataclass
class Host:
    """A namespace's end of the WAN: its TUN fd, address, link and counters."""

    name: str
    netns: str
    addr: bytes
    link: Link
    fd: int = -1
    up_free: float = 0.0  # when the uplink finishes sending what is queued
    down_free: float = 0.0
    counters: dict[str, int] = field(
        default_factory=lambda: (
            {"tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0}
            | {"dropped_loss": 0, "dropped_queue": 0, "dropped_partition": 0}
        )
    )


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def attach_tun(netns: str, dev: str) -> int:
    """Open the persistent TUN ``dev`` of namespace ``netns``; return its fd (non-blocking).

    Raises:
        OSError: the namespace or the device does not exist, or the caller is not root.
    """
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(f"/run/netns/{netns}")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns(back, CLONE_NEWNET)
        os.close(back)
    return fd


class Wan:
    """The forwarding loop: hosts by address, a heap of packets in flight."""

    def __init__(self, hosts: list[Host], seed: int = 0) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.by_addr = {h.addr: h for h in hosts}
        self.by_fd = {h.fd: h for h in hosts}
        self.rng = random.Random(seed)
        self.heap: list[tuple[float, int, int, bytes]] = []
        self.seq = 0

    def _hop(self, host: Host, size: int, now: float, up: bool) -> float | None:
        """Time ``size`` bytes leave ``host``'s link after arriving at ``now`` (None: dropped)."""
        link = host.link
        if link.partitioned_until > time.monotonic():
            host.counters["dropped_partition"] += 1
            return None
        if link.loss and self.rng.random() < link.loss:
            host.counters["dropped_loss"] += 1
            return None
        if link.rate_bps:
            free = max(now, host.up_free if up else host.down_free)
            if (free - now) * link.rate_bps / 8 > link.queue_bytes:
                host.counters["dropped_queue"] += 1
                return None
            done = free + size * 8 / link.rate_bps
            if up:
                host.up_free = done
            else:
                host.down_free = done
            now = done
        return now + link.delay_ms / 1000.0

    def forward(self, src: Host, packet: bytes) -> None:
        """Route one packet ``src`` sent: schedule it on its destination or drop it."""
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return
        src.counters["tx_packets"] += 1
        src.counters["tx_bytes"] += len(packet)
        dst = self.by_addr.get(packet[16:20])
        if dst is None or dst is src:
            return
        at = self._hop(src, len(packet), time.monotonic(), up=True)
        if at is not None:
            at = self._hop(dst, len(packet), at, up=False)
        if at is not None:
            self.seq += 1
            heapq.heappush(self.heap, (at, self.seq, dst.fd, packet))

    def deliver_due(self) -> float | None:
        """Write every packet whose time has come; return seconds to the next one."""
        now = time.monotonic()
        while self.heap and self.heap[0][0] <= now:
            _, _, fd, packet = heapq.heappop(self.heap)
            host = self.by_fd[fd]
            host.counters["rx_packets"] += 1
            host.counters["rx_bytes"] += len(packet)
            with contextlib.suppress(OSError):  # the host's queue is full or its device down
                os.write(fd, packet)
        return max(0.0, self.heap[0][0] - now) if self.heap else None

    def command(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Apply one control command; return the reply."""
        cmd = msg.get("cmd")
        if cmd == "stats":
            return {h.name: dict(h.counters) for h in self.hosts.values()}
        host = self.hosts.get(str(msg.get("host")))
        if host is None:
            return {"error": f"unknown host {msg.get('host')!r}"}
        if cmd == "link":
            for key in ("delay_ms", "loss", "rate_bps", "queue_bytes"):
                if key in msg:
                    setattr(host.link, key, type(getattr(host.link, key))(msg[key]))
            return {"ok": True, "link": asdict(host.link)}
        if cmd == "partition":
            host.link.partitioned_until = time.monotonic() + float(msg.get("seconds", 0))
            return {"ok": True}
        return {"error": f"unknown command {cmd!r}"}


def serve(config: dict[str, Any], control: Path) -> None:
    """Attach every host's TUN and forward until a ``stop`` command or SIGTERM."""
    hosts = []
    for name, h in config["hosts"].items():
        host = Host(name, h["netns"], socket.inet_aton(h["addr"]), Link(**h.get("link", {})))
        host.fd = attach_tun(h["netns"], h.get("dev", "wan0"))
        hosts.append(host)
    wan = Wan(hosts, int(config.get("seed", 0)))
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.unlink(missing_ok=True)
    srv.bind(str(control))
    srv.listen(8)
    srv.setblocking(False)
    clients: dict[int, tuple[socket.socket, bytes]] = {}
    poller = select.poll()
    for fd in wan.by_fd:
        poller.register(fd, select.POLLIN)
    poller.register(srv.fileno(), select.POLLIN)
    print("ready", flush=True)
    while True:
        wait = wan.deliver_due()
        for fd, _ in poller.poll(-1 if wait is None else max(1, int(wait * 1000 + 0.999))):
            if fd in wan.by_fd:
                src = wan.by_fd[fd]
                for _ in range(64):
                    try:
                        wan.forward(src, os.read(fd, 65536))
                    except BlockingIOError:
                        break
            elif fd == srv.fileno():
                conn, _ = srv.accept()
                clients[conn.fileno()] = (conn, b"")
                poller.register(conn.fileno(), select.POLLIN)
            else:
                conn, buf = clients[fd]
                data = conn.recv(65536)
                if not data:
                    poller.unregister(fd)
                    conn.close()
                    del clients[fd]
                    continue
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg.get("cmd") == "stop":
                        conn.sendall(b'{"ok": true}\n')
                        return
                    conn.sendall(json.dumps(wan.command(msg)).encode() + b"\n")
                clients[fd] = (conn, buf)


if __name__ == "__main__":
    serve(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
