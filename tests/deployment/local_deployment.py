"""Test and bench harness: a SuperLink and any number of SuperNodes on loopback, one folder.

It wires what the packages keep apart: the federation's launchers start the processes,
the coordinator's Control API client registers and lists the nodes, and the nodes' own
preload list warms each SuperNode's executor.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.flower_control import FlowerApp, FlowerControl
from federation.launchers import SUPERLINK_IN_MEMORY, start_superlink, start_supernode
from federation.pki import Pki, init_pki, node_key
from federation.processes import ManagedProcess
from hamanasu import FLOWER_APP_DIR
from nodes.supernode import CLIENT_PRELOAD


@dataclass
class LocalDeployment:
    """A SuperLink and any number of SuperNodes on loopback, under one data folder.

    Use as a context manager; :meth:`stop` ends every process it started.
    """

    data_dir: Path
    fast_poll: bool = True
    warm: bool = True
    #: the SuperLink's ``--database`` (in memory, or a SQLite file path).
    database: str = SUPERLINK_IN_MEMORY
    #: the SuperNodes' heartbeat interval (seconds, 10 at least); None: Flower's 30 s.
    heartbeat_interval: float | None = None
    superlink: ManagedProcess | None = None
    nodes: dict[str, ManagedProcess] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)

    @property
    def pki(self) -> Pki:
        """The deployment's PKI (``data_dir/pki``), created on :meth:`start`."""
        return Pki(self.data_dir / "pki")

    def start(self) -> LocalDeployment:
        """Create the PKI if needed and start the SuperLink; return self."""
        if not self.pki.exists():
            init_pki(self.pki.root)
        self.superlink = start_superlink(
            self.pki, self.data_dir, fast_poll=self.fast_poll, database=self.database
        )
        return self

    def control(self) -> FlowerControl:
        """Return a Control API client of the SuperLink."""
        if self.superlink is None:
            raise RuntimeError("the deployment is not started")
        return FlowerControl(self.superlink.control_address, self.pki.ca_cert)

    def flower_app(self) -> FlowerApp:
        """Return the Flower app jobs run as (the one the ``hamanasu`` command submits)."""
        return FlowerApp.load(FLOWER_APP_DIR)

    def register(self, name: str) -> int:
        """Create node ``name``'s key if needed and register its public key; return its node id."""
        with self.control() as ctl:
            node_id = int(ctl.register_node(node_key(self.pki, name).public_key, name))
        self.node_ids[name] = node_id
        return node_id

    def start_node(
        self,
        name: str,
        node_config: Mapping[str, str | int | float | bool] | None = None,
        *,
        private_key: Path | None = None,
    ) -> ManagedProcess:
        """Start node ``name``'s SuperNode (registered or not) and return its process."""
        if self.superlink is None:
            raise RuntimeError("the deployment is not started")
        proc = start_supernode(
            self.pki,
            name,
            self.superlink.address,
            self.data_dir,
            node_config=node_config,
            private_key=private_key,
            fast_poll=self.fast_poll,
            warm=self.warm,
            preload=CLIENT_PRELOAD,
            torch_threads=1,
            heartbeat_interval=self.heartbeat_interval,
        )
        self.nodes[name] = proc
        return proc

    def wait_online(self, names: Sequence[str], timeout: float = 60.0) -> None:
        """Wait until the SuperLink reports every node in ``names`` online.

        Raises:
            RuntimeError: a SuperNode exited (its log tail says why).
            TimeoutError: not all online within ``timeout`` seconds.
        """
        end = time.monotonic() + timeout
        want = {self.node_ids[n] for n in names}
        with self.control() as ctl:
            while True:
                online = {n.node_id for n in ctl.nodes() if n.online}
                if want <= online:
                    return
                for n in names:
                    proc = self.nodes.get(n)
                    if proc is not None and not proc.alive():
                        raise RuntimeError(
                            f"SuperNode {n} exited ({proc.popen.returncode}):\n{proc.log_tail()}"
                        )
                if time.monotonic() >= end:
                    raise TimeoutError(
                        f"nodes not online after {timeout:g} s: "
                        f"{sorted(n for n in names if self.node_ids[n] not in online)}"
                    )
                time.sleep(0.3)

    def stop(self) -> None:
        """Stop every SuperNode, then the SuperLink."""
        for proc in self.nodes.values():
            proc.stop()
        if self.superlink is not None:
            self.superlink.stop()

    def __enter__(self) -> LocalDeployment:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
