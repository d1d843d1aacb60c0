"""Secure sums over nodes, round by round: the aggregation behind statistics and GLM jobs.

Every node returns one vector (already divided by a public scale and range-checked)
with weight 1, so SecAgg+'s weighted average times the number of nodes is the plain sum.
A ``step`` callback turns each round's sum into the next round's broadcast (a Newton
step, say) or ``None`` when the job is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.complete_case import counts_from_metrics
from federation.errors import bounded_reason

if TYPE_CHECKING:
    from flwr.common import FitRes, Parameters
    from flwr.server.client_proxy import ClientProxy

__all__ = ["StepFn", "SumRecorder", "make_sum_strategy", "present", "require_nodes"]

#: (round, summed vector) -> the next broadcast, or None when the job is done.
StepFn = Callable[[int, np.ndarray], "np.ndarray | None"]


def require_nodes(server_round: int, answered: int, failures: list[Any], min_nodes: int) -> None:
    """Check that enough nodes answered a round.

    Raises:
        RuntimeError: fewer than ``min_nodes`` answered (with the nodes' reasons).
    """
    if answered < min_nodes:
        reasons = bounded_reason("; ".join(str(f) for f in failures))
        raise RuntimeError(
            f"round {server_round}: {answered} node(s) answered, the job needs {min_nodes}"
            + (f" ({reasons})" if reasons else "")
        )


def present(server_round: int, aggregated: Parameters | None) -> Parameters:
    """Return the round's aggregate.

    Raises:
        RuntimeError: the strategy produced none.
    """
    if aggregated is None:
        raise RuntimeError(f"round {server_round}: no aggregate")
    return aggregated


@dataclass
class SumRecorder:
    """What a secure-sum run produced: one summed vector per round, and whether it is done."""

    sums: list[np.ndarray] = field(default_factory=list)
    nodes: list[list[str]] = field(default_factory=list)
    done: bool = False
    on_round: Callable[[Any], None] | None = None
    #: rows each node's per-resident cap dropped (its latest round), when nodes said
    rows_dropped: dict[str, int] = field(default_factory=dict)
    #: each node's complete-case counts (its latest round), when it kept complete cases
    complete_case: dict[str, dict[str, Any]] = field(default_factory=dict)


def make_sum_strategy(
    initial: np.ndarray,
    n_nodes: int,
    min_nodes: int,
    step: StepFn,
    recorder: SumRecorder,
    fit_config: Callable[[int], dict[str, Any]],
) -> Any:
    """Build a strategy whose aggregate is the sum of the nodes' vectors.

    Returns:
        A :class:`flwr.server.strategy.FedAvg` subclass instance.
    """
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    class _SecureSum(FedAvg):
        def aggregate_fit(
            self,
            server_round: int,
            results: list[tuple[ClientProxy, FitRes]],
            failures: list[Any],
        ) -> tuple[Parameters | None, dict[str, Any]]:
            require_nodes(server_round, len(results), failures, min_nodes)
            if any(res.num_examples != 1 for _, res in results):
                raise RuntimeError("a node sent a weighted vector to a secure sum")
            aggregated, _ = super().aggregate_fit(server_round, results, failures)
            mean = parameters_to_ndarrays(present(server_round, aggregated))[0]
            summed = mean * len(results)
            recorder.sums.append(summed)
            recorder.nodes.append(sorted(str(res.metrics.get("node", "?")) for _, res in results))
            for _, res in results:
                if "rows_dropped" in res.metrics:
                    node = str(res.metrics.get("node", "?"))
                    recorder.rows_dropped[node] = int(res.metrics["rows_dropped"])
                complete = counts_from_metrics(res.metrics)
                if complete is not None:
                    recorder.complete_case[str(res.metrics.get("node", "?"))] = complete
            following = step(server_round, summed)
            if recorder.on_round is not None:
                recorder.on_round(server_round)
            if following is None:
                recorder.done = True
                return None, {}
            return ndarrays_to_parameters([np.asarray(following, dtype=np.float64)]), {}

    return _SecureSum(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n_nodes,
        min_available_clients=n_nodes,
        min_evaluate_clients=0,
        initial_parameters=ndarrays_to_parameters([np.asarray(initial, dtype=np.float64)]),
        on_fit_config_fn=fit_config,
        accept_failures=True,
    )
