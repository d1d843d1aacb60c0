"""The SuperLink's two listeners: the Fleet API for SuperNodes, the rest on loopback only.

Flower 1.42 serves its Fleet API (SuperNodes pull and push messages), its Control API
(register and unregister SuperNodes, list them, start and stop runs) and its Runtime API
(SuperExec and the ServerApp take tasks and exchange a run's messages) from one FastAPI
app on one TLS port, and the open-source build authenticates no caller of the Control
or Runtime API. Anyone who reaches that port with the federation's public CA certificate
could register their own SuperNode key, unregister a consortium node, start a run or take
a run's ServerApp task.

This launcher serves Flower's own app on two sockets of one uvicorn server, with the same
TLS certificate:

* the *control* address, Flower's ``--host``/``--port``, bound on loopback: the
  coordinator's Control API client, Flower's SuperExec and every ServerApp use it;
* the *fleet* address (``--fleet-address host:port``), the one SuperNodes dial: a gate
  in front of the app answers 404 to every path outside the Fleet API (``/v1/fleet/``).

The gate decides by the local port a connection arrived on, which a peer cannot choose,
and admits everything only on the control port (anything else is treated as the fleet
listener). The Fleet API itself still admits only SuperNodes whose key the operator
registered (``--enable-supernode-auth``), and refuses Fleet-side registration when that is
on. Flower's optional gRPC Control and Fleet servers stay off.

:func:`serve` runs it (``python -m federation.launchers superlink --fleet-address
HOST:PORT <flower-superlink arguments>``); the change to Flower's command that serves one
app on two sockets lives with our other Flower patches
(:func:`federation.flower_patches.serve_superlink_twice`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

__all__ = ["FLEET_PREFIX", "FleetOnlyGate", "serve", "split_fleet_address"]

#: The only paths the fleet listener serves.
FLEET_PREFIX = "/v1/fleet/"

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

_REFUSED = json.dumps({"detail": "not served on this address"}).encode()


class FleetOnlyGate:
    """ASGI middleware: every path on ``control_port``, only the Fleet API elsewhere.

    Args:
        app: the SuperLink's ASGI app.
        control_port: the loopback port of the control listener.
    """

    def __init__(self, app: _App, control_port: int) -> None:
        if not 0 < control_port < 65536:
            raise ValueError(f"control_port: must be a TCP port, got {control_port}")
        self.app = app
        self.control_port = control_port

    def admits(self, scope: _Scope) -> bool:
        """Return whether a request with this ASGI ``scope`` may reach the app."""
        if scope["type"] not in ("http", "websocket"):
            return True  # lifespan events
        server = scope.get("server")
        if server is not None and len(server) > 1 and server[1] == self.control_port:
            return True
        return str(scope.get("path", "")).startswith(FLEET_PREFIX)

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """Pass the request on, or answer 404 (HTTP) / close (websocket)."""
        if self.admits(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_REFUSED)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _REFUSED})


def split_fleet_address(argv: Sequence[str]) -> tuple[str, int, list[str]]:
    """Take ``--fleet-address HOST:PORT`` out of ``argv``.

    Returns:
        (host, port, the remaining arguments, for ``flower-superlink``).

    Raises:
        ValueError: the option is missing or not ``host:port``.
    """
    rest: list[str] = []
    address: str | None = None
    items = list(argv)
    while items:
        item = items.pop(0)
        if item == "--fleet-address" and items:
            address = items.pop(0)
        elif item.startswith("--fleet-address="):
            address = item.split("=", 1)[1]
        else:
            rest.append(item)
    if address is None:
        raise ValueError("--fleet-address: required (HOST:PORT the SuperNodes dial)")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--fleet-address: expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port), rest


def serve(argv: Sequence[str]) -> None:
    """Run ``flower-superlink`` with ``argv`` on a control and a fleet listener.

    ``argv`` holds ``--fleet-address HOST:PORT`` and Flower's own arguments, whose
    ``--host``/``--port`` become the control listener (loopback).

    Raises:
        SystemExit: a bad ``--fleet-address`` (one line), or when the SuperLink stops.
    """
    from flwr.superlink.cli.flower_superlink import flower_superlink

    from federation.flower_patches import serve_superlink_twice

    try:
        host, port, rest = split_fleet_address(argv)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    for name in ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API"):
        os.environ.pop(name, None)
    serve_superlink_twice(host, port, FleetOnlyGate)
    sys.argv = ["flower-superlink", *rest]
    flower_superlink()
