"""The SuperLink's fleet listener gate, request by request (no processes).

The same gate against a real SuperLink, as an outsider sees it:
tests/deployment/test_superlink_exposure.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from federation.superlink_listeners import FleetOnlyGate, split_fleet_address

CONTROL, FLEET = 41001, 9092


def _call(gate: FleetOnlyGate, scope: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    sent: list[dict[str, Any]] = []
    reached = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    gate.app = app
    asyncio.run(gate(scope, receive, send))
    return sent, bool(reached)


def _http(path: str, port: int) -> dict[str, Any]:
    return {"type": "http", "path": path, "server": ("127.0.0.1", port)}


@pytest.mark.parametrize(
    "path",
    ["/v1/control/register-node", "/v1/runtime/acquire-task", "/docs", "/", "/v1/fleetx/a"],
)
def test_fleet_listener_answers_404_outside_the_fleet_api(path: str) -> None:
    gate = FleetOnlyGate(lambda *a: None, CONTROL)  # type: ignore[arg-type, return-value]
    sent, reached = _call(gate, _http(path, FLEET))
    assert not reached
    assert sent[0]["status"] == 404


def test_fleet_paths_pass_everywhere_and_everything_passes_on_the_control_port() -> None:
    gate = FleetOnlyGate(lambda *a: None, CONTROL)  # type: ignore[arg-type, return-value]
    assert _call(gate, _http("/v1/fleet/pull-messages", FLEET))[1]
    assert _call(gate, _http("/v1/control/register-node", CONTROL))[1]
    assert _call(gate, {"type": "lifespan"})[1]
    # no server address: treated as the fleet listener
    assert not _call(gate, {"type": "http", "path": "/v1/control/list-nodes"})[1]
    sent, reached = _call(gate, {"type": "websocket", "path": "/x", "server": ("h", FLEET)})
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}]


def test_split_fleet_address() -> None:
    assert split_fleet_address(["--port", "1", "--fleet-address", "0.0.0.0:9092"]) == (
        "0.0.0.0",
        9092,
        ["--port", "1"],
    )
    assert split_fleet_address(["--fleet-address=[::1]:80"])[:2] == ("::1", 80)
    for bad in ([], ["--fleet-address", "nohost"], ["--fleet-address", "h:99999"]):
        with pytest.raises(ValueError, match="--fleet-address"):
            split_fleet_address(bad)
    with pytest.raises(ValueError, match="control_port"):
        FleetOnlyGate(lambda *a: None, 0)  # type: ignore[arg-type, return-value]
