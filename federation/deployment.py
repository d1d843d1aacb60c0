"""Flower's deployment engine on this machine: a SuperLink and SuperNodes as real processes.

Every link uses TLS (the CA and certificate of :mod:`federation.pki`) and the SuperLink
admits only SuperNodes whose public key was registered (``--enable-supernode-auth``).
Runtime dependency installation, telemetry and update checks are off; Flower's state
(``FLWR_HOME``) and Ray's temp folder live under the deployment's data folder.

Two speed-ups over Flower's defaults, both on by default and both optional:

* ``fast_poll``: a SuperNode pulls messages every 3 s when idle (hard-wired in
  ``flwr.supernode.start_client_internal``); our launcher caps that sleep at
  :data:`FAST_POLL_S`, and SuperExec polls for tasks as often
  (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``).
* ``warm``: instead of Flower's SuperExec, which starts a fresh ``flwr-clientapp`` process
  (importing torch and opacus, ~8 s) for every message, the SuperNode runs with
  ``--isolation process`` next to our executor (``python -m federation.deployment
  executor``), which imports the heavy modules once, runs one tiny DP-SGD step (torch
  and Opacus set themselves up lazily on first use: 1-3 s) and forks one child per task.
  Each message still runs in its own process, through Flower's own ``run_clientapp``;
  nothing of a job, a node's data or its gate is cached across messages.

With ``fast_poll``, Flower's object pulls also retry after 20 ms instead of 1 s
(:func:`fast_object_pulls`; the SuperNode, the executor's children and the ServerApp
all pull message content object by object and often ask before it has arrived).
Set ``HAMANASU_DEPLOY_TRACE`` to a file to record where a run's time goes
(:mod:`federation.deploy_trace`, summed by ``bench/deployment_bench.py``); the SuperLink
then runs through our launcher, which records each request it serves.

Processes start in their own session, so stopping (SIGTERM, then SIGKILL) or killing a
node takes its children with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.pki import Pki, init_pki, node_key

__all__ = [
    "FAST_POLL_S",
    "FAST_PULL_BACKOFF_S",
    "SUPERLINK_IN_MEMORY",
    "LocalDeployment",
    "ManagedProcess",
    "bound_object_pulls",
    "fast_object_pulls",
    "flower_env",
    "free_port",
    "node_config_arg",
    "start_superlink",
    "start_supernode",
    "wait_for_port",
    "warm_up_training",
]

#: ``--database`` value that keeps a SuperLink's state in Python objects (Flower's default).
SUPERLINK_IN_MEMORY = ":flwr-in-memory:"

#: Longest idle sleep of a SuperNode / executor poll with ``fast_poll`` (seconds).
FAST_POLL_S = 0.2

#: First wait of Flower's object pulls after "not yet available" with ``fast_poll`` (s).
#: Flower waits 1 s, then 2, 4 ... up to 10 s: between the moment a message is announced
#: and its content lands at the sender's side, which on a LAN takes milliseconds.
FAST_PULL_BACKOFF_S = 0.02
#: Longest wait between object pull attempts with ``fast_poll`` (seconds).
FAST_PULL_BACKOFF_CAP_S = 0.5

#: Modules a warm executor imports once, before forking a child per task.
DEFAULT_PRELOAD = (
    "numpy",
    "pandas",
    "torch",
    "opacus",
    "flwr.clientapp",
    "nodes.client_app",
    "nodes.enforcement",
    "nodes.flower_client",
    "nodes.data_loading",
    "federation.cdm",
    "policies",
    "consent",
)

#: Longest sleep of a SuperNode's local waits (a reply from its ClientApp) with
#: ``fast_poll``: these only read the SuperNode's own state, so they can be short.
FAST_LOCAL_POLL_S = 0.05

_BIN = Path(sys.executable).parent


def fast_object_pulls(
    initial: float = FAST_PULL_BACKOFF_S, cap: float = FAST_PULL_BACKOFF_CAP_S
) -> None:
    """Make this process's Flower object pulls retry after ``initial`` s (doubling to ``cap``).

    Flower pulls a message's content object by object and, when an object is not there
    yet, waits 1 s before asking again (``PULL_INITIAL_BACKOFF``): on a LAN that wait is
    most of a SecAgg+ exchange. The defaults live in the signatures of
    ``flwr.supercore.inflatable.inflatable_utils.pull_objects`` and
    ``pull_and_inflate_object_from_tree``, which every caller (SuperNode, ClientApp,
    ServerApp grid) shares, so they are changed there; the number of tries and the overall
    time limit stay Flower's.
    """
    from flwr.supercore.inflatable import inflatable_utils

    for fn in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        defaults = dict(fn.__kwdefaults__ or {})
        defaults.update(initial_backoff=initial, backoff_cap=cap)
        fn.__kwdefaults__ = defaults


def bound_object_pulls(max_time: float) -> None:
    """Make this process give up pulling a message's content after ``max_time`` seconds.

    A node killed while uploading a reply leaves the message at the SuperLink without all
    of its objects; Flower keeps asking for them for up to 500 tries (minutes) before it
    turns the reply into an error, stalling the round long past its stage timeout. The
    ServerApp bounds that wait by the stage timeout: a reply still incomplete by then
    counts as missing (Flower's own "objects unavailable" error reply).
    """
    from flwr.supercore.inflatable import inflatable_utils

    for fn in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        defaults = dict(fn.__kwdefaults__ or {})
        if "max_time" in defaults:
            defaults["max_time"] = float(max_time)
            fn.__kwdefaults__ = defaults


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``host:port`` accepts connections.

    Raises:
        TimeoutError: not within ``timeout`` seconds.
        RuntimeError: ``proc`` exited first.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with code {proc.returncode} before {host}:{port} opened"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} did not open within {timeout:g} s")


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


@dataclass
class ManagedProcess:
    """A Flower process we started (in its own session), its log and its address."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    address: str
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The process id."""
        return int(self.popen.pid)

    def alive(self) -> bool:
        """Return True while the process runs."""
        return self.popen.poll() is None

    def _signal_all(self, sig: int) -> None:
        for proc in [self.popen, *self.extra]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def kill(self) -> None:
        """Kill the process and its children at once (SIGKILL): a node that dies."""
        self._signal_all(signal.SIGKILL)
        for proc in [self.popen, *self.extra]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly (SIGTERM), then SIGKILL whatever is left after ``timeout``."""
        self._signal_all(signal.SIGTERM)
        end = time.monotonic() + timeout
        for proc in [self.popen, *self.extra]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, end - time.monotonic()))
        self._signal_all(signal.SIGKILL)
        for proc in [self.popen, *self.extra]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)

    def log_tail(self, chars: int = 2000) -> str:
        """Return the end of the process's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _spawn(
    cmd: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own fixed command line
            list(cmd),
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def start_superlink(
    pki: Pki,
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    ready_timeout: float = 60.0,
    fast_poll: bool = True,
    database: str = SUPERLINK_IN_MEMORY,
) -> ManagedProcess:
    """Start a SuperLink with TLS and SuperNode authentication on ``host:port``.

    Its state (registered nodes, runs, messages in flight) is kept in memory by default
    (Flower's own default): with a SQLite file (``database=path``) every request also
    went through SQLAlchemy and a DP + SecAgg+ round took about twice as long
    (``bench/deployment_bench.py``). Registrations do not survive a restart, so whoever
    starts the SuperLink registers the node keys (the coordinator keeps them).

    Returns:
        The running SuperLink (its ``address`` is ``host:port``).

    Raises:
        RuntimeError: it exited during start-up (the log tail says why).
        TimeoutError: it did not open its port in time.
    """
    if not pki.exists():
        raise FileNotFoundError(
            f"{pki.root}: no CA / SuperLink certificate (run `hamanasu pki init`)"
        )
    port = port or free_port(host)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = flower_env(data_dir / "superlink", fast_poll=fast_poll)
    from federation.deploy_trace import tracing

    launcher = (
        [sys.executable, "-m", "federation.deployment", "superlink"]
        if tracing()
        else [str(_BIN / "flower-superlink")]
    )
    cmd = [
        *launcher,
        "--ssl-ca-certfile",
        str(pki.ca_cert),
        "--ssl-certfile",
        str(pki.server_cert),
        "--ssl-keyfile",
        str(pki.server_key),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        database,
    ]
    proc = _spawn(cmd, env, data_dir / "logs" / "superlink.log", data_dir)
    managed = ManagedProcess(
        "superlink", proc, data_dir / "logs" / "superlink.log", f"{host}:{port}"
    )
    try:
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
    preload: Sequence[str] = DEFAULT_PRELOAD,
    torch_threads: int = 1,
    max_retries: int | None = 3,
    max_wait_time: float | None = 30.0,
) -> ManagedProcess:
    """Start node ``name``'s SuperNode against ``superlink`` (TLS + its private key).

    ``node_config`` reaches the ClientApp as ``context.node_config`` (``node-name`` is
    added). The call returns once the process runs; whether the SuperLink admitted it is
    seen in the SuperLink's node list (an unregistered key makes the SuperNode exit).
    ``torch_threads`` sets the warm executor's torch threads per task. It must stay 1 with
    the warm executor: a child forked after torch started a pool of worker threads hangs
    on its first parallel operation (seen: every training message of a node service's
    SuperNode, before this default). 0 keeps torch's default and skips the warm-up.
    ``max_retries`` / ``max_wait_time`` bound the SuperNode's reconnection attempts when
    the SuperLink goes away (None: keep trying, as a node service's SuperNode should
    while the coordinator restarts).

    Returns:
        The SuperNode process (``extra`` holds its warm executor).
    """
    key = private_key or node_key(pki, name).private_key
    port = port or free_port()
    state = data_dir / "nodes" / name
    env = flower_env(state, fast_poll=fast_poll)
    config = {"node-name": name, **(node_config or {})}
    launcher = (
        [sys.executable, "-m", "federation.deployment", "supernode"]
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
    proc = _spawn(cmd, env, log_path, data_dir)
    managed = ManagedProcess(name, proc, log_path, f"127.0.0.1:{port}")
    if warm:
        exec_cmd = [
            sys.executable,
            "-m",
            "federation.deployment",
            "executor",
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
            _spawn(exec_cmd, env, data_dir / "logs" / f"{name}.executor.log", data_dir)
        )
    return managed


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
    superlink: ManagedProcess | None = None
    nodes: dict[str, ManagedProcess] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)

    @property
    def pki(self) -> Pki:
        """The deployment's PKI (``data_dir/pki``), created on :meth:`start`."""
        return Pki(self.data_dir / "pki")

    def start(self) -> LocalDeployment:
        """Create the PKI if needed and start the SuperLink.

        Returns:
            self.
        """
        if not self.pki.exists():
            init_pki(self.pki.root)
        self.superlink = start_superlink(
            self.pki, self.data_dir, fast_poll=self.fast_poll, database=self.database
        )
        return self

    def control(self) -> Any:
        """Return a Control API client (:class:`coordinator.flower_control.FlowerControl`)."""
        import importlib

        if self.superlink is None:
            raise RuntimeError("the deployment is not started")
        module = importlib.import_module("coordinator.flower_control")
        return module.FlowerControl(self.superlink.address, self.pki.ca_cert)

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
        assert self.superlink is not None
        proc = start_supernode(
            self.pki,
            name,
            self.superlink.address,
            self.data_dir,
            node_config=node_config,
            private_key=private_key,
            fast_poll=self.fast_poll,
            warm=self.warm,
            torch_threads=1,
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


# -- launchers (python -m federation.deployment supernode|executor ...) ------------------
class _CappedTime:
    """The ``time`` module with ``sleep`` capped, for Flower's hard-wired poll sleeps.

    Sleeps of a second or more (the idle poll of the SuperLink) are capped at ``cap``;
    shorter ones (local waits for a ClientApp's reply or an object) at ``local_cap``.
    """

    def __init__(self, cap: float, local_cap: float) -> None:
        self._cap, self._local_cap = cap, local_cap

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self._cap if seconds >= 1.0 else self._local_cap))


def warm_up_training() -> None:
    """Run one tiny DP-SGD step so lazy imports and first-call set-up happen now.

    torch builds its optimiser machinery (``torch._dynamo``) on the first optimiser
    created in a process and Opacus its grad samplers and accountants on first use: about
    1 s (3 s on a loaded machine) that a forked child would otherwise pay on every
    training message. Nothing of a job or a node is touched.
    """
    import numpy as np

    from federation.dp_training import epsilon_spent, plan_dp, train_local
    from federation.models import build_model

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 2)), (rng.random(64) > 0.5).astype(np.float64)
    plan = plan_dp(64, 16, 1, 2, 1.0, 1e-5)
    train_local(
        build_model("logreg", 2),
        x,
        y,
        plan,
        max_grad_norm=1.0,
        learning_rate=0.1,
        batch_size=16,
        local_epochs=1,
        seed=0,
    )
    epsilon_spent(plan, 1)


def _run_supernode(argv: list[str]) -> None:
    """Run ``flower-supernode`` with its idle sleeps capped at :data:`FAST_POLL_S`."""
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from federation.deploy_trace import tracing

    capped = _CappedTime(FAST_POLL_S, FAST_LOCAL_POLL_S)
    start_client_internal.time = capped  # type: ignore[assignment]
    fast_object_pulls()
    if tracing():
        _trace_functions(
            start_client_internal, "supernode", ("_pull_and_store_message", "_push_messages")
        )
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


def _run_superlink(argv: list[str]) -> None:
    """Run ``flower-superlink`` recording every HTTP request it serves (tracing only).

    Each request becomes a ``superlink.request`` trace event with its path, so the bench
    can count what a round costs the SuperLink.
    """
    from flwr.superlink import main as superlink_main
    from flwr.superlink.cli.flower_superlink import flower_superlink

    from federation.deploy_trace import trace

    create_app = superlink_main.create_app

    def traced_app(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        build = app.build_middleware_stack

        def counted() -> Any:
            inner = build()

            async def asgi(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http":
                    trace("superlink.request", path=scope["path"])
                await inner(scope, receive, send)

            return asgi

        app.build_middleware_stack = counted  # type: ignore[method-assign]
        return app

    superlink_main.create_app = traced_app
    sys.argv = ["flower-superlink", *argv]
    flower_superlink()


def _run_executor(argv: list[str]) -> None:
    """Poll a SuperNode's Runtime API for ClientApp tasks; fork a warm child per task."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(prog="python -m federation.deployment executor")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--preload", default="")
    parser.add_argument("--poll", type=float, default=FAST_POLL_S / 4)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false")
    args = parser.parse_args(argv)
    for module in filter(None, args.preload.split(",")):
        importlib.import_module(module)
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    # Warming torch up starts its thread pool; forking after that is only safe single-threaded.
    if args.warm_up and args.torch_threads == 1:
        warm_up_training()
    fast_object_pulls()
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime import run_clientapp as rc_module
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    from federation.deploy_trace import trace, tracing

    if tracing():
        _trace_run_clientapp(rc_module)
    client = RuntimeHttpClient.from_server_address(
        server_address=args.runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    print(f"warm executor ready for {args.runtime_api_address}", flush=True)
    children: set[int] = set()
    while True:
        if args.parent_pid is not None:
            try:
                os.kill(args.parent_pid, 0)
            except ProcessLookupError:
                return
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    children.discard(pid)
        try:
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        except Exception as exc:  # noqa: BLE001 - the SuperNode is starting or going away
            print(f"acquire task: {type(exc).__name__}: {exc}", flush=True)
            time.sleep(1.0)
            continue
        if res.HasField("task") and res.token:
            trace("executor.acquired")
            pid = os.fork()
            if pid == 0:  # the child runs exactly one task, in its own process
                code = 1
                trace("child.start")
                try:
                    run_clientapp(
                        runtime_api_address=args.runtime_api_address,
                        token=res.token,
                        insecure=True,
                        certificates=None,
                        parent_pid=args.parent_pid,
                        runtime_dependency_install=False,
                    )
                    code = 0
                except SystemExit as exc:
                    code = int(exc.code or 0) if isinstance(exc.code, int | None) else 1
                finally:
                    trace("child.end", code=code)
                    os._exit(code)
            children.add(pid)
            continue
        time.sleep(args.poll)


def _trace_functions(module: Any, prefix: str, names: Sequence[str]) -> None:
    """Wrap ``module``'s functions ``names`` with start / end trace events (tracing only)."""
    from federation.deploy_trace import trace

    def wrap(name: str) -> None:
        inner = getattr(module, name)

        def traced(*args: Any, **kwargs: Any) -> Any:
            trace(f"{prefix}.{name}.start")
            try:
                return inner(*args, **kwargs)
            finally:
                trace(f"{prefix}.{name}.end")

        setattr(module, name, traced)

    for name in names:
        wrap(name)


def _trace_run_clientapp(module: Any) -> None:
    """Wrap the steps of Flower's ``run_clientapp`` with trace events (tracing only)."""
    _trace_functions(
        module,
        "child",
        ("pull_task_input", "install_from_fab", "push_message", "push_task_output"),
    )


_LAUNCHERS = {"supernode": _run_supernode, "executor": _run_executor, "superlink": _run_superlink}


def _main(argv: list[str]) -> None:
    if not argv or argv[0] not in _LAUNCHERS:
        raise SystemExit(f"usage: python -m federation.deployment {'|'.join(_LAUNCHERS)} ARGS")
    _LAUNCHERS[argv[0]](argv[1:])


if __name__ == "__main__":
    _main(sys.argv[1:])
