"""Flower's deployment engine beside the coordinator: its SuperLink and the runner over it.

With ``engine = "deployment"`` the coordinator starts a SuperLink (TLS with the
federation's certificate, SuperNode authentication on) when it starts, runs approved jobs
on it through :class:`~coordinator.deployment_runner.DeploymentRunner`, and stops it when it
stops. The operator registers each node's SuperNode public key through the API
(``POST /nodes/{name}/supernode-key``); only registered keys can join a run.

SuperNodes dial ``superlink_host:superlink_port``, which serves Flower's Fleet API and
nothing else. Flower's Control API (register or unregister SuperNodes, start runs) and
its Runtime API authenticate no caller, so they listen on loopback only
(``127.0.0.1:superlink_control_port``), where this engine alone calls them.

The SuperLink keeps its state (registered nodes, runs, messages) in memory, Flower's
default: a file database made every message exchange about twice as slow. The
coordinator's database holds the registered keys, and :meth:`FlowerEngine.restore_keys`
registers them again on every start. A SuperNode that dials in before that is refused
and exits; the node service starts it again.

The SuperLink has its own process group (so that stopping it takes its ServerApp
processes along); when the coordinator is killed with SIGKILL the SuperLink notices and
stops that group within a few seconds, and the pid file under the data folder lets the
next start stop it should it still run before it binds the same port.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

from coordinator.deployment_runner import DeploymentRunner
from coordinator.errors import Conflict, SettingsError
from coordinator.flower_control import FlowerApp, FlowerControl, FlowerControlError
from coordinator.settings import CoordinatorSettings
from federation.cdm import declared_ranges
from federation.launchers import start_superlink
from federation.pid_files import stop_orphans, write_pid_file
from federation.pki import Pki, load_node_public_key
from federation.processes import ManagedProcess
from federation.secret_files import SecretFileError, check_private_file

__all__ = ["FlowerEngine"]

log = logging.getLogger("hamanasu.coordinator")


class FlowerEngine:
    """The SuperLink the coordinator runs, and the runner that uses it.

    Args:
        settings: the coordinator's settings (``pki_dir``, ``superlink_*``, ``run_*``).
        app: the Flower app every job runs as (the ``hamanasu`` command passes its own).
    """

    def __init__(self, settings: CoordinatorSettings, app: FlowerApp) -> None:
        self.settings, self.app = settings, app
        # absolute: the SuperLink runs in a folder of its own
        self.pki = Pki((settings.pki_dir or settings.data_dir / "pki").resolve())
        self.folder = (settings.data_dir / "flower").resolve()
        self.superlink: ManagedProcess | None = None

    @property
    def address(self) -> str:
        """The SuperLink's ``host:port`` that SuperNodes dial (Fleet API only)."""
        return f"{self.settings.superlink_host}:{self.settings.superlink_port}"

    @property
    def control_address(self) -> str:
        """The SuperLink's loopback ``host:port`` for the Control API, once started.

        Raises:
            RuntimeError: the SuperLink is not running.
        """
        if self.superlink is None:
            raise RuntimeError("the SuperLink is not running")
        return self.superlink.control_address

    def start(self) -> FlowerEngine:
        """Start the SuperLink (stopping an orphan left by a killed coordinator first).

        Returns:
            self.

        Raises:
            SettingsError: no PKI, or the SuperLink did not start (the reason, no secrets).
        """
        if not self.pki.can_serve():
            raise SettingsError(
                f"pki_dir: {self.pki.root} holds no CA / SuperLink certificate "
                "(run `hamanasu pki init --dir ...`)",
                field="pki_dir",
            )
        try:
            check_private_file(self.pki.server_key, "pki_dir")
        except SecretFileError as exc:
            raise SettingsError(str(exc), field="pki_dir") from None
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        pid_file = self.folder / "superlink.pid"
        stop_orphans(pid_file, "superlink")
        try:
            self.superlink = start_superlink(
                self.pki,
                self.folder,
                host=self.settings.superlink_host,
                port=self.settings.superlink_port,
                control_port=self.settings.superlink_control_port or None,
            )
        except (RuntimeError, TimeoutError) as exc:
            raise SettingsError(
                f"superlink_port: the SuperLink did not start: {str(exc).splitlines()[0]}",
                field="superlink_port",
            ) from None
        write_pid_file(pid_file, [self.superlink.pid])
        log.info(
            "SuperLink: Fleet API on %s (TLS, SuperNode authentication), Control API on %s",
            self.address,
            self.control_address,
        )
        return self

    def runner(self) -> DeploymentRunner:
        """Return the runner that runs approved jobs on this SuperLink."""
        return DeploymentRunner(
            self.control_address,
            self.pki.ca_cert,
            (self.settings.data_dir / "runs").resolve(),
            app=self.app,
            max_records=self.settings.secagg_max_records,
            declared_ranges=declared_ranges,
            start_timeout=self.settings.run_start_timeout,
            run_timeout=self.settings.run_timeout or None,
        )

    def register_node(self, name: str, public_key: str) -> int:
        """Register node ``name``'s SuperNode public key (OpenSSH, ECDSA P-384).

        Returns:
            The node id the SuperLink gave the node.

        Raises:
            ValueError: the key is not an OpenSSH ECDSA P-384 public key (field
                ``public_key``).
            Conflict: the SuperLink refused it (e.g. the key or name is registered).
        """
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "node.pub"
            path.write_text(public_key.strip() + "\n", encoding="utf-8")
            try:
                load_node_public_key(path)
            except ValueError as exc:
                raise ValueError(f"public_key: {exc}") from None
            try:
                with FlowerControl(self.control_address, self.pki.ca_cert) as ctl:
                    return ctl.register_node(path, name)
            except FlowerControlError as exc:
                raise Conflict(
                    f"public_key: the SuperLink refused it: {exc}", field="public_key"
                ) from None

    def restore_keys(self, keys: Mapping[str, str]) -> dict[str, int]:
        """Register again the SuperNode keys the coordinator recorded (name -> public key).

        A key the SuperLink refuses is logged by node name and skipped: the others must
        still be able to join.

        Returns:
            name -> the node id the SuperLink gave it, for the keys it took.
        """
        ids: dict[str, int] = {}
        for name, key in keys.items():
            try:
                ids[name] = self.register_node(name, key)
            except (ValueError, Conflict) as exc:
                log.warning("SuperNode key of node %s not registered again: %s", name, exc)
        if ids:
            log.info("registered the SuperNode keys of %s again", ", ".join(sorted(ids)))
        return ids

    def online(self) -> dict[str, bool]:
        """Return, per registered node name, whether its SuperNode is connected now.

        Raises:
            FlowerControlError: the SuperLink cannot be reached.
        """
        with FlowerControl(self.control_address, self.pki.ca_cert) as ctl:
            return {n.name: bool(n.online) for n in ctl.nodes() if n.status != "unregistered"}

    def problem(self) -> str | None:
        """Return why the SuperLink is not ready, or None when it runs and answers.

        It is ready when its process runs and its Control API lists the nodes (a short
        call on loopback).
        """
        if self.superlink is None:
            return "not started"
        if not self.superlink.alive():
            return f"exited (code {self.superlink.popen.returncode})"
        try:
            with FlowerControl(self.control_address, self.pki.ca_cert, timeout=5.0) as ctl:
                ctl.nodes()
        except FlowerControlError:
            return "does not answer its Control API"
        return None

    def stop(self) -> None:
        """Stop the SuperLink and its ServerApp processes."""
        if self.superlink is not None:
            self.superlink.stop()
            (self.folder / "superlink.pid").unlink(missing_ok=True)
            self.superlink = None
