"""What every plan is built from, and the shape shared by the secure-sum kinds.

:class:`PlanInputs` is the public information a launcher hands to both sides of a run
(never a node's data): how many nodes take part, an upper bound of any node's record
count, the data model's declared ranges and the highest cell floor of the nodes'
policies. :class:`SumPlan` is the base of the kinds that run as rounds of secure sums
(statistics, GLM): each node sends one vector of weight 1, the server turns each sum
into the next broadcast until the plan says it is done, then releases.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from federation.secagg import SecAggSettings
from federation.spec import JobSpec

if TYPE_CHECKING:
    import pandas as pd

    from federation.secure_sum import SumRecorder

__all__ = ["JobPlan", "PlanInputs", "Ranges", "RoundCharge", "SumPlan", "record_bound"]

#: Public (low, high) per numeric column.
Ranges = Mapping[str, tuple[float, float]]

#: round -> (ε the round charges at a node, the mechanism as the ledger records it).
RoundCharge = Callable[[int], tuple[float, dict[str, Any]]]


def record_bound(max_records: int) -> int:
    """Return the public power-of-two bound of a node's record count used for scaling."""
    return int(2 ** math.ceil(math.log2(max(max_records, 2))))


@dataclass(frozen=True)
class PlanInputs:
    """The public information a plan is derived from, the same on every side of a run.

    Attributes:
        n_nodes: nodes taking part.
        max_records: an upper bound of any node's record count (0: unknown).
        declared: the data model's public (low, high) per numeric column; None reads
            them from the data model of the spec's domain.
        min_cell_count: the highest cell floor of the nodes' policies.
    """

    n_nodes: int
    max_records: int = 0
    declared: Ranges | None = None
    min_cell_count: int = 0

    def to_run_config(self) -> dict[str, str | int]:
        """Return the inputs as the entries of a Flower run config (read by both apps)."""
        ranges = (
            ""
            if self.declared is None
            else json.dumps({str(k): [float(v[0]), float(v[1])] for k, v in self.declared.items()})
        )
        return {
            "n-nodes": int(self.n_nodes),
            "max-records": int(self.max_records),
            "declared-ranges": ranges,
            "min-cell-count": int(self.min_cell_count),
        }

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> PlanInputs:
        """Return the inputs a run config carries (:meth:`to_run_config`'s entries).

        Missing entries read as unknown (0) and ``declared-ranges`` as absent (None).

        Raises:
            ValueError: an entry is malformed.
        """
        raw = str(run_config.get("declared-ranges") or "")
        try:
            declared = (
                {str(k): (float(v[0]), float(v[1])) for k, v in json.loads(raw).items()}
                if raw
                else None
            )
        except (TypeError, KeyError, IndexError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"declared-ranges: not a JSON table of [low, high] ({exc})") from None
        return cls(
            n_nodes=int(run_config.get("n-nodes") or 0),
            max_records=int(run_config.get("max-records") or 0),
            declared=declared,
            min_cell_count=int(run_config.get("min-cell-count") or 0),
        )

    def ranges(self, spec: JobSpec) -> dict[str, tuple[float, float]]:
        """Return the declared ranges (the given ones, else the spec domain's data model's)."""
        if self.declared is not None:
            return {str(k): (float(v[0]), float(v[1])) for k, v in self.declared.items()}
        from federation.cdm import declared_ranges

        return {k: (float(v[0]), float(v[1])) for k, v in declared_ranges(spec.domain).items()}


class JobPlan(Protocol):
    """What every plan offers, whatever its kind."""

    spec: JobSpec
    inputs: PlanInputs
    secagg: SecAggSettings | None


class SumPlan(ABC):
    """A job run as rounds of secure sums of weight-1 vectors, until :meth:`step` says done.

    Raises:
        ValueError: no number of nodes or no record bound (the scales need both), or
            SecAgg+ on with fewer than 2 nodes.

    Attributes:
        spec: the job (public bounds resolved where the kind needs them).
        inputs: the public inputs.
        secagg: SecAgg+ settings (weight 1 per node), or None when the spec turns it off.
        initial: the first broadcast.
        max_rounds: rounds after which a run that is not done fails.
    """

    def __init__(self, spec: JobSpec, inputs: PlanInputs) -> None:
        if inputs.n_nodes < 1 or inputs.max_records < 1:
            raise ValueError("n-nodes, max-records: a secure-sum job needs both (public inputs)")
        self.spec = spec
        self.inputs = inputs
        self.secagg = SecAggSettings.from_spec(spec, inputs.n_nodes, 1)
        self.clip = spec.secure_aggregation.clipping_range
        self.initial: np.ndarray = np.zeros(1)
        self.max_rounds = 1

    # -- node half -----------------------------------------------------------------------
    @abstractmethod
    def local(self, frame: pd.DataFrame, params: np.ndarray, config: dict[str, Any]) -> np.ndarray:
        """Return the node's vector for one round, divided by the public scale, range-checked."""

    @property
    def round_charge(self) -> RoundCharge | None:
        """Return what a round charges at a node, or None when the node adds no noise."""
        return None

    # -- server half ---------------------------------------------------------------------
    @abstractmethod
    def step(self, server_round: int, summed_scaled: np.ndarray) -> np.ndarray | None:
        """Return the next broadcast from a round's secure sum, or None when done."""

    @abstractmethod
    def release(self, n_contributing: int | None) -> dict[str, Any]:
        """Return the released result, or ``status`` failed with the reason."""

    def report(self, status: str, reason: str, recorder: SumRecorder) -> dict[str, Any]:
        """Return the run's result: its end, rounds, the last sum's nodes, and the release.

        Each engine adds what only it knows (job id, nodes, wall time, run id).
        """
        out: dict[str, Any] = {
            "kind": self.spec.kind,
            "status": status,
            "reason": reason,
            "secure_aggregation": self.secagg is not None,
            "rounds": len(recorder.sums),
            # SecAgg+ finishes a round without a node that dropped out mid-protocol: the
            # last sum's contributors are said, not assumed to be every node of the job.
            "summed_nodes": recorder.nodes[-1] if recorder.nodes else [],
        }
        if recorder.rows_dropped:  # the per-resident cap's work at each node
            out["rows_dropped_by_node"] = dict(sorted(recorder.rows_dropped.items()))
        if recorder.complete_case:  # rows read and dropped as incomplete, per node
            out["complete_case_by_node"] = dict(sorted(recorder.complete_case.items()))
        if status == "succeeded":
            out.update(self.release(len(recorder.nodes[-1]) if recorder.nodes else None))
        return out
