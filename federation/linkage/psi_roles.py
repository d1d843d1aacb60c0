"""A holder's side of PSI alignment, run in a process of its own or in the caller's.

A :class:`HolderRole` keeps one holder's pseudonyms and its protocol keys (by name, each
used either as a client's or a server's key, never leaving the role) and answers the
steps the alignment asks of it: blind its set as a request, build a setup message,
respond to another holder's request, compute a size or the members of an intersection.
Only serialized protocol messages (blinded points, a filter of blinded points) and the
holder's own results leave it.

:class:`ProcessRole` runs a role in a child process (``spawn``) and queues steps to it,
so every holder's elliptic-curve work runs in parallel with the others' (openmined-psi
holds the GIL while it computes, and its objects are not thread-safe);
:class:`InlineRole` runs the same steps at once in the caller's process (small sets,
where a process start costs more than it saves). Both answer ``submit`` with a ticket
and ``get`` with that step's result, in order.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Sequence
from typing import Any

from federation.linkage.errors import LinkageError

__all__ = ["HolderRole", "InlineRole", "ProcessRole"]


def _request_type() -> Any:
    from private_set_intersection.python import Request

    return Request


class HolderRole:
    """One holder's pseudonyms and PSI keys; every method is one protocol step."""

    def __init__(self, items: Sequence[str]) -> None:
        self.items = list(items)
        self._keys: dict[str, bytes] = {}
        self._requests: dict[str, Any] = {}

    def _subset(self, subset: Sequence[int] | None) -> list[str]:
        return self.items if subset is None else [self.items[i] for i in subset]

    def request(self, key: str, subset: Sequence[int] | None = None) -> bytes:
        """Return this set's (or ``subset``'s) blinded points under client key ``key``.

        A subset of a set already blinded under ``key`` reuses its points (the same
        values the client would compute again).
        """
        from federation.linkage.psi import PsiClient

        full = self._requests.get(key)
        if subset is not None and full is not None:
            req = _request_type()()
            req.reveal_intersection = True
            req.encrypted_elements.extend(full.encrypted_elements[i] for i in subset)
            return bytes(req.SerializeToString())
        client = PsiClient(self._subset(subset), reveal=True, key=self._keys.get(key))
        self._keys[key] = client.key
        raw = client.request()
        if subset is None:
            req = _request_type()()
            req.ParseFromString(raw)
            self._requests[key] = req
        return raw

    def setup(self, key: str, client_size: int, subset: Sequence[int] | None = None) -> bytes:
        """Return the setup message of this set (or ``subset``) under server key ``key``."""
        from federation.linkage.psi import PsiServer

        server = PsiServer(self._subset(subset), reveal=True, key=self._keys.get(key))
        self._keys[key] = server.key
        return server.setup(client_size)

    def respond(self, key: str, request: bytes, reveal: bool) -> bytes:
        """Return the response to another holder's request under server key ``key``.

        ``reveal`` False shuffles the response: the client learns only the size.

        Raises:
            LinkageError: the key has no setup yet, or a malformed request.
        """
        from federation.linkage.psi import PsiServer

        if key not in self._keys:
            raise LinkageError(f"PSI key {key!r} has no setup message yet")
        return PsiServer([], reveal=reveal, key=self._keys[key]).respond(request)

    def size(self, key: str, setup: bytes, response: bytes) -> int:
        """Return the size of the intersection (the response to this set's request)."""
        from federation.linkage.psi import PsiClient

        return PsiClient(self.items, reveal=False, key=self._keys[key]).intersection_size(
            setup, response
        )

    def intersect(self, key: str, setup: bytes, response: bytes,
                  subset: Sequence[int] | None = None) -> list[str]:
        """Return the members of this set (or ``subset``) in the server's set, sorted."""
        from federation.linkage.psi import PsiClient

        client = PsiClient(self._subset(subset), reveal=True, key=self._keys[key])
        return client.intersection(setup, response)


def _serve(inbox: Any, outbox: Any, items: list[str]) -> None:
    role = HolderRole(items)
    while True:
        try:
            msg = inbox.recv()
        except EOFError:
            break
        if msg is None:
            break
        op, args = msg
        try:
            outbox.send(("ok", getattr(role, op)(*args)))
        except LinkageError as exc:
            outbox.send(("error", str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported to the caller as a failed step
            outbox.send(("error", f"PSI step {op} failed: {type(exc).__name__}"))
    outbox.close()


class InlineRole:
    """A :class:`HolderRole` whose steps run at once in this process."""

    def __init__(self, items: Sequence[str]) -> None:
        self._role = HolderRole(items)
        self._done: list[Any] = []

    def submit(self, op: str, *args: Any) -> int:
        """Run step ``op``; return its ticket (errors are raised by :meth:`get`)."""
        try:
            self._done.append(("ok", getattr(self._role, op)(*args)))
        except LinkageError as exc:
            self._done.append(("error", str(exc)))
        return len(self._done) - 1

    def get(self, ticket: int) -> Any:
        """Return step ``ticket``'s result.

        Raises:
            LinkageError: the step failed.
        """
        status, value = self._done[ticket]
        if status != "ok":
            raise LinkageError(value)
        return value

    def close(self, abort: bool = False) -> None:
        """Nothing to stop."""


class ProcessRole:
    """A :class:`HolderRole` in a child process; steps queue and run in order there.

    Messages of megabytes go both ways, and the child holds the GIL while it computes,
    so this side sends from a thread of its own and receives on another: the caller
    never blocks on a full pipe, and neither side waits on the other's send.
    """

    def __init__(self, items: Sequence[str]) -> None:
        ctx = multiprocessing.get_context("spawn")
        child_in, self._to_child = ctx.Pipe(duplex=False)
        self._from_child, child_out = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_serve, args=(child_in, child_out, list(items)),
                                 daemon=True)
        self._proc.start()
        child_in.close()
        child_out.close()
        self._sent = 0
        self._outbox: queue.Queue[Any] = queue.Queue()
        self._results: list[Any] = []
        self._ended = False
        self._ready = threading.Condition()
        threading.Thread(target=self._send_loop, daemon=True).start()
        threading.Thread(target=self._receive_loop, daemon=True).start()

    def _send_loop(self) -> None:
        while True:
            msg = self._outbox.get()
            try:
                self._to_child.send(msg)
            except OSError:
                return
            if msg is None:
                return

    def _receive_loop(self) -> None:
        while True:
            try:
                msg = self._from_child.recv()
            except (EOFError, OSError):
                msg = None
            with self._ready:
                if msg is None:
                    self._ended = True
                else:
                    self._results.append(msg)
                self._ready.notify_all()
            if msg is None:
                return

    def submit(self, op: str, *args: Any) -> int:
        """Queue step ``op``; return its ticket."""
        self._outbox.put((op, args))
        self._sent += 1
        return self._sent - 1

    def get(self, ticket: int) -> Any:
        """Wait for step ``ticket`` (and those queued before it); return its result.

        Raises:
            LinkageError: the step failed or the role's process is gone.
        """
        with self._ready:
            self._ready.wait_for(lambda: len(self._results) > ticket or self._ended)
            if len(self._results) <= ticket:
                raise LinkageError("a holder's PSI process ended unexpectedly")
            status, value = self._results[ticket]
        if status != "ok":
            raise LinkageError(value)
        return value

    def close(self, abort: bool = False) -> None:
        """Stop the process: at once with ``abort``, else after the steps already queued."""
        if not abort:
            self._outbox.put(None)
            self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._to_child.close()
        self._from_child.close()
