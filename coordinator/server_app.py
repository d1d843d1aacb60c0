"""The Flower ServerApp of a training job: rounds over SecAgg+, retries, then one evaluation.

The round loop is ours rather than Flower's ``DefaultWorkflow`` for one reason: a SecAgg+
round that halts (a node lost during key set-up) must be retried or fail the job with its
reason, never pass for a round done. After the last training round one more secure round
evaluates the final model on every node's held-out split.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.secagg import SecAggSettings, SecureAggregationHalted, make_workflow
from federation.secure_sum import StepFn, SumRecorder, make_sum_strategy
from federation.training_round import TrainingRecorder, make_fedavg_strategy

if TYPE_CHECKING:
    from flwr.app import Context
    from flwr.server import Grid, ServerApp

    from federation.evaluation_dp import EvaluationRelease

__all__ = ["RunOutcome", "build_sum_server_app", "build_training_server_app"]

log = logging.getLogger("hamanasu.coordinator")

#: How often the server polls an in-memory grid for replies (embedded runs).
PULL_INTERVAL_S = 0.01


@dataclass
class RunOutcome:
    """How a run ended: ``succeeded`` or ``failed`` with the reason."""

    status: str = "pending"
    reason: str = ""
    secure_aggregation: bool = True
    retried_rounds: int = 0


def build_training_server_app(
    *,
    initial: list[np.ndarray],
    n_nodes: int,
    rounds: int,
    min_nodes: int,
    secagg: SecAggSettings | None,
    fit_config: dict[str, Any],
    recorder: TrainingRecorder,
    outcome: RunOutcome,
    expected_nodes: int = 0,
    evaluation: EvaluationRelease | None = None,
) -> ServerApp:
    """Build the ServerApp for a training job of ``rounds`` rounds over ``n_nodes`` nodes.

    ``evaluation`` (the plan's) says which rounds release an evaluation and how to read
    it; without it, every round's exact evaluation is recorded.

    ``secagg`` None turns secure aggregation off (plain FedAvg). The app records rounds in
    ``recorder`` and how the run ended in ``outcome`` (it never raises into Flower).
    ``expected_nodes`` (> 0): wait up to a minute for that many nodes before the first
    round, so that a strategy sampling "every available node" sees them all.

    Returns:
        The :class:`flwr.server.ServerApp`.
    """
    from flwr.server import ServerApp

    def config_for(server_round: int) -> dict[str, Any]:
        phase = "evaluate" if server_round > rounds else "train"
        extra = secagg.as_config() if secagg else {}
        return {**fit_config, **extra, "round": server_round, "phase": phase}

    strategy = make_fedavg_strategy(initial, n_nodes, recorder, config_for, min_nodes, evaluation)
    app = ServerApp()
    outcome.secure_aggregation = secagg is not None

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        def one_round(fit: Any, legacy: Any, server_round: int) -> bool:
            _run_round(fit, grid, legacy, server_round, secagg, recorder, outcome)
            return False

        _drive(
            grid,
            context,
            strategy,
            rounds + 1,
            secagg,
            outcome,
            one_round,
            require_done=False,
            expected_nodes=expected_nodes,
        )

    return app


def build_sum_server_app(
    *,
    initial: np.ndarray,
    n_nodes: int,
    max_rounds: int,
    min_nodes: int,
    secagg: SecAggSettings | None,
    fit_config: dict[str, Any],
    step: StepFn,
    recorder: SumRecorder,
    outcome: RunOutcome,
) -> ServerApp:
    """Build the ServerApp of a statistics or GLM job: secure sums until ``step`` says done.

    Returns:
        The :class:`flwr.server.ServerApp`; a run that reaches ``max_rounds`` without being
        done fails with that reason.
    """
    from flwr.server import ServerApp

    def config_for(server_round: int) -> dict[str, Any]:
        extra = secagg.as_config() if secagg else {}
        return {**fit_config, **extra, "round": server_round}

    strategy = make_sum_strategy(initial, n_nodes, min_nodes, step, recorder, config_for)
    app = ServerApp()
    outcome.secure_aggregation = secagg is not None

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        def one_round(fit: Any, legacy: Any, server_round: int) -> bool:
            before = len(recorder.sums)
            _retrying(fit, grid, legacy, server_round, secagg, outcome)
            if len(recorder.sums) == before:
                raise RuntimeError(f"round {server_round} produced no aggregate")
            return recorder.done

        _drive(grid, context, strategy, max_rounds, secagg, outcome, one_round, require_done=True)

    return app


def _drive(
    grid: Grid,
    context: Context,
    strategy: Any,
    num_rounds: int,
    secagg: SecAggSettings | None,
    outcome: RunOutcome,
    one_round: Callable[[Any, Any, int], bool],
    *,
    require_done: bool,
    expected_nodes: int = 0,
) -> None:
    """Run up to ``num_rounds`` rounds of ``one_round`` (True = done) and record the outcome.

    Never raises into Flower: any failure ends the run as ``failed`` with its reason.
    """
    from flwr.app import ConfigRecord
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.compat.app_utils import start_update_client_manager_thread
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
    from flwr.server.workflow.default_workflows import (
        default_fit_workflow,
        default_init_params_workflow,
    )

    legacy = LegacyContext(context, config=ServerConfig(num_rounds=num_rounds), strategy=strategy)
    if hasattr(grid, "pull_interval"):
        # The in-memory grid polls for replies every 0.1 s by default; SecAgg+ has four
        # exchanges a round, so a shorter interval is most of its overhead on one machine.
        grid.pull_interval = min(float(grid.pull_interval), PULL_INTERVAL_S)
    thread, f_stop, c_done = start_update_client_manager_thread(grid, legacy.client_manager)
    try:
        c_done.wait()
        if expected_nodes:
            _wait_for_nodes(legacy.client_manager, expected_nodes, timeout=60.0)
        default_init_params_workflow(grid, legacy)
        cfg = ConfigRecord()
        cfg[Key.START_TIME] = time.time()
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = cfg
        fit = make_workflow(secagg) if secagg else default_fit_workflow
        for server_round in range(1, num_rounds + 1):
            cfg[Key.CURRENT_ROUND] = server_round
            if one_round(fit, legacy, server_round):
                break
        else:
            if require_done:
                raise RuntimeError(f"not done after {num_rounds} rounds")
        outcome.status = "succeeded"
    except Exception as exc:  # noqa: BLE001 - any failure ends the job with its reason
        outcome.status = "failed"
        outcome.reason = str(exc) or type(exc).__name__
        log.error("run failed: %s", outcome.reason)
    finally:
        f_stop.set()
        thread.join()


def _wait_for_nodes(manager: Any, count: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until ``count`` nodes are registered with ``manager``.

    Flower's client manager learns of the grid's nodes when it is asked for them
    (``num_available``, ``all``, ``sample``) or by a thread every 5 s; its ``wait_for``
    asks nothing, so it would sleep until that thread's next pass. Asking at a short
    interval sees the nodes as soon as the grid has them.

    Returns:
        Whether that many nodes were registered in time.
    """
    deadline = time.monotonic() + timeout
    while manager.num_available() < count:
        if time.monotonic() >= deadline:
            return False
        time.sleep(PULL_INTERVAL_S)
    return True


def _retrying(
    fit: Any,
    grid: Grid,
    legacy: Any,
    server_round: int,
    secagg: SecAggSettings | None,
    outcome: RunOutcome,
) -> int:
    """Run one round's fit, retrying a halted secure aggregation up to the job's limit.

    A retry leaves out the nodes that failed the halted attempt, as long as enough nodes
    remain for the strategy (:func:`_leave_out`); they are sampled again next round.

    Returns:
        The number of attempts made.

    Raises:
        SecureAggregationHalted: the round halted more often than ``max_retries`` allows.
    """
    retries = secagg.max_retries if secagg else 0
    left_out: list[Any] = []
    try:
        for attempt in range(retries + 1):
            try:
                fit(grid, legacy)
            except SecureAggregationHalted as exc:
                if attempt == retries:
                    raise
                outcome.retried_rounds += 1
                log.warning(
                    "round %d: %s; retrying (%d/%d)", server_round, exc, attempt + 1, retries
                )
                left_out += _leave_out(legacy, exc.dropped)
                continue
            return attempt + 1
        return retries + 1
    finally:
        if left_out:
            online = set(grid.get_node_ids())
            for proxy in left_out:
                if proxy.node_id in online:
                    legacy.client_manager.register(proxy)


def _leave_out(legacy: Any, node_ids: Sequence[int]) -> list[Any]:
    """Take the nodes that failed a halted attempt out of sampling for the retry.

    A killed SuperNode stays "online" at the SuperLink until it misses two heartbeats
    (about a minute); sampling it again would halt every retry of the round. Nodes are
    left out only while enough remain for the strategy's minimum.

    Returns:
        The client proxies left out (to be registered again after the round).
    """
    manager, strategy = legacy.client_manager, legacy.strategy
    need = max(
        int(getattr(strategy, "min_fit_clients", 0)),
        int(getattr(strategy, "min_available_clients", 0)),
    )
    known = manager.all()
    proxies = [known[str(n)] for n in node_ids if str(n) in known]
    if not proxies or len(known) - len(proxies) < need:
        return []
    for proxy in proxies:
        manager.unregister(proxy)
        log.warning("node %s left out of the retry", proxy.node_id)
    return proxies


def _run_round(
    fit: Any,
    grid: Grid,
    legacy: Any,
    server_round: int,
    secagg: SecAggSettings | None,
    recorder: TrainingRecorder,
    outcome: RunOutcome,
) -> None:
    """Run one round, retrying a halted secure aggregation up to the job's limit.

    Raises:
        SecureAggregationHalted: the round halted more often than ``max_retries`` allows.
        RuntimeError: the round ended without an aggregate (too few nodes answered).
    """
    before = len(recorder.rounds)
    started = time.perf_counter()
    attempts = _retrying(fit, grid, legacy, server_round, secagg, outcome)
    if len(recorder.rounds) == before:
        raise RuntimeError(f"round {server_round} produced no aggregate")
    recorder.rounds[-1].seconds = time.perf_counter() - started
    recorder.rounds[-1].attempts = attempts
