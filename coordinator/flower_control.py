"""The one module that talks to Flower's Control API (the SuperLink's operator interface).

Flower 1.42 offers the Control API to Python only through internals of its CLI
(``flwr.supercore.control.ControlHttpClient`` with protobuf requests, ``flwr.cli.build``
for the app bundle); this module wraps exactly those, so a Flower upgrade touches one
file. It registers SuperNode public keys, submits a run of our app with a run config,
follows it to completion and streams its logs: what ``flwr supernode register``,
``flwr run`` and ``flwr log`` do, without shelling out.

The app submitted is :data:`APP_PYPROJECT`: a Flower app whose components are
``coordinator.flower_server:app`` and ``nodes.flower_client:app``, already installed
wherever the SuperLink and SuperNodes run (runtime dependency installation is off). Its
bundle holds only that ``pyproject.toml``; :func:`write_app_dir` writes it to a folder
for operators who want ``flwr run`` by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.flower_server import RUN_CONFIG_DEFAULTS as _CONFIG_DEFAULTS
from federation.pki import load_node_public_key

__all__ = [
    "APP_PYPROJECT",
    "FlowerControl",
    "FlowerControlError",
    "NodeInfo",
    "RunInfo",
    "build_app_bundle",
    "write_app_dir",
]


def _toml_value(value: str | int | float) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


#: The Flower app (``flwr run`` reads ``[project]`` and ``[tool.flwr.app]``).
APP_PYPROJECT = "\n".join(
    [
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        'name = "hamanasu-federated"',
        'version = "0.1.0"',
        'description = "Hamanasu federated jobs (ServerApp + ClientApp), installed in place"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "hamanasu"',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "coordinator.flower_server:app"',
        'clientapp = "nodes.flower_client:app"',
        "",
        "[tool.flwr.app.config]",
        *[f"{key} = {_toml_value(value)}" for key, value in _CONFIG_DEFAULTS.items()],
        "",
    ]
)


class FlowerControlError(RuntimeError):
    """A Control API call failed; the message says which and why."""


@dataclass(frozen=True)
class NodeInfo:
    """A SuperNode as the SuperLink knows it."""

    node_id: int
    name: str
    status: str  # registered | online | offline | unregistered

    @property
    def online(self) -> bool:
        """Return True when the node is connected (its heartbeat is current)."""
        return self.status == "online"


@dataclass(frozen=True)
class RunInfo:
    """A run's status: ``pending``/``starting``/``running``/``finished`` (+ sub-status)."""

    run_id: int
    status: str
    sub_status: str
    details: str

    @property
    def finished(self) -> bool:
        """Return True once the run has ended (completed, failed or stopped)."""
        return self.status == "finished"


def write_app_dir(folder: Path) -> Path:
    """Write the Flower app (its ``pyproject.toml``) into ``folder``, for ``flwr run folder``.

    Returns:
        The folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(APP_PYPROJECT, encoding="utf-8")
    return folder


def build_app_bundle() -> tuple[bytes, str, str]:
    """Build the app's FAB in memory.

    Returns:
        (FAB bytes, its SHA-256 hex digest, ``publisher/name`` id).
    """
    import hashlib

    from flwr.cli.build import build_fab_from_files

    fab = build_fab_from_files({"pyproject.toml": APP_PYPROJECT.encode()})[0]
    return fab, hashlib.sha256(fab).hexdigest(), "hamanasu/hamanasu-federated"


class FlowerControl:
    """A client of one SuperLink's Control API over TLS.

    Args:
        address: the SuperLink's ``host:port``.
        root_certificates: the CA certificate that signed the SuperLink's certificate.
        timeout: seconds per HTTP request.
    """

    def __init__(self, address: str, root_certificates: Path, *, timeout: float = 30.0) -> None:
        from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
        from flwr.supercore.control import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        self.address = address
        self._client = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=False,
            root_certificates=str(root_certificates),
            interceptors=[
                CliClientHttpInterceptor(),
                RuntimeVersionHttpInterceptor(component_name="flwr CLI"),
            ],
        )
        self._client._client.timeout = timeout  # noqa: SLF001 - httpx client of the Flower client

    def close(self) -> None:
        """Close the HTTP connection."""
        self._client.close()

    def __enter__(self) -> FlowerControl:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[[Any], Any], request: Any) -> Any:
        try:
            return fn(request)
        except Exception as exc:  # noqa: BLE001 - Flower raises httpx, FlowerError and others
            raise FlowerControlError(f"{what}: {type(exc).__name__}: {exc}") from exc

    # -- SuperNodes -------------------------------------------------------------------
    def register_node(self, public_key: Path, name: str | None = None) -> int:
        """Register a SuperNode's OpenSSH ECDSA public key; only registered keys may join.

        Returns:
            The node id the SuperLink gave it.

        Raises:
            ValueError: not an ECDSA P-384 public key.
            FlowerControlError: the SuperLink refused (e.g. the key is registered already).
        """
        from flwr.proto.control_pb2 import RegisterNodeRequest
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        key = load_node_public_key(public_key)
        res = self._call(
            "register node",
            self._client.RegisterNode,
            RegisterNodeRequest(public_key=public_key_to_bytes(key), name=name),
        )
        if not res.node_id:
            raise FlowerControlError("register node: the SuperLink returned no node id")
        return int(res.node_id)

    def unregister_node(self, node_id: int) -> None:
        """Unregister a SuperNode: it can no longer connect or take part in runs.

        Raises:
            FlowerControlError: the call failed.
        """
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        self._call(
            "unregister node", self._client.UnregisterNode, UnregisterNodeRequest(node_id=node_id)
        )

    def nodes(self) -> list[NodeInfo]:
        """Return every SuperNode the SuperLink knows, with its status.

        Raises:
            FlowerControlError: the call failed.
        """
        from flwr.proto.control_pb2 import ListNodesRequest

        res = self._call("list nodes", self._client.ListNodes, ListNodesRequest())
        return [NodeInfo(int(n.node_id), str(n.name), str(n.status)) for n in res.nodes_info]

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, run_config: Mapping[str, str | int | float | bool]) -> int:
        """Submit a run of the Hamanasu app with ``run_config``.

        ``run_config`` keys are those of ``[tool.flwr.app.config]``.

        Returns:
            The Flower run id.

        Raises:
            KeyError: a key the app does not declare.
            FlowerControlError: the SuperLink did not start the run.
        """
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        unknown = sorted(set(run_config) - set(_CONFIG_DEFAULTS))
        if unknown:
            raise KeyError(f"run_config: the app declares no key(s) {unknown}")
        fab_bytes, fab_hash, _ = build_app_bundle()
        req = StartRunRequest(
            fab=fab_to_proto(Fab(fab_hash, fab_bytes, {})),
            override_config=user_config_to_proto(dict(run_config)),
        )
        res = self._call("start run", self._client.StartRun, req)
        if not res.HasField("run_id"):
            raise FlowerControlError("start run: the SuperLink did not start the run")
        return int(res.run_id)

    def run(self, run_id: int) -> RunInfo:
        """Return a run's status.

        Raises:
            FlowerControlError: the call failed or the run is unknown.
        """
        from flwr.common.serde import run_from_proto
        from flwr.proto.control_pb2 import ListRunsRequest

        res = self._call("list runs", self._client.ListRuns, ListRunsRequest(run_id=run_id))
        if run_id not in res.run_dict:
            raise FlowerControlError(f"run {run_id}: unknown to the SuperLink")
        run = run_from_proto(res.run_dict[run_id])
        return RunInfo(run_id, run.status.status, run.status.sub_status, run.status.details)

    def wait(
        self,
        run_id: int,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_status: Callable[[RunInfo], None] | None = None,
    ) -> RunInfo:
        """Follow a run until it finishes; ``on_status`` hears every change of status.

        Returns:
            The final :class:`RunInfo`.

        Raises:
            TimeoutError: not finished within ``timeout`` seconds.
            FlowerControlError: the SuperLink stopped answering.
        """
        end = None if timeout is None else time.monotonic() + timeout
        last: RunInfo | None = None
        while True:
            info = self.run(run_id)
            if info != last and on_status is not None:
                on_status(info)
            last = info
            if info.finished:
                return info
            if end is not None and time.monotonic() >= end:
                raise TimeoutError(f"run {run_id} still {info.status} after {timeout:g} s")
            time.sleep(poll)

    def stop_run(self, run_id: int) -> None:
        """Ask the SuperLink to stop a run.

        Raises:
            FlowerControlError: the call failed.
        """
        from flwr.proto.control_pb2 import StopRunRequest

        self._call("stop run", self._client.StopRun, StopRunRequest(run_id=run_id))

    def logs(self, run_id: int, after: float = 0.0) -> Iterator[tuple[str, float]]:
        """Stream a run's ServerApp log: (text, timestamp) chunks until the run ends.

        Raises:
            FlowerControlError: the stream failed.
        """
        from flwr.proto.control_pb2 import StreamLogsRequest

        try:
            for res in self._client.StreamLogs(
                StreamLogsRequest(run_id=run_id, after_timestamp=after)
            ):
                yield str(res.log_output), float(res.latest_timestamp)
        except Exception as exc:  # noqa: BLE001
            raise FlowerControlError(f"stream logs: {type(exc).__name__}: {exc}") from exc
