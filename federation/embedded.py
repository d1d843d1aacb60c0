"""The embedded runner: a whole federation in one process, behind Flower's ``Grid`` interface.

It takes the ServerApp and the ClientApp as arguments (it knows neither the coordinator
nor the nodes). The ServerApp runs unchanged against :class:`InProcessGrid`, an
implementation of Flower's ``flwr.serverapp.Grid`` whose "nodes" are contexts in this
process: a message pushed to a node is handed to the ClientApp at once (a copy, as a
transport would deliver it) and its reply is ready when the ClientApp returns, so an
exchange costs the work of the ClientApps and nothing else.

Flower's own simulation engine starts Ray, its actors and an in-memory SuperLink for
every run (about 9 s on a small machine, paid again by every job of a process) and moves
each message through two queues polled every 0.1 s (four SecAgg+ exchanges a round pay
it four times). Here nothing is started: a process's second job costs what its first
does, and an exchange waits for its replies, not for a clock. What this module takes
from Flower beyond its public app API (``Run``, ``TaskIdentity``, the partition keys of a
node's config) is checked by :func:`federation.flower_patches.check_patch_targets`.
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import tempfile
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flwr.app import Context, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.server import ServerApp
    from flwr.supercore.run import Run

__all__ = ["InProcessGrid", "quiet_flower", "run_embedded"]

#: One embedded run at a time per process: Flower keeps the identity of the running task
#: (run id, sending node) in process-wide class attributes that every Message reads.
_RUN_LOCK = threading.Lock()


def quiet_flower(state_dir: Path | None = None) -> None:
    """Turn off Flower's telemetry and update checks, and point its state at ``state_dir``."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    base = state_dir or Path(tempfile.gettempdir()) / "hamanasu"
    os.environ.setdefault("FLWR_HOME", str(base / "flwr"))
    os.environ.setdefault("RAY_TMPDIR", str(base / "ray"))
    Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)


def _grid_base() -> type:
    from flwr.serverapp import Grid

    return Grid


class InProcessGrid(_grid_base()):  # type: ignore[misc]
    """Flower's ``Grid`` over ClientApps in this process, one context per virtual node.

    Each node's context carries ``partition-id`` and ``num-partitions`` in its node
    config, as on Flower's simulation engine. ``workers`` ClientApp calls run at once
    (threads); a ClientApp that raises answers with an error reply, as a SuperNode does.
    """

    def __init__(self, client_app: ClientApp, n_nodes: int, run: Run, workers: int = 1) -> None:
        from flwr.app import Context, RecordDict
        from flwr.common.constant import NUM_PARTITIONS_KEY, PARTITION_ID_KEY

        self._app = client_app
        self._run = run
        self._contexts: dict[int, Context] = {}
        while len(self._contexts) < n_nodes:
            node_id = secrets.randbits(63) or 1  # 0 is the SuperLink's node id
            if node_id not in self._contexts:
                self._contexts[node_id] = Context(
                    run_id=run.run_id,
                    node_id=node_id,
                    node_config={
                        PARTITION_ID_KEY: len(self._contexts),
                        NUM_PARTITIONS_KEY: n_nodes,
                    },
                    state=RecordDict(),
                    run_config={},
                )
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers))
        self._pending: dict[str, Future[Message]] = {}

    def close(self) -> None:
        """Stop the worker threads (after the messages already handed over)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def set_run(self, run: Run) -> None:
        """Set the run this grid serves."""
        self._run = run

    @property
    def run(self) -> Run:
        """Return the run this grid serves."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Return a new message to ``dst_node_id`` (run and sender filled in by Flower)."""
        from flwr.app import Message

        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Return the ids of the virtual nodes."""
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Hand each message to its node's ClientApp; return the messages' ids.

        Raises:
            ValueError: a message to a node this grid does not have, or already a reply.
        """
        ids = []
        for message in messages:
            if message.metadata.dst_node_id not in self._contexts:
                raise ValueError(f"dst_node_id: no node {message.metadata.dst_node_id}")
            if message.metadata.reply_to_message_id:
                raise ValueError("message: a reply cannot be pushed to a node")
            message_id = str(uuid.uuid4())
            message.metadata.__dict__["_message_id"] = message_id
            self._pending[message_id] = self._pool.submit(self._handle, copy.deepcopy(message))
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return the replies ready among ``message_ids`` (each one once)."""
        ready = [i for i in message_ids if i in self._pending and self._pending[i].done()]
        return [self._pending.pop(i).result() for i in ready]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages`` and return their replies.

        Virtual nodes are never lost: each answers, with its reply or an error. Their
        ClientApps share this process and take turns, so the last reply of a large
        exchange comes late however fast each node is; ``timeout`` therefore bounds
        the wait for the *next* reply (a ClientApp that hangs), not the whole exchange.
        Replies not ready when it runs out are dropped, as Flower's grids drop late ones.
        """
        ids = list(self.push_messages(messages))
        left = [self._pending[i] for i in ids]
        while left:
            done, pending = wait(left, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:
                break
            left = list(pending)
        replies = list(self.pull_messages(ids))
        for i in ids:
            self._pending.pop(i, None)
        return replies

    def _handle(self, message: Message) -> Message:
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.common.constant import ErrorCode

        context = self._contexts[message.metadata.dst_node_id]
        try:
            reply = self._app(message=message, context=context)
        except Exception as exc:  # noqa: BLE001 - a failing node answers with an error
            logging.getLogger("flwr").error("ClientApp raised: %s", exc)
            reason = f"{type(exc)}:<'{exc}'>"
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message
            )
        reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        return reply


def _new_run() -> Run:
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity

    run = Run.create_empty(run_id=secrets.randbits(63))
    run.primary_task_id = secrets.randbits(63)
    TaskIdentity.task_id = run.primary_task_id
    TaskIdentity.run_id = run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    return run


def run_embedded(
    server_app: ServerApp,
    client_app: ClientApp,
    n_nodes: int,
    *,
    num_cpus: int | None = None,
    verbose: bool = False,
) -> Any:
    """Run ``server_app`` against ``n_nodes`` virtual nodes running ``client_app``.

    ``num_cpus`` is how many ClientApp calls run at once (default one: the ClientApps
    share this process, and training already uses every core).

    Returns:
        The ServerApp's final context.

    Raises:
        ValueError: ``n_nodes`` < 1.
    """
    if n_nodes < 1:
        raise ValueError("n_nodes must be at least 1")
    quiet_flower()
    import warnings

    from flwr.app import Context, RecordDict

    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)
    with _RUN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = _new_run()
        grid = InProcessGrid(client_app, n_nodes, run, workers=num_cpus or 1)
        context = Context(
            run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
        )
        try:
            server_app(grid=grid, context=context)
        finally:
            grid.close()
    return context
