"""Every change we make to Flower's internals at run time, in one module.

Flower hard-wires a few waits that matter on a LAN and offers no setting for them; we
change them in place, in the process that runs Flower (a SuperNode, the warm executor and
its children, the ServerApp, the traced SuperLink):

* :func:`fast_object_pulls` / :func:`bound_object_pulls`: the keyword defaults
  (``__kwdefaults__``) of ``flwr.supercore.inflatable.inflatable_utils.pull_objects`` and
  ``pull_and_inflate_object_from_tree`` (first back-off, back-off cap, overall time limit);
* :func:`cap_supernode_sleeps`: the ``time`` module seen by
  ``flwr.supernode.start_client_internal`` (its idle poll sleeps 3 s);
* :func:`set_supernode_heartbeat`: the ``HEARTBEAT_DEFAULT_INTERVAL`` seen by
  ``flwr.supernode.fleet_http_connection`` and ``flwr.supercore.heartbeat`` (a SuperNode
  always asks for Flower's default 30 s interval; the SuperLink accepts 10 s to 30 min);
* :func:`serve_superlink_twice`: the ``uvicorn`` module seen by
  ``flwr.superlink.cli.flower_superlink`` (it serves the SuperLink's one app on one
  socket; we serve it on a loopback control socket and a Fleet-only one);
* not a patch but the same risk: :mod:`federation.embedded` implements Flower's ``Grid``
  and relies on ``Run``, ``TaskIdentity`` and the simulation's node-config keys;
  :func:`check_patch_targets` checks those too;
* :func:`trace_supernode`, :func:`trace_run_clientapp`, :func:`trace_superlink_requests`:
  start / end events around Flower functions, only when a deployment trace is asked for
  (:mod:`federation.deploy_trace`).

Such patches break silently when Flower moves what they touch, so each one checks its
target first and raises :class:`FlowerPatchError` naming it, and
:func:`check_patch_targets` lists every target at once (a contract test calls it). The
pinned Flower is 1.42 (``flwr==1.42.*``).
"""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Callable, Sequence
from importlib import import_module
from types import ModuleType
from typing import Any

__all__ = [
    "FAST_LOCAL_POLL_S",
    "FAST_POLL_S",
    "FAST_PULL_BACKOFF_CAP_S",
    "FAST_PULL_BACKOFF_S",
    "FlowerPatchError",
    "bound_object_pulls",
    "cap_supernode_sleeps",
    "check_patch_targets",
    "fast_object_pulls",
    "serve_superlink_twice",
    "set_supernode_heartbeat",
    "trace_run_clientapp",
    "trace_superlink_requests",
    "trace_supernode",
]

#: Longest idle sleep of a SuperNode / executor poll with ``fast_poll`` (seconds).
FAST_POLL_S = 0.2

#: Longest sleep of a SuperNode's local waits (a reply from its ClientApp) with
#: ``fast_poll``: these only read the SuperNode's own state, so they can be short.
FAST_LOCAL_POLL_S = 0.05

#: First wait of Flower's object pulls after "not yet available" with ``fast_poll`` (s).
#: Flower waits 1 s, then 2, 4 ... up to 10 s: between the moment a message is announced
#: and its content lands at the sender's side, which on a LAN takes milliseconds.
FAST_PULL_BACKOFF_S = 0.02
#: Longest wait between object pull attempts with ``fast_poll`` (seconds).
FAST_PULL_BACKOFF_CAP_S = 0.5

#: Keyword defaults of the object-pull functions that the pull patches change.
_PULL_KWARGS = ("initial_backoff", "backoff_cap", "max_time")
#: Functions of ``start_client_internal`` traced around a SuperNode's pulls and pushes.
_SUPERNODE_TRACED = ("_pull_and_store_message", "_push_messages")
#: Functions of ``run_clientapp`` traced around a ClientApp task's steps.
_CLIENTAPP_TRACED = ("pull_task_input", "install_from_fab", "push_message", "push_task_output")


class FlowerPatchError(RuntimeError):
    """What a patch changes is no longer where it was: Flower moved it (the message says what)."""


def _pull_functions() -> tuple[Callable[..., Any], ...]:
    from flwr.supercore.inflatable import inflatable_utils

    return (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree)


def _check_pull_functions() -> list[str]:
    problems = []
    try:
        functions = _pull_functions()
    except (ImportError, AttributeError) as exc:
        return [f"flwr.supercore.inflatable.inflatable_utils: {exc}"]
    for fn in functions:
        missing = [k for k in _PULL_KWARGS if k not in (fn.__kwdefaults__ or {})]
        if missing:
            problems.append(f"{fn.__module__}.{fn.__name__}: no keyword default(s) {missing}")
    return problems


def _check_functions(module_name: str, names: Sequence[str]) -> list[str]:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return [f"{module_name}: {exc}"]
    return [
        f"{module_name}.{name}: gone"
        for name in names
        if not inspect.isfunction(getattr(module, name, None))
    ]


def _check_supernode_sleeps() -> list[str]:
    try:
        from flwr.supernode import start_client_internal
    except ImportError as exc:
        return [f"flwr.supernode.start_client_internal: {exc}"]
    if getattr(start_client_internal, "time", None) is not time and not isinstance(
        getattr(start_client_internal, "time", None), _CappedTime
    ):
        return ["flwr.supernode.start_client_internal: no longer sleeps through `time`"]
    if "time.sleep(" not in inspect.getsource(start_client_internal):
        return ["flwr.supernode.start_client_internal: no `time.sleep(...)` call left to cap"]
    return []


#: Modules of a SuperNode process that read Flower's heartbeat interval as a module global.
_HEARTBEAT_MODULES = ("flwr.supernode.fleet_http_connection", "flwr.supercore.heartbeat")


def _check_heartbeat_modules() -> list[str]:
    problems = []
    for name in _HEARTBEAT_MODULES:
        try:
            module = import_module(name)
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if not isinstance(getattr(module, "HEARTBEAT_DEFAULT_INTERVAL", None), (int, float)):
            problems.append(f"{name}: no HEARTBEAT_DEFAULT_INTERVAL to set")
    return problems


def _check_superlink_app() -> list[str]:
    try:
        from flwr.superlink import main as superlink_main
    except ImportError as exc:
        return [f"flwr.superlink.main: {exc}"]
    if not callable(getattr(superlink_main, "create_app", None)):
        return ["flwr.superlink.main.create_app: gone"]
    return []


def _check_superlink_uvicorn() -> list[str]:
    try:
        cli = import_module("flwr.superlink.cli.flower_superlink")
    except ImportError as exc:
        return [f"flwr.superlink.cli.flower_superlink: {exc}"]
    if not hasattr(cli, "uvicorn") or "uvicorn.run(" not in inspect.getsource(cli):
        return ["flwr.superlink.cli.flower_superlink: no longer serves through `uvicorn.run`"]
    return []


#: Abstract methods of ``flwr.serverapp.Grid`` that :class:`federation.embedded.InProcessGrid`
#: implements; a Grid that grew or renamed one would leave the embedded runner abstract.
_GRID_ABSTRACT = frozenset(
    {
        "create_message",
        "get_node_ids",
        "pull_messages",
        "push_messages",
        "run",
        "send_and_receive",
        "set_run",
    }
)


def _check_embedded_engine() -> list[str]:
    try:
        from flwr.common.constant import NUM_PARTITIONS_KEY, PARTITION_ID_KEY
        from flwr.serverapp import Grid
        from flwr.supercore.run import Run
        from flwr.supercore.task_identity import TaskIdentity
    except ImportError as exc:
        return [f"embedded engine: {exc}"]
    problems = []
    if set(Grid.__abstractmethods__) != _GRID_ABSTRACT:
        problems.append(
            f"flwr.serverapp.Grid: abstract methods now {sorted(Grid.__abstractmethods__)}"
        )
    if (PARTITION_ID_KEY, NUM_PARTITIONS_KEY) != ("partition-id", "num-partitions"):
        problems.append("flwr.common.constant: node-config partition keys renamed")
    if not callable(getattr(Run, "create_empty", None)):
        problems.append("flwr.supercore.run.Run.create_empty: gone")
    for name in ("run_id", "node_id", "task_id"):
        if not isinstance(inspect.getattr_static(type(TaskIdentity), name, None), property):
            problems.append(f"flwr.supercore.task_identity.TaskIdentity.{name}: gone")
    return problems


def check_patch_targets() -> None:
    """Check that everything the patches of this module change is where they expect it.

    Raises:
        FlowerPatchError: listing every target Flower moved or changed.
    """
    problems = [
        *_check_pull_functions(),
        *_check_supernode_sleeps(),
        *_check_heartbeat_modules(),
        *_check_functions("flwr.supernode.start_client_internal", _SUPERNODE_TRACED),
        *_check_functions("flwr.supernode.runtime.run_clientapp", _CLIENTAPP_TRACED),
        *_check_superlink_app(),
        *_check_superlink_uvicorn(),
        *_check_embedded_engine(),
    ]
    if problems:
        raise FlowerPatchError("Flower changed what we patch:\n" + "\n".join(problems))


def _set_pull_defaults(**values: float) -> None:
    problems = _check_pull_functions()
    if problems:
        raise FlowerPatchError("; ".join(problems))
    for fn in _pull_functions():
        fn.__kwdefaults__ = {**(fn.__kwdefaults__ or {}), **values}


def fast_object_pulls(
    initial: float = FAST_PULL_BACKOFF_S, cap: float = FAST_PULL_BACKOFF_CAP_S
) -> None:
    """Make this process's Flower object pulls retry after ``initial`` s (doubling to ``cap``).

    Flower pulls a message's content object by object and, when an object is not there
    yet, waits 1 s before asking again (``PULL_INITIAL_BACKOFF``): on a LAN that wait is
    most of a SecAgg+ exchange. The defaults live in the signatures of the pull
    functions, which every caller (SuperNode, ClientApp, ServerApp grid) shares, so they
    are changed there; the number of tries and the overall time limit stay Flower's.

    Raises:
        FlowerPatchError: the pull functions no longer take these keyword defaults.
    """
    _set_pull_defaults(initial_backoff=initial, backoff_cap=cap)


def bound_object_pulls(max_time: float) -> None:
    """Make this process give up pulling a message's content after ``max_time`` seconds.

    A node killed while uploading a reply leaves the message at the SuperLink without all
    of its objects; Flower keeps asking for them for up to 500 tries (minutes) before it
    turns the reply into an error, stalling the round long past its stage timeout. The
    ServerApp bounds that wait by the stage timeout: a reply still incomplete by then
    counts as missing (Flower's own "objects unavailable" error reply).

    Raises:
        FlowerPatchError: the pull functions no longer take a ``max_time`` default.
    """
    _set_pull_defaults(max_time=float(max_time))


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
        """Sleep ``seconds``, capped."""
        time.sleep(min(seconds, self._cap if seconds >= 1.0 else self._local_cap))


def cap_supernode_sleeps(cap: float = FAST_POLL_S, local_cap: float = FAST_LOCAL_POLL_S) -> None:
    """Cap the SuperNode's poll sleeps in this process (``flwr.supernode.start_client_internal``).

    A SuperNode sleeps 3 s between pulls when idle and 0.5 s while waiting for its
    ClientApp; the sleeps are ``time.sleep`` calls inside the module, so the module's
    ``time`` is swapped for one whose ``sleep`` is capped.

    Raises:
        FlowerPatchError: the module no longer sleeps through ``time``.
    """
    problems = _check_supernode_sleeps()
    if problems:
        raise FlowerPatchError("; ".join(problems))
    from flwr.supernode import start_client_internal

    start_client_internal.time = _CappedTime(cap, local_cap)  # type: ignore[assignment]


def set_supernode_heartbeat(interval: float) -> None:
    """Make this process's SuperNode send heartbeats for an ``interval`` of seconds.

    A SuperNode tells the SuperLink it will report every ``HEARTBEAT_DEFAULT_INTERVAL``
    (30 s) and the SuperLink counts it offline after two intervals without one: a killed
    node is sampled, and waited for until a stage times out, for about a minute. Flower
    has no option for it, but its SuperLink accepts any interval from
    ``HEARTBEAT_MIN_INTERVAL`` (10 s) to ``HEARTBEAT_MAX_INTERVAL``; the value is a module
    global of the connection (what is announced) and of the heartbeat sender (how often
    it sends: about 0.8 x (interval - 5 s)).

    Raises:
        ValueError: ``interval`` outside what the SuperLink accepts.
        FlowerPatchError: the modules no longer read the interval as a module global.
    """
    from flwr.common.constant import HEARTBEAT_MAX_INTERVAL, HEARTBEAT_MIN_INTERVAL

    if not HEARTBEAT_MIN_INTERVAL <= interval <= HEARTBEAT_MAX_INTERVAL:
        raise ValueError(
            f"heartbeat interval {interval:g} s: the SuperLink accepts "
            f"{HEARTBEAT_MIN_INTERVAL} to {HEARTBEAT_MAX_INTERVAL} s"
        )
    problems = _check_heartbeat_modules()
    if problems:
        raise FlowerPatchError("; ".join(problems))
    for name in _HEARTBEAT_MODULES:
        setattr(import_module(name), "HEARTBEAT_DEFAULT_INTERVAL", float(interval))  # noqa: B010


def _trace_functions(module: ModuleType, prefix: str, names: Sequence[str]) -> None:
    """Wrap ``module``'s functions ``names`` with start / end trace events.

    Raises:
        FlowerPatchError: one of the functions is gone.
    """
    from federation.deploy_trace import trace

    problems = _check_functions(module.__name__, names)
    if problems:
        raise FlowerPatchError("; ".join(problems))

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


def trace_supernode() -> None:
    """Trace a SuperNode's message pulls and pushes (``supernode.*`` events).

    Raises:
        FlowerPatchError: a traced function is gone.
    """
    from flwr.supernode import start_client_internal

    _trace_functions(start_client_internal, "supernode", _SUPERNODE_TRACED)


def trace_run_clientapp() -> None:
    """Trace the steps of Flower's ``run_clientapp`` in this process (``child.*`` events).

    Raises:
        FlowerPatchError: a traced function is gone.
    """
    from flwr.supernode.runtime import run_clientapp

    _trace_functions(run_clientapp, "child", _CLIENTAPP_TRACED)


def trace_superlink_requests() -> None:
    """Record every HTTP request the SuperLink of this process serves.

    Each request becomes a ``superlink.request`` trace event with its path, so the bench
    can count what a round costs the SuperLink. The SuperLink's FastAPI app is wrapped as
    ``create_app`` builds it.

    Raises:
        FlowerPatchError: ``flwr.superlink.main.create_app`` is gone.
    """
    problems = _check_superlink_app()
    if problems:
        raise FlowerPatchError("; ".join(problems))
    from flwr.superlink import main as superlink_main

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


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class _TwoListenerUvicorn:
    """Stands in for the ``uvicorn`` module inside Flower's SuperLink command.

    Flower calls ``uvicorn.run(app=..., host=..., port=..., ssl_..., ...)`` once; this
    serves that app wrapped by ``gate(app, port)`` with the same settings and TLS
    certificate on Flower's ``host:port`` and on ``fleet_host:fleet_port``.
    """

    def __init__(self, fleet_host: str, fleet_port: int, gate: Callable[[Any, int], Any]) -> None:
        self.fleet_host, self.fleet_port, self.gate = fleet_host, fleet_port, gate

    def __getattr__(self, name: str) -> Any:
        import uvicorn

        return getattr(uvicorn, name)

    def run(self, app: Any, **kwargs: Any) -> None:
        """Serve ``app`` on both sockets until the process is stopped."""
        import uvicorn

        host, port = str(kwargs["host"]), int(kwargs["port"])
        if port == self.fleet_port:
            raise SystemExit("--fleet-address: its port must differ from the control --port")
        config = uvicorn.Config(self.gate(app, port), **kwargs)
        sockets = [_bound_socket(host, port), _bound_socket(self.fleet_host, self.fleet_port)]
        uvicorn.Server(config).run(sockets=sockets)


def serve_superlink_twice(
    fleet_host: str, fleet_port: int, gate: Callable[[Any, int], Any]
) -> None:
    """Make this process's ``flower-superlink`` serve its app on a second, gated socket.

    Flower's ``--host``/``--port`` stay the first socket (its SuperExec and ServerApps
    dial it); ``fleet_host:fleet_port`` is the second. Both serve ``gate(app,
    control_port)``, which decides per connection what each may reach
    (:class:`federation.superlink_listeners.FleetOnlyGate`).

    Raises:
        FlowerPatchError: Flower's SuperLink command no longer serves through uvicorn.
    """
    problems = _check_superlink_uvicorn()
    if problems:
        raise FlowerPatchError("; ".join(problems))
    cli = import_module("flwr.superlink.cli.flower_superlink")  # the package re-exports
    setattr(cli, "uvicorn", _TwoListenerUvicorn(fleet_host, fleet_port, gate))  # noqa: B010
