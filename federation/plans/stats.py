"""The plan of a statistics job: one secure sum, then DP release and cell suppression.

Scales come from public information only: each variable's public bounds (the spec's,
else the data model's declared range) and the power-of-two bound of a node's record
count. With a ``[privacy]`` table noise is calibrated for ε × (1 − :data:`CALIBRATION_MARGIN`)
and added on the nodes (``distributed``) or after the sum (``central``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.plans.base import PlanInputs, Ranges, RoundCharge, SumPlan, record_bound
from federation.plans.registry import register_plan
from federation.spec import JobSpec

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CALIBRATION_MARGIN", "StatsPlan", "resolve_stats_bounds"]

#: Noise is calibrated for ε × (1 − margin): calibration and the budget ledger share the
#: PLD accountant, and the margin keeps a node's charge below what the job reserved
#: whatever the last digits of a recomputation.
CALIBRATION_MARGIN = 1e-3


def resolve_stats_bounds(spec: JobSpec, declared: Ranges) -> JobSpec:
    """Return the spec with every variable's public bounds (the spec's, else ``declared``).

    Raises:
        ValueError: a variable has no public bounds (``stats.bounds`` names it).
    """
    bounds = dict(spec.stats.bounds)
    for var in spec.stats.variables:
        if var not in bounds:
            if var not in declared:
                raise ValueError(f"stats.bounds: variable {var!r} needs public bounds [low, high]")
            low, high = declared[var]
            bounds[var] = (float(low), float(high))
    return spec.model_copy(update={"stats": spec.stats.model_copy(update={"bounds": bounds})})


class StatsPlan(SumPlan):
    """A statistics job: one secure sum, then DP release and cell suppression.

    Raises:
        ValueError: a variable has no public bounds, or SecAgg+ is on with fewer than 2 nodes.
    """

    def __init__(self, spec: JobSpec, inputs: PlanInputs) -> None:
        from federation.analytics.dp_noise import DpConfig
        from federation.analytics.stats import stats_layout

        super().__init__(resolve_stats_bounds(spec, inputs.ranges(spec)), inputs)
        self.layout = stats_layout(self.spec)
        self.scale = self.layout.block_scales() * record_bound(inputs.max_records)
        privacy = self.spec.privacy
        self.dp = (
            None
            if privacy is None
            else DpConfig(
                epsilon=privacy.epsilon * (1 - CALIBRATION_MARGIN),
                delta=privacy.delta,
                mechanism=self.spec.stats.dp_mechanism,
                mode=self.spec.stats.dp_mode,
                n_nodes=inputs.n_nodes,
                max_rows_per_subject=privacy.max_rows_per_subject,
            )
        )
        self.summed: np.ndarray | None = None

    # -- node half -----------------------------------------------------------------------
    def local(self, frame: pd.DataFrame, params: np.ndarray, config: dict[str, Any]) -> np.ndarray:
        """Return the node's scaled sums (with its share of noise in distributed mode)."""
        from federation.analytics.scaling import scale_for_secagg
        from federation.analytics.stats import stats_local
        from federation.privacy_unit import cap_rows_per_subject

        if self.dp is not None:  # the sensitivity holds for this many rows per resident
            frame = cap_rows_per_subject(frame, self.dp.max_rows_per_subject).frame
        node_dp = self.dp if self.dp is not None and self.dp.mode == "distributed" else None
        vector, _ = stats_local(frame, self.spec, dp=node_dp)
        return scale_for_secagg(vector, self.scale, self.clip)

    @property
    def round_charge(self) -> RoundCharge | None:
        """Return :meth:`mechanism` when the job has a ``[privacy]`` table, else None."""
        return self.mechanism if self.dp is not None else None

    def mechanism(self, server_round: int) -> tuple[float, dict[str, Any]]:
        """Return the (ε, mechanism) the release charges at every node.

        Raises:
            ValueError: the job has no ``[privacy]`` table.
        """
        from federation.analytics.stats import stats_noise_scale

        if self.dp is None:
            raise ValueError("privacy: a statistics job without a [privacy] table charges nothing")
        sigma = stats_noise_scale(self.layout, self.dp)
        blocks = len(self.layout.blocks)
        if self.dp.mechanism == "laplace":
            return self.dp.epsilon, {
                "type": "laplace",
                "scale": sigma,
                "sensitivity": float(blocks),
            }
        return self.dp.epsilon, {
            "type": "gaussian",
            "sigma": sigma,
            "sensitivity": math.sqrt(blocks),
        }

    # -- server half ---------------------------------------------------------------------
    def step(self, server_round: int, summed_scaled: np.ndarray) -> None:
        """Keep the round's sum (unscaled); a statistics job is done after one round."""
        from federation.analytics.scaling import unscale

        self.summed = unscale(summed_scaled, self.scale)

    def release(self, n_contributing: int | None) -> dict[str, Any]:
        """Return the released result (cells, suppression, DP), or failed with the reason."""
        from federation.analytics.stats import stats_finalize

        if self.summed is None:
            return {"status": "failed", "reason": "no secure sum was released"}
        min_cells = max(self.inputs.min_cell_count, self.spec.stats.min_cell_count)
        released = stats_finalize(
            self.summed, self.layout, self.spec, min_cells, self.dp, n_contributing=n_contributing
        )
        return {**released.to_json_dict(), "status": "succeeded"}


register_plan("stats", StatsPlan)
