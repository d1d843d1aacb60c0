"""The training job's aggregation: FedAvg over securely summed updates, plus evaluation.

Each node returns its updated model parameters followed by one extra array: its
evaluation vector (:mod:`federation.evaluation`) divided by its example count and by
:data:`EVAL_SCALE`. Weighted FedAvg (weights = example counts, which SecAgg+ applies
inside the masked sum) then yields the averaged model and ``Σ eval / Σ n``; multiplied
back by ``Σ n`` this is the sum of the nodes' evaluation vectors. The coordinator thus
sees only aggregates, under SecAgg+ or not; what the sum releases, in which rounds and
under which noise, is the job's :class:`federation.evaluation_dp.EvaluationRelease`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.evaluation import EVAL_LENGTH, metrics_from_sums
from federation.secure_sum import present, require_nodes

if TYPE_CHECKING:
    from flwr.common import FitRes, Parameters
    from flwr.server.client_proxy import ClientProxy

    from federation.evaluation_dp import EvaluationRelease

__all__ = [
    "EVAL_SCALE",
    "RoundRecord",
    "TrainingRecorder",
    "make_fedavg_strategy",
    "pack_update",
    "unpack_update",
]

#: Evaluation entries are divided by this (and by n) so they stay far inside the clip range.
EVAL_SCALE = 64.0


def pack_update(params: list[np.ndarray], evaluation: np.ndarray, n_train: int) -> list[np.ndarray]:
    """Return the arrays a node sends: its parameters, then its scaled evaluation vector.

    Raises:
        ValueError: ``n_train`` < 1 or the evaluation is not a non-empty vector.
    """
    if n_train < 1:
        raise ValueError("n_train must be at least 1")
    if evaluation.ndim != 1 or not evaluation.size:
        raise ValueError("the evaluation must be a non-empty vector")
    return [*params, evaluation / (n_train * EVAL_SCALE)]


def unpack_update(
    arrays: list[np.ndarray], total_n: float, length: int = EVAL_LENGTH
) -> tuple[list[np.ndarray], np.ndarray]:
    """Split an aggregated update into model parameters and the summed evaluation vector.

    Returns:
        ``(parameters, summed_evaluation)``.

    Raises:
        ValueError: the last array is not an evaluation vector of ``length`` entries.
    """
    if not arrays or arrays[-1].shape != (length,):
        raise ValueError("the update does not end with an evaluation vector")
    return list(arrays[:-1]), arrays[-1] * total_n * EVAL_SCALE


@dataclass
class RoundRecord:
    """What the coordinator learned in one round (about the model before that round's training)."""

    round: int
    model_version: int
    metrics: dict[str, float]
    nodes: list[str]
    epsilon_by_node: dict[str, float]
    n_train_total: int
    seconds: float = 0.0
    attempts: int = 1
    rows_dropped_by_node: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the record as report JSON (``rows_dropped_by_node`` only when nodes said)."""
        extra = (
            {"rows_dropped_by_node": self.rows_dropped_by_node} if self.rows_dropped_by_node else {}
        )
        return {
            **extra,
            "round": self.round,
            "model_version": self.model_version,
            "metrics": self.metrics,
            "nodes": self.nodes,
            "epsilon_by_node": self.epsilon_by_node,
            "n_train_total": self.n_train_total,
            "seconds": round(self.seconds, 4),
            "attempts": self.attempts,
        }


@dataclass
class TrainingRecorder:
    """Collects round records and forwards them to a progress callback."""

    on_round: Callable[[RoundRecord], None] | None = None
    rounds: list[RoundRecord] = field(default_factory=list)
    final_parameters: list[np.ndarray] | None = None

    def add(self, record: RoundRecord) -> None:
        """Store ``record`` and report it to the callback."""
        self.rounds.append(record)
        if self.on_round is not None:
            self.on_round(record)


def make_fedavg_strategy(
    initial: list[np.ndarray],
    n_nodes: int,
    recorder: TrainingRecorder,
    fit_config: Callable[[int], dict[str, Any]],
    min_nodes: int,
    evaluation: EvaluationRelease | None = None,
) -> Any:
    """Build the FedAvg strategy for a training job.

    ``fit_config(server_round)`` gives each round's config; the strategy splits every
    aggregate into model and evaluation and records the round, with the metrics
    ``evaluation`` releases for it (none in a round that releases none; without
    ``evaluation``, the exact metrics of every round).

    Returns:
        A :class:`flwr.server.strategy.FedAvg` subclass instance.
    """
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    class _SecureFedAvg(FedAvg):
        def aggregate_fit(
            self,
            server_round: int,
            results: list[tuple[ClientProxy, FitRes]],
            failures: list[Any],
        ) -> tuple[Parameters | None, dict[str, Any]]:
            require_nodes(server_round, len(results), failures, min_nodes)
            aggregated, _ = super().aggregate_fit(server_round, results, failures)
            arrays = parameters_to_ndarrays(present(server_round, aggregated))
            total_n = float(sum(res.num_examples for _, res in results))
            length = EVAL_LENGTH if evaluation is None else evaluation.length
            params, summed_eval = unpack_update(arrays, total_n, length)
            metrics = (
                metrics_from_sums(summed_eval).as_dict()
                if evaluation is None
                else evaluation.metrics(server_round, summed_eval) or {}
            )
            names = sorted(str(res.metrics.get("node", "?")) for _, res in results)
            eps = {
                str(res.metrics.get("node", "?")): float(res.metrics.get("epsilon", 0.0))
                for _, res in results
            }
            dropped = {
                str(res.metrics.get("node", "?")): int(res.metrics["rows_dropped"])
                for _, res in results
                if "rows_dropped" in res.metrics
            }
            phase = fit_config(server_round).get("phase")
            recorder.add(
                RoundRecord(
                    round=server_round,
                    model_version=server_round - 1,
                    metrics=metrics,
                    nodes=names,
                    epsilon_by_node=eps,
                    n_train_total=int(total_n),
                    rows_dropped_by_node=dropped,
                )
            )
            if phase == "evaluate":
                return None, {}  # this round only evaluated the model: keep it
            recorder.final_parameters = params
            return ndarrays_to_parameters(params), {}

    return _SecureFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n_nodes,
        min_available_clients=n_nodes,
        min_evaluate_clients=0,
        initial_parameters=ndarrays_to_parameters(initial),
        on_fit_config_fn=fit_config,
        accept_failures=True,
    )
