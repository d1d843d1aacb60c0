"""A recording TCP relay in front of each MPC party's listener: every byte, both directions."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class RecordingRelay:
    """Forward connections to each target and keep every byte each side sent."""

    def __init__(self) -> None:
        self.streams: list[tuple[int, str, bytearray]] = []  # (listener index, direction, bytes)
        self._lock = threading.Lock()
        self._servers: list[socket.socket] = []

    def route(self, targets: list[str]) -> list[str]:
        """Start one relay per target; return the relays' addresses (for the parties)."""
        out = []
        for k, target in enumerate(targets):
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.bind(("127.0.0.1", 0))
            srv.listen(8)
            self._servers.append(srv)
            host, port = target.rsplit(":", 1)
            threading.Thread(target=self._accept, args=(srv, k, (host, int(port))),
                             daemon=True).start()
            out.append(f"127.0.0.1:{srv.getsockname()[1]}")
        return out

    def _accept(self, srv: socket.socket, k: int, target: tuple[str, int]) -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            up = _dial(target)  # the party may not listen yet: MPyC itself retries so
            if up is None:
                conn.close()
                continue
            to_k, from_k = bytearray(), bytearray()
            with self._lock:
                self.streams += [(k, "to", to_k), (k, "from", from_k)]
            threading.Thread(target=self._pump, args=(conn, up, to_k), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, from_k), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            record.extend(data)
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        """Stop accepting."""
        for srv in self._servers:
            srv.close()

    def payloads(self) -> list[bytes]:
        """Return the payloads of every MPyC frame (``<q pc><I size><payload>``) captured.

        A connecting party first sends its 2-byte id and its PRSS keys; the frames start
        where the rest of the stream parses as frames to its end.
        """
        out: list[bytes] = []
        for _k, _direction, data in self.streams:
            if not data:
                continue
            for start in range(0, min(len(data), 4096)):
                frames = _frames(bytes(data), start)
                if frames is not None:
                    out += frames
                    break
            else:
                raise AssertionError("a captured stream does not parse as MPyC frames")
        return out


def _dial(target: tuple[str, int], attempts: int = 600) -> socket.socket | None:
    for _ in range(attempts):
        try:
            return socket.create_connection(target)
        except OSError:
            time.sleep(0.1)
    return None


def _frames(data: bytes, start: int) -> list[bytes] | None:
    out, pos = [], start
    while pos < len(data):
        if pos + 12 > len(data):
            return None
        size = int.from_bytes(data[pos + 8 : pos + 12], "little")
        if pos + 12 + size > len(data):
            return None
        out.append(data[pos + 12 : pos + 12 + size])
        pos += 12 + size
    return out
