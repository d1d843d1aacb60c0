"""A stopped SuperNode supervisor starts nothing again.

``hamanasu up`` and a node service call :meth:`SupernodeSupervisor.check` from the
service's poll thread while the main thread stops the supervisor on SIGTERM; a check
after (or during) the stop must not start a new SuperNode that nobody would stop.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nodes.supernode as supernode
from federation.pki import Pki
from federation.processes import ManagedProcess, spawn
from nodes.supernode import SupernodeConfig, SupernodeSupervisor


def test_check_after_stop_starts_no_supernode(tmp_path: Path, monkeypatch) -> None:
    started: list[ManagedProcess] = []

    def fake_start(pki, name, superlink, data_dir, **kwargs):  # a real process that waits
        cmd = [sys.executable, "-c", "import time; time.sleep(120)"]
        proc = spawn(cmd, {}, tmp_path / f"{name}.log", tmp_path)
        started.append(ManagedProcess(name, proc, tmp_path / f"{name}.log", "127.0.0.1:1"))
        return started[-1]

    monkeypatch.setattr(supernode, "start_supernode", fake_start)
    monkeypatch.setattr(SupernodeSupervisor, "check_files", lambda self: Pki(tmp_path / "pki"))
    config = SupernodeConfig(superlink="127.0.0.1:9092", pki_dir=tmp_path, restart_after=0.5)
    sup = SupernodeSupervisor("city", config, tmp_path / "data", tmp_path / "state")
    try:
        sup.start()
        sup.stop()
        assert not started[0].alive()
        checks = [sup.check()]
        time.sleep(0.6)  # past restart_after: a running supervisor would restart it now
        checks.append(sup.check())
        assert checks == [False, False]
        assert len(started) == 1 and sup.starts == 1
    finally:
        for proc in started:
            proc.kill()
