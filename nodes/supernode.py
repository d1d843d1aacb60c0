"""The node's Flower SuperNode, started and watched by the node service.

``hamanasu node serve`` starts the SuperNode of ``[node.supernode]`` next to the poll loop:
it dials the coordinator's SuperLink (outbound, TLS against the federation's CA) and
authenticates with the node's own key. The SuperNode gets the node's data and state
folders as its node config, so every message of a run goes through the node's
enforcement point (:mod:`nodes.flower_client`). A SuperNode that dies (a crash, or the
SuperLink gone for longer than its retries) is started again, with a back-off.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from federation.launchers import BASE_PRELOAD, start_supernode
from federation.pid_files import stop_orphans, write_pid_file
from federation.pki import Pki
from federation.processes import ManagedProcess

__all__ = ["CLIENT_PRELOAD", "SupernodeConfig", "SupernodeSupervisor"]

log = logging.getLogger("hamanasu.node.supernode")

#: What the SuperNode's warm executor imports once, before it forks a child per task: the
#: heavy libraries, then the node's ClientApp and what it reads through.
CLIENT_PRELOAD = (
    *BASE_PRELOAD,
    "nodes.client_app",
    "nodes.enforcement",
    "nodes.flower_client",
    "nodes.data_loading",
    "federation.cdm",
    "policies",
    "consent",
)


class SupernodeConfig(BaseModel):
    """The ``[node.supernode]`` table of ``node.toml``.

    Attributes:
        superlink: the SuperLink's ``host:port`` (its certificate must name ``host``).
        pki_dir: the node's PKI folder: the federation's ``ca.pem`` and the node's own key
            pair as ``hamanasu pki node-key NAME --dir PKI_DIR`` writes it (private key
            0600; only its public half goes to the operator).
        restart_after: seconds to wait before starting a SuperNode that exited.
    """

    model_config = ConfigDict(extra="forbid")

    superlink: str = Field(pattern=r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")
    pki_dir: Path
    restart_after: float = Field(default=5.0, ge=0.5, le=600)


class SupernodeSupervisor:
    """Starts the node's SuperNode and keeps it running.

    Args:
        name: the node's name (as registered with the SuperLink).
        config: the ``[node.supernode]`` table.
        data_dir: the node's data folder (the ClientApp reads it).
        state_dir: the node's state folder (policy, consents, ledger, budget).
    """

    def __init__(self, name: str, config: SupernodeConfig, data_dir: Path, state_dir: Path) -> None:
        # absolute: the SuperNode and its executor run in folders of their own
        self.name = name
        self.config = config.model_copy(update={"pki_dir": config.pki_dir.resolve()})
        self.data_dir, self.state_dir = data_dir.resolve(), state_dir.resolve()
        self.process: ManagedProcess | None = None
        self.starts = 0
        self._exited_at: float | None = None
        self._stopped = False
        self._lock = threading.Lock()  # check() in a service thread, stop() in the main one

    def check_files(self) -> Pki:
        """Return the node's PKI folder after checking it holds the CA and the node's key.

        Raises:
            FileNotFoundError: the CA certificate or the node's private key is missing.
            PermissionError: the private key is readable by others.
        """
        pki = Pki(self.config.pki_dir)
        key = pki.node(self.name).private_key
        if not pki.ca_cert.is_file():
            raise FileNotFoundError(f"supernode.pki_dir: no CA certificate {pki.ca_cert}")
        if not key.is_file():
            raise FileNotFoundError(
                f"supernode.pki_dir: no private key for {self.name} "
                f"(run `hamanasu pki node-key {self.name} --dir {self.config.pki_dir}`)"
            )
        if key.stat().st_mode & 0o077:
            raise PermissionError(f"supernode.pki_dir: {key.name} is readable by others")
        return pki

    def start(self) -> ManagedProcess:
        """Start the SuperNode; return its process.

        Raises:
            FileNotFoundError, PermissionError: see :meth:`check_files`.
        """
        pki = self.check_files()
        pid_file = self.state_dir / "flower" / "supernode.pid"
        stop_orphans(pid_file, "supernode", "executor")
        self.process = start_supernode(
            pki,
            self.name,
            self.config.superlink,
            self.state_dir / "flower",
            node_config={"data-dir": str(self.data_dir), "state-dir": str(self.state_dir)},
            private_key=pki.node(self.name).private_key,
            preload=CLIENT_PRELOAD,
            # keep dialling while the coordinator (and its SuperLink) restarts
            max_retries=None,
            max_wait_time=None,
        )
        write_pid_file(pid_file, [self.process.pid, *(p.pid for p in self.process.extra)])
        self.starts += 1
        self._exited_at = None
        log.info("SuperNode started (pid %d) towards %s", self.process.pid, self.config.superlink)
        return self.process

    def check(self) -> bool:
        """Restart the SuperNode if it exited more than ``restart_after`` seconds ago.

        Returns:
            True if it was (re)started by this call.
        """
        with self._lock:
            return self._check()

    def _check(self) -> bool:
        if self._stopped or (self.process is not None and self.process.alive()):
            return False
        now = time.monotonic()
        if self.process is not None and self._exited_at is None:
            self._exited_at = now
            log.warning(
                "SuperNode exited (code %s); restarting in %g s",
                self.process.popen.returncode,
                self.config.restart_after,
            )
        if self._exited_at is not None and now - self._exited_at < self.config.restart_after:
            return False
        self.start()
        return True

    def status(self) -> dict[str, Any]:
        """Return the SuperNode's state for the node's status view (no secrets)."""
        proc = self.process
        return {
            "superlink": self.config.superlink,
            "running": bool(proc and proc.alive()),
            "pid": proc.pid if proc else None,
            "starts": self.starts,
            "exit_code": None if proc is None or proc.alive() else proc.popen.returncode,
        }

    def stop(self) -> None:
        """Stop the SuperNode (SIGTERM, then SIGKILL) and its executor; no restart after."""
        with self._lock:
            self._stopped = True
            if self.process is not None:
                self.process.stop()
                (self.state_dir / "flower" / "supernode.pid").unlink(missing_ok=True)
