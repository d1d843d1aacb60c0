"""The warm executor: runs a SuperNode's ClientApp tasks in forked children of a warm process.

Flower's SuperExec starts a fresh ``flwr-clientapp`` process for every message, which
imports torch and opacus each time (~8 s). A SuperNode started with ``--isolation
process`` (``federation.launchers.start_supernode(warm=True)``) leaves its tasks to this
executor instead (``python -m federation.executor --runtime-api-address HOST:PORT``): it
imports the modules its caller names once, runs one tiny DP-SGD step (torch and Opacus
set themselves up lazily on first use: 1-3 s) and forks one child per task. Each message
still runs in its own process, through Flower's own ``run_clientapp``; nothing of a job,
a node's data or its gate is cached across messages.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

from federation.flower_patches import FAST_POLL_S, fast_object_pulls, trace_run_clientapp

__all__ = ["run_executor", "warm_up_training"]


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


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m federation.executor")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--preload", default="")
    parser.add_argument("--poll", type=float, default=FAST_POLL_S / 4)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false")
    return parser.parse_args(argv)


@contextlib.contextmanager
def _ends_with(parent_pid: int | None, interval: float = 0.2) -> Iterator[None]:
    """Around the start-up: end this process at once if ``parent_pid`` is gone meanwhile.

    Importing torch and Opacus and warming them up takes seconds (many on a loaded
    machine, with every node's executor starting at once); the task loop notices a
    SuperNode that is gone, but a start-up would run to its end first and only then
    exit. A watching thread ends it instead, and is stopped before the loop forks.
    """
    if parent_pid is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval):
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(0)  # nothing started yet: no task, no child

    watcher = threading.Thread(target=watch, name="watch-supernode", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _run_one_task(
    run_clientapp: Callable[..., None], address: str, token: str, parent_pid: int | None
) -> None:
    """Run one ClientApp task in this (forked) process, then exit with its code."""
    from federation.deploy_trace import trace

    code = 1
    trace("child.start")
    try:
        run_clientapp(
            runtime_api_address=address,
            token=token,
            insecure=True,
            certificates=None,
            parent_pid=parent_pid,
            runtime_dependency_install=False,
        )
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    finally:
        trace("child.end", code=code)
        os._exit(code)


def run_executor(argv: list[str]) -> None:
    """Poll a SuperNode's Runtime API for ClientApp tasks; fork a warm child per task.

    Returns when the SuperNode (``--parent-pid``) is gone.

    Raises:
        ImportError: a module named in ``--preload`` cannot be imported.
        SystemExit: bad arguments.
    """
    args = _parse(argv)
    with _ends_with(args.parent_pid):
        for module in filter(None, args.preload.split(",")):
            importlib.import_module(module)
        if args.torch_threads > 0:
            import torch

            torch.set_num_threads(args.torch_threads)
        # Warming torch up starts its thread pool; forking after that is only safe
        # single-threaded.
        if args.warm_up and args.torch_threads == 1:
            warm_up_training()
    fast_object_pulls()
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    from federation.deploy_trace import trace, tracing

    if tracing():
        trace_run_clientapp()
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
                _run_one_task(run_clientapp, args.runtime_api_address, res.token, args.parent_pid)
            children.add(pid)
            continue
        time.sleep(args.poll)


if __name__ == "__main__":
    run_executor(sys.argv[1:])
