"""Measure a WAN path from inside namespaces: UDP echo round trips and loss, TCP bulk rate.

``python probe.py serve PORT`` echoes UDP datagrams and swallows TCP streams on PORT;
``python probe.py udp HOST PORT COUNT`` sends COUNT numbered datagrams 2 ms apart and
prints JSON ``{"rtt_ms": [...], "sent": N, "received": M}``;
``python probe.py tcp HOST PORT BYTES`` sends BYTES over TCP and prints
``{"connect_ms": .., "seconds": ..}`` (the time until the server has acknowledged all of it).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import threading
import time


def serve(port: int) -> None:
    """Echo UDP datagrams; read TCP streams to their end and answer with one byte."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", port))
    tcp.listen(8)

    def sink(conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                pass
            conn.sendall(b"k")

    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([udp, tcp], [], [])
        if udp in ready:
            data, addr = udp.recvfrom(2048)
            udp.sendto(data, addr)
        if tcp in ready:
            conn, _ = tcp.accept()
            threading.Thread(target=sink, args=(conn,), daemon=True).start()


def udp_rtts(host: str, port: int, count: int) -> dict[str, object]:
    """Send ``count`` datagrams 2 ms apart; return their round trips and how many came back."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    s.setblocking(False)
    sent: dict[int, float] = {}
    rtts: list[float] = []
    for i in range(count):
        sent[i] = time.perf_counter()
        s.send(struct.pack("!I", i) + b"x" * 60)
        end = time.perf_counter() + 0.002
        while (left := end - time.perf_counter()) > 0:
            if select.select([s], [], [], left)[0]:
                (j,) = struct.unpack("!I", s.recv(2048)[:4])
                rtts.append((time.perf_counter() - sent[j]) * 1000)
    end = time.perf_counter() + 1.0
    while (left := end - time.perf_counter()) > 0:
        if select.select([s], [], [], left)[0]:
            (j,) = struct.unpack("!I", s.recv(2048)[:4])
            rtts.append((time.perf_counter() - sent[j]) * 1000)
    return {"rtt_ms": rtts, "sent": count, "received": len(rtts)}


def tcp_send(host: str, port: int, size: int) -> dict[str, float]:
    """Send ``size`` bytes over TCP; return the connect time and the time to the server's ack."""
    t0 = time.perf_counter()
    s = socket.create_connection((host, port), timeout=120)
    t1 = time.perf_counter()
    s.sendall(b"\0" * size)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    t2 = time.perf_counter()
    s.close()
    return {"connect_ms": (t1 - t0) * 1000, "seconds": t2 - t1}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        serve(int(sys.argv[2]))
    elif mode == "udp":
        print(json.dumps(udp_rtts(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        print(json.dumps(tcp_send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
