"""The multi-host tests' network: namespaces, hostnames and the shaped WAN.

The forwarding rules are checked on the userspace WAN's own loop (pipes for devices, no
root needed); then a real set of namespaces is measured from inside: round trips are never
shorter than the configured delay, loss matches the configured rate (a binomial test), the
slow uplink never beats its rate, and a partitioned host hears nothing until it heals.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import netns  # noqa: E402
import wan  # noqa: E402

PROBE = str(Path(__file__).resolve().parent / "probe.py")


def _packet(dst: str, size: int = 100) -> bytes:
    head = bytes([0x45, 0]) + size.to_bytes(2, "big") + bytes(8) + socket.inet_aton("10.0.0.9")
    return head + socket.inet_aton(dst) + bytes(size - 20)


def _wan(a: wan.Link, b: wan.Link, seed: int = 7) -> tuple[wan.Wan, int]:
    rd, wr = os.pipe()
    hosts = [
        wan.Host("a", "x", socket.inet_aton("10.0.0.1"), a, fd=-5),
        wan.Host("b", "x", socket.inet_aton("10.0.0.2"), b, fd=wr),
    ]
    return wan.Wan(hosts, seed), rd


def test_a_packet_crosses_both_links_delays_and_is_counted() -> None:
    w, rd = _wan(wan.Link(delay_ms=10), wan.Link(delay_ms=5))
    before = time.monotonic()
    w.forward(w.hosts["a"], _packet("10.0.0.2"))
    w.forward(w.hosts["a"], _packet("10.0.0.77"))  # nobody owns it: counted, not delivered
    assert len(w.heap) == 1
    at = w.heap[0][0]
    assert at - before >= 0.015
    assert w.hosts["a"].counters["tx_bytes"] == 200
    while w.deliver_due() is not None:
        time.sleep(0.001)
    assert os.read(rd, 1000) == _packet("10.0.0.2")
    assert w.hosts["b"].counters["rx_packets"] == 1


def test_loss_follows_the_configured_rate_on_both_links() -> None:
    w, _ = _wan(wan.Link(loss=0.01), wan.Link(loss=0.01))
    n = 20_000
    for _ in range(n):
        w.forward(w.hosts["a"], _packet("10.0.0.2"))
    delivered = len(w.heap)
    expected = 1 - 0.99 * 0.99
    assert binomtest(n - delivered, n, expected).pvalue > 1e-4
    lost = w.hosts["a"].counters["dropped_loss"] + w.hosts["b"].counters["dropped_loss"]
    assert lost == n - delivered


def test_rate_limit_serialises_and_drops_over_the_queue() -> None:
    w, _ = _wan(wan.Link(rate_bps=8000, queue_bytes=1000), wan.Link())
    for _ in range(20):  # 20 x 100 bytes at 1,000 bytes/s
        w.forward(w.hosts["a"], _packet("10.0.0.2"))
    times = [t for t, *_ in sorted(w.heap)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g == pytest.approx(0.1, abs=1e-3) for g in gaps)
    assert len(times) == 11  # 1,000 bytes queued behind the one on the wire, the rest dropped
    assert w.hosts["a"].counters["dropped_queue"] == 9


def test_a_partition_drops_both_ways_until_it_heals() -> None:
    w, _ = _wan(wan.Link(), wan.Link())
    assert w.command({"cmd": "partition", "host": "b", "seconds": 60}) == {"ok": True}
    w.forward(w.hosts["a"], _packet("10.0.0.2"))
    assert not w.heap and w.hosts["b"].counters["dropped_partition"] == 1
    w.command({"cmd": "partition", "host": "b", "seconds": 0})
    w.forward(w.hosts["a"], _packet("10.0.0.2"))
    assert len(w.heap) == 1
    assert w.command({"cmd": "link", "host": "zz"}) == {"error": "unknown host 'zz'"}


# -- real namespaces ------------------------------------------------------------------------

HOSTS = {
    "hub": ("hub.consortium.test", "198.51.100.1"),
    "near": ("near.consortium.test", "198.51.100.2"),
    "slow": ("slow.consortium.test", "198.51.100.3"),
}
RATE = 2_000_000


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):
    why = netns.unavailable()
    if why:
        pytest.skip(f"cannot build network namespaces here: {why}")
    n = netns.Network(tmp_path_factory.mktemp("wan"), dict(HOSTS), mgmt_host="hub")
    n.links = {
        "near": netns.Link(delay_ms=10, loss=0.01),
        "slow": netns.Link(delay_ms=20, rate_bps=RATE),
    }
    try:
        n.start()
        server = subprocess.Popen(
            n.command("hub", [sys.executable, PROBE, "serve", "7000"]), stdout=subprocess.PIPE
        )
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        yield n
    finally:
        n.stop()


def _probe(n: netns.Network, host: str, *args: str) -> dict:
    out = n.run(host, [sys.executable, PROBE, *args], timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_hostnames_resolve_inside_each_namespace(net: netns.Network) -> None:
    out = net.run(
        "slow",
        [sys.executable, "-c", "import socket; print(socket.gethostbyname('hub.consortium.test'))"],
    )
    assert out.stdout.strip() == "198.51.100.1"


def test_round_trips_and_loss_match_the_links(net: netns.Network) -> None:
    near = _probe(net, "near", "udp", "hub.consortium.test", "7000", "1000")
    rtts = sorted(near["rtt_ms"])
    assert rtts[0] >= 20.0 - 0.5  # never faster than the configured 2 x 10 ms
    assert rtts[len(rtts) // 10] < 20.0 + 15.0  # most within the delay plus scheduling
    lost = near["sent"] - near["received"]
    # 1 % each way on the near link, none on the hub's: a round trip is lost with p = 1.99 %
    assert binomtest(lost, near["sent"], 1 - 0.99**2).pvalue > 1e-4, lost
    slow = _probe(net, "slow", "udp", "hub.consortium.test", "7000", "200")
    assert slow["received"] == slow["sent"]  # no loss configured there
    assert min(slow["rtt_ms"]) >= 40.0 - 0.5


def test_the_slow_uplink_never_beats_its_rate(net: netns.Network) -> None:
    size = 400_000
    slow = _probe(net, "slow", "tcp", "hub.consortium.test", "7000", str(size))
    assert slow["connect_ms"] >= 40.0 - 0.5
    assert slow["seconds"] >= size * 8 / RATE  # payload alone, headers come on top
    sent = net.tx_bytes()
    assert sent["slow"] > size  # the WAN counted what the host put on the wire


def test_mgmt_link_reaches_the_hub_unshaped(net: netns.Network) -> None:
    got = json.loads(
        subprocess.run(
            [sys.executable, PROBE, "udp", net.mgmt_addr, "7000", "20"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    assert got["received"] == 20


def test_a_partitioned_host_hears_nothing_until_it_heals(net: netns.Network) -> None:
    net.partition("near", 30)
    cut = _probe(net, "near", "udp", "hub.consortium.test", "7000", "50")
    assert cut["received"] == 0
    net.partition("near", 0)
    healed = _probe(net, "near", "udp", "hub.consortium.test", "7000", "50")
    assert healed["received"] >= 40
