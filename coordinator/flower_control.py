"""The one module that talks to Flower's Control API (the SuperLink's operator interface).

Flower 1.42 offers the Control API to Python only through internals of its CLI
(``flwr.supercore.control.ControlHttpClient`` with protobuf requests, ``flwr.cli.build``
for the app bundle); this module wraps exactly those, so a Flower upgrade touches one
file. It registers SuperNode public keys, submits a run of a Flower app with a run config,
follows it to completion and streams its logs: what ``flwr supernode register``,
``flwr run`` and ``flwr log`` do, without shelling out.

The app submitted is a :class:`FlowerApp`: a Flower app folder (its ``pyproject.toml``
with ``[tool.flwr.app]``) bundled the way ``flwr build`` bundles it. The coordinator does
not know which ClientApp the nodes run, so whoever starts it passes the app in (the
``hamanasu`` command passes the app that ships with it).
"""

from __future__ import annotations

import hashlib
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.pki import load_node_public_key

__all__ = [
    "FlowerApp",
    "FlowerControl",
    "FlowerControlError",
    "NodeInfo",
    "RunInfo",
]


@dataclass(frozen=True)
class FlowerApp:
    """A Flower app bundled for submission: its FAB and what its ``pyproject.toml`` declares.

    Attributes:
        folder: the app's folder.
        fab: the Flower App Bundle (what ``flwr build`` writes), in memory.
        fab_hash: the bundle's SHA-256 hex digest.
        fab_id: ``publisher/name``.
        components: ``serverapp`` / ``clientapp`` -> ``module:attribute``.
        config: the run config keys the app declares, with their defaults.
    """

    folder: Path
    fab: bytes
    fab_hash: str
    fab_id: str
    components: Mapping[str, str]
    config: Mapping[str, str | int | float | bool]

    @classmethod
    def load(cls, folder: Path) -> FlowerApp:
        """Bundle the Flower app in ``folder`` as ``flwr build`` does.

        Returns:
            The bundled app.

        Raises:
            FileNotFoundError: ``folder`` holds no ``pyproject.toml``.
            ValueError: not a valid Flower app (Flower's reason).
        """
        from flwr.cli.build import build_fab_from_disk

        pyproject = Path(folder) / "pyproject.toml"
        if not pyproject.is_file():
            raise FileNotFoundError(f"{folder}: no pyproject.toml (not a Flower app folder)")
        declared = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        fab = build_fab_from_disk(Path(folder))
        app = declared["tool"]["flwr"]["app"]
        return cls(
            folder=Path(folder),
            fab=fab,
            fab_hash=hashlib.sha256(fab).hexdigest(),
            fab_id=f"{app['publisher']}/{declared['project']['name']}",
            components=dict(app["components"]),
            config=dict(app.get("config", {})),
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
    #: the SHA-256 of the app bundle the run runs (``FlowerApp.fab_hash``).
    fab_hash: str = ""

    @property
    def finished(self) -> bool:
        """Return True once the run has ended (completed, failed or stopped)."""
        return self.status == "finished"


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
    def start_run(self, app: FlowerApp, run_config: Mapping[str, str | int | float | bool]) -> int:
        """Submit a run of ``app`` with ``run_config``.

        ``run_config`` keys are those of the app's ``[tool.flwr.app.config]``.

        Returns:
            The Flower run id.

        Raises:
            KeyError: a key the app does not declare.
            FlowerControlError: the SuperLink did not start the run.
        """
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        unknown = sorted(set(run_config) - set(app.config))
        if unknown:
            raise KeyError(f"run_config: the app declares no key(s) {unknown}")
        req = StartRunRequest(
            fab=fab_to_proto(Fab(app.fab_hash, app.fab, {})),
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
        return RunInfo(
            run_id, run.status.status, run.status.sub_status, run.status.details, run.fab_hash
        )

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
