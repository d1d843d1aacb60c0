"""Flower's deployment engine on this machine: start a SuperLink and SuperNodes as processes.

Every link uses TLS (the CA and certificate of :mod:`federation.pki`) and the SuperLink
admits only SuperNodes whose public key was registered (``--enable-supernode-auth``).
SuperNodes dial an address that serves only Flower's Fleet API; the Control and Runtime
APIs, which authenticate no one, listen on loopback (:mod:`federation.superlink_listeners`).
Runtime dependency installation, telemetry and update checks are off; Flower's state
(``FLWR_HOME``) and Ray's temp folder live under the deployment's data folder. The
processes are supervised by :mod:`federation.processes`.

Two speed-ups over Flower's defaults, both on by default and both optional:

* ``fast_poll``: a SuperNode pulls messages every 3 s when idle (hard-wired in
  ``flwr.supernode.start_client_internal``); it runs through this module
  (``python -m federation.launchers supernode``), which caps that sleep at
  :data:`~federation.flower_patches.FAST_POLL_S` and makes object pulls retry after
  20 ms instead of 1 s (:mod:`federation.flower_patches`); SuperExec polls for tasks as
  often (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``).
* ``warm``: instead of Flower's SuperExec, which starts a fresh ``flwr-clientapp`` process
  (importing torch and opacus, ~8 s) for every message, the SuperNode runs with
  ``--isolation process`` next to our warm executor (:mod:`federation.executor`), which
  imports the modules its caller names once and forks one child per task.

A SuperNode started through this module with ``HAMANASU_SUPERNODE_HEARTBEAT_S`` set (or
``start_supernode(heartbeat_interval=...)``) asks the SuperLink for that heartbeat interval
instead of Flower's 30 s (:func:`~federation.flower_patches.set_supernode_heartbeat`): a
dead node then counts as offline, and its messages as unanswerable, after twice that.

Set ``HAMANASU_DEPLOY_TRACE`` to a file to record where a run's time goes
(:mod:`federation.deploy_trace`, summed by ``bench/deployment_bench.py``); the SuperLink
(which always runs through this module) then records each request it serves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from federation.flower_patches import FAST_POLL_S
from federation.pki import Pki, node_key
from federation.processes import ManagedProcess, free_port, spawn, wait_for_port, watch_parent

__all__ = [
    "BASE_PRELOAD",
    "CONTROL_HOST",
    "HEARTBEAT_ENV",
    "SUPERLINK_IN_MEMORY",
    "flower_env",
    "node_config_arg",
    "start_superlink",
    "start_supernode",
]

#: ``--database`` value that keeps a SuperLink's state in Python objects (Flower's default).
SUPERLINK_IN_MEMORY = ":flwr-in-memory:"

#: Heavy third-party modules a warm executor imports once, before forking a child per task.
#: A SuperNode's owner adds its own ClientApp's modules (the node passes its list).
BASE_PRELOAD = ("numpy", "pandas", "torch", "opacus", "flwr.clientapp")

_BIN = Path(sys.executable).parent
#: The modules run with ``python -m``: this one (patched SuperNode / SuperLink), the executor.
_LAUNCHER_MODULE = "federation.launchers"

#: Environment variable: the heartbeat interval (seconds) a SuperNode of this module asks for.
HEARTBEAT_ENV = "HAMANASU_SUPERNODE_HEARTBEAT_S"

#: Where a SuperLink serves its Control and Runtime APIs: loopback only.
CONTROL_HOST = "127.0.0.1"
_EXECUTOR_MODULE = "federation.executor"


def flower_env(
    state_dir: Path, base: Mapping[str, str] | None = None, *, fast_poll: bool = True
) -> dict[str, str]:
    """Return the environment of a Flower process whose state lives under ``state_dir``."""
    env = dict(os.environ if base is None else base)
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_HOME=str(state_dir / "flwr"),
        RAY_TMPDIR=str(state_dir / "ray"),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        PATH=f"{_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    if fast_poll:
        env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(FAST_POLL_S)
    (state_dir / "flwr").mkdir(parents=True, exist_ok=True)
    (state_dir / "ray").mkdir(parents=True, exist_ok=True)
    return env


def node_config_arg(config: Mapping[str, str | int | float | bool]) -> str:
    """Return ``--node-config``'s value for ``config`` (strings quoted, TOML style).

    Raises:
        ValueError: a key or string value that cannot be passed safely.
    """
    parts = []
    for key, value in config.items():
        if not key or any(c in key for c in " ='\""):
            raise ValueError(f"node config key {key!r}")
        if isinstance(value, str):
            if '"' in value or " " in value:
                raise ValueError(f"node config {key}: value must not contain spaces or quotes")
            parts.append(f'{key}="{value}"')
        elif isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def start_superlink(
    pki: Pki,
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    control_port: int | None = None,
    ready_timeout: float = 60.0,
    fast_poll: bool = True,
    database: str = SUPERLINK_IN_MEMORY,
) -> ManagedProcess:
    """Start a SuperLink with TLS and SuperNode authentication.

    SuperNodes dial ``host:port``, which serves only Flower's Fleet API; the Control and
    Runtime APIs (register SuperNodes, start runs, the ServerApp's link) are served on
    ``127.0.0.1:control_port`` only (:mod:`federation.superlink_listeners`).

    Its state (registered nodes, runs, messages in flight) is kept in memory by default
    (Flower's own default): with a SQLite file (``database=path``) every request also
    went through SQLAlchemy and a DP + SecAgg+ round took about twice as long
    (``bench/deployment_bench.py``). Registrations do not survive a restart, so whoever
    starts the SuperLink registers the node keys (the coordinator keeps them).

    Returns:
        The running SuperLink (``address`` is ``host:port``, ``control_address`` the
        loopback one).

    Raises:
        FileNotFoundError: the PKI has no CA / SuperLink certificate.
        RuntimeError: it exited during start-up (the log tail says why).
        TimeoutError: it did not open its ports in time.
    """
    if not pki.can_serve():
        raise FileNotFoundError(
            f"{pki.root}: no CA / SuperLink certificate (run `hamanasu pki init`)"
        )
    port = port or free_port(host)
    control_port = control_port or free_port(CONTROL_HOST)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = flower_env(data_dir / "superlink", fast_poll=fast_poll)
    cmd = [
        sys.executable,
        "-m",
        _LAUNCHER_MODULE,
        "superlink",
        "--fleet-address",
        f"{host}:{port}",
        "--ssl-ca-certfile",
        str(pki.ca_cert),
        "--ssl-certfile",
        str(pki.server_cert),
        "--ssl-keyfile",
        str(pki.server_key),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--host",
        CONTROL_HOST,
        "--port",
        str(control_port),
        "--database",
        database,
    ]
    proc = spawn(cmd, env, data_dir / "logs" / "superlink.log", data_dir)
    managed = ManagedProcess(
        "superlink",
        proc,
        data_dir / "logs" / "superlink.log",
        f"{host}:{port}",
        control_address=f"{CONTROL_HOST}:{control_port}",
    )
    try:
        wait_for_port(CONTROL_HOST, control_port, ready_timeout, proc)
        wait_for_port(host, port, ready_timeout, proc)
    except (RuntimeError, TimeoutError) as exc:
        managed.stop()
        raise RuntimeError(f"SuperLink did not start: {exc}\n{managed.log_tail()}") from None
    return managed


def start_supernode(
    pki: Pki,
    name: str,
    superlink: str,
    data_dir: Path,
    *,
    node_config: Mapping[str, str | int | float | bool] | None = None,
    private_key: Path | None = None,
    port: int | None = None,
    fast_poll: bool = True,
    warm: bool = True,
    preload: Sequence[str] = BASE_PRELOAD,
    torch_threads: int = 1,
    max_retries: int | None = 3,
    max_wait_time: float | None = 30.0,
    heartbeat_interval: float | None = None,
) -> ManagedProcess:
    """Start node ``name``'s SuperNode against ``superlink`` (TLS + its private key).

    ``node_config`` reaches the ClientApp as ``context.node_config`` (``node-name`` is
    added). The call returns once the process runs; whether the SuperLink admitted it is
    seen in the SuperLink's node list (an unregistered key makes the SuperNode exit).
    ``preload`` names the modules the warm executor imports before its first task (the
    node's ClientApp and what it uses). ``torch_threads`` sets the warm executor's torch
    threads per task. It must stay 1 with the warm executor: a child forked after torch
    started a pool of worker threads hangs on its first parallel operation (seen: every
    training message of a node service's SuperNode, before this default). 0 keeps torch's
    default and skips the warm-up. ``max_retries`` / ``max_wait_time`` bound the
    SuperNode's reconnection attempts when the SuperLink goes away (None: keep trying, as
    a node service's SuperNode should while the coordinator restarts).
    ``heartbeat_interval`` (seconds, 10 at least; needs ``fast_poll``, which runs the
    SuperNode through this module) replaces Flower's 30 s heartbeat; None keeps what
    :data:`HEARTBEAT_ENV` in the environment says, else Flower's.

    Returns:
        The SuperNode process (``extra`` holds its warm executor).

    Raises:
        ValueError: a node config that cannot be passed safely.
        OSError: the process cannot be started.
    """
    key = private_key or node_key(pki, name).private_key
    port = port or free_port()
    state = data_dir / "nodes" / name
    env = flower_env(state, fast_poll=fast_poll)
    if heartbeat_interval is not None:
        env[HEARTBEAT_ENV] = f"{heartbeat_interval:g}"
    config = {"node-name": name, **(node_config or {})}
    launcher = (
        [sys.executable, "-m", _LAUNCHER_MODULE, "supernode"]
        if fast_poll
        else [str(_BIN / "flower-supernode")]
    )
    cmd = [
        *launcher,
        "--superlink",
        superlink,
        "--root-certificates",
        str(pki.ca_cert),
        "--auth-supernode-private-key",
        str(key),
        "--node-config",
        node_config_arg(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if max_retries is not None:
        cmd += ["--max-retries", str(max_retries)]
    if max_wait_time is not None:
        cmd += ["--max-wait-time", f"{max_wait_time:g}"]
    if warm:
        cmd += ["--isolation", "process"]
    log_path = data_dir / "logs" / f"{name}.log"
    proc = spawn(cmd, env, log_path, data_dir)
    managed = ManagedProcess(name, proc, log_path, f"127.0.0.1:{port}")
    if warm:
        exec_cmd = [
            sys.executable,
            "-m",
            _EXECUTOR_MODULE,
            "--runtime-api-address",
            f"127.0.0.1:{port}",
            "--parent-pid",
            str(proc.pid),
            "--preload",
            ",".join(preload),
            "--torch-threads",
            str(torch_threads),
        ]
        managed.extra.append(
            spawn(exec_cmd, env, data_dir / "logs" / f"{name}.executor.log", data_dir)
        )
    return managed


# -- the processes (python -m federation.launchers supernode|superlink ARGS) --------------
def _run_supernode(argv: list[str]) -> None:
    """Run ``flower-supernode`` with its idle sleeps capped and fast object pulls.

    With :data:`HEARTBEAT_ENV` set, it asks for that heartbeat interval.
    """
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from federation.deploy_trace import tracing
    from federation.flower_patches import (
        cap_supernode_sleeps,
        fast_object_pulls,
        set_supernode_heartbeat,
        trace_supernode,
    )

    cap_supernode_sleeps()
    fast_object_pulls()
    heartbeat = os.environ.get(HEARTBEAT_ENV, "")
    if heartbeat:
        set_supernode_heartbeat(float(heartbeat))
    if tracing():
        trace_supernode()
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


def _run_superlink(argv: list[str]) -> None:
    """Run ``flower-superlink`` on a loopback control and a Fleet-only listener.

    ``argv`` holds ``--fleet-address HOST:PORT`` and Flower's own arguments
    (:func:`federation.superlink_listeners.serve`); with a deployment trace asked for,
    every HTTP request it serves is recorded too.
    """
    from federation.deploy_trace import tracing
    from federation.flower_patches import trace_superlink_requests
    from federation.superlink_listeners import serve

    if tracing():
        trace_superlink_requests()
    serve(argv)


_LAUNCHERS = {"supernode": _run_supernode, "superlink": _run_superlink}


def _main(argv: list[str]) -> None:
    if not argv or argv[0] not in _LAUNCHERS:
        raise SystemExit(f"usage: python -m {_LAUNCHER_MODULE} {'|'.join(_LAUNCHERS)} ARGS")
    watch_parent()  # a starter killed with SIGKILL takes this process and its group along
    _LAUNCHERS[argv[0]](argv[1:])


if __name__ == "__main__":
    _main(sys.argv[1:])
