"""The plan of a GLM job: Newton–Raphson over secure sums, one round per iteration.

Every round the server broadcasts the coefficients; each node returns its sufficient
statistics at them (with a ``[privacy]`` table: at most ``max_rows_per_subject`` rows per
resident, plus its share of distributed discrete Gaussian noise,
:mod:`federation.analytics.glm_noise`, charged to its budget every round), divided by a
public scale derived from the broadcast coefficients,
the public term bounds and the record bound; the server multiplies the secure sum back
and takes one Newton step (:class:`federation.analytics.glm_newton.NewtonLoop`: the start
at the intercept-only fit, and a stopping rule that knows SecAgg+'s quantisation floor;
under DP every planned round is taken and the last broadcasts' mean is released).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from federation.plans.base import PlanInputs, RoundCharge, SumPlan, record_bound
from federation.plans.registry import register_plan
from federation.spec import JobSpec

if TYPE_CHECKING:
    import pandas as pd

    from federation.analytics.glm_newton import NewtonLoop
    from federation.analytics.glm_noise import GlmNoise

__all__ = ["GlmPlan"]

#: A node refuses its statistics below this many events (its own disclosure floor).
NODE_MIN_EVENTS = 10


class GlmPlan(SumPlan):
    """A GLM job: Newton–Raphson over secure sums, one round per iteration.

    Raises:
        federation.analytics.DesignError: a numeric feature has no public range.
        ValueError: SecAgg+ is on with fewer than 2 nodes.
    """

    def __init__(self, spec: JobSpec, inputs: PlanInputs) -> None:
        from federation.analytics.glm_newton import NewtonLoop
        from federation.analytics.glm_round import (
            glm_extra_bounds,
            glm_formula_design,
            glm_has_intercept,
            glm_term_bounds,
            glm_term_names,
        )

        super().__init__(spec, inputs)
        self.names = glm_term_names(spec)
        self.term_bounds = glm_term_bounds(spec, inputs.ranges(spec))
        #: public bounds of |offset| and of a frequency weight (they size the scale too)
        self.extra_bounds = glm_extra_bounds(spec, inputs.ranges(spec))
        formula = glm_formula_design(spec)
        offset = formula is not None and formula.formula.offset is not None
        self.max_rounds = spec.glm.max_iterations + 1
        self.noise = self._noise(spec, inputs, len(self.names), self.max_rounds)
        # The record bound leaves room for the nodes' noise shares within SecAgg+'s range.
        headroom = self.noise.headroom_rows() if self.noise else 0
        self.bound = record_bound(inputs.max_records + headroom)
        self.rounds_run = 0
        self.initial = np.zeros(len(self.names))
        self.newton: NewtonLoop = NewtonLoop(
            spec.glm.family,
            self.names,
            tolerance=spec.glm.tolerance,
            min_events_per_parameter=spec.glm.min_events_per_parameter,
            rcond=1e-7 if self.secagg else 1e-10,
            null_start=glm_has_intercept(spec),
            offset=offset,
            # Under DP every planned round is spent (the floor is no stopping rule there).
            planned_rounds=self.max_rounds if self.noise is not None else None,
        )

    @staticmethod
    def _noise(spec: JobSpec, inputs: PlanInputs, n_params: int, rounds: int) -> GlmNoise | None:
        from federation.analytics.glm import glm_layout
        from federation.analytics.glm_noise import GlmNoise
        from federation.plans.stats import CALIBRATION_MARGIN

        privacy = spec.privacy
        if privacy is None:
            return None
        return GlmNoise(
            epsilon=privacy.epsilon * (1 - CALIBRATION_MARGIN),
            delta=privacy.delta,
            rounds=rounds,
            n_nodes=inputs.n_nodes,
            entries=glm_layout(n_params).size,
            max_rows_per_subject=privacy.max_rows_per_subject,
        )

    # -- node half -----------------------------------------------------------------------
    def local(self, frame: pd.DataFrame, params: np.ndarray, config: dict[str, Any]) -> np.ndarray:
        """Return the node's scaled GLM statistics at the broadcast coefficients ``params``.

        With privacy: rows capped per resident, plus the node's noise share.
        """
        from federation.analytics.glm_round import glm_node_vector
        from federation.privacy_unit import cap_rows_per_subject

        noise = self.noise
        if noise is not None:
            frame = cap_rows_per_subject(frame, noise.max_rows_per_subject).frame
        return glm_node_vector(
            frame,
            self.spec,
            params,
            self.term_bounds,
            self.bound,
            self.clip,
            min_events=NODE_MIN_EVENTS,
            noise_share=None if noise is None else noise.node_share,
            extra_bounds=self.extra_bounds,
        )

    @property
    def round_charge(self) -> RoundCharge | None:
        """Return :meth:`mechanism` when the job has a ``[privacy]`` table, else None."""
        return self.mechanism if self.noise is not None else None

    def mechanism(self, server_round: int) -> tuple[float, dict[str, Any]]:
        """Return the (ε, mechanism) round ``server_round`` charges at every node.

        Raises:
            ValueError: the job has no ``[privacy]`` table.
        """
        if self.noise is None:
            raise ValueError("privacy: a GLM job without a [privacy] table charges nothing")
        rise = self.noise.epsilon_after(server_round) - self.noise.epsilon_after(server_round - 1)
        return rise, self.noise.round_mechanism()

    # -- server half ---------------------------------------------------------------------
    @property
    def beta(self) -> np.ndarray:
        """Return the coefficients of the current broadcast."""
        return self.newton.beta

    def step(self, server_round: int, summed_scaled: np.ndarray) -> np.ndarray | None:
        """Take one Newton step from the round's sum; return the next ``beta`` or None if done.

        Under SecAgg+ the step knows the quantisation error of every summed entry, so the
        fit stops once the remaining distance is below what the secure sum can resolve.

        Raises:
            federation.analytics.GlmRefusal: the fit cannot be released (separation, too
                few events per parameter).
        """
        from federation.analytics.glm_round import (
            glm_per_row_bounds,
            glm_sum_noise_sd,
            glm_unscale_sum,
        )

        beta, spec = self.newton.beta, self.spec
        summed = glm_unscale_sum(
            summed_scaled,
            spec,
            beta,
            self.term_bounds,
            self.bound,
            self.clip,
            extra_bounds=self.extra_bounds,
        )
        noise_sd = (
            None
            if self.secagg is None
            else glm_sum_noise_sd(
                spec,
                beta,
                self.term_bounds,
                self.bound,
                self.clip,
                self.secagg.resolution,
                self.inputs.n_nodes,
                extra_bounds=self.extra_bounds,
            )
        )
        if self.noise is not None:
            per_row = glm_per_row_bounds(spec, beta, self.term_bounds, self.extra_bounds)
            dp_sd = self.noise.noise_sd(per_row)
            noise_sd = dp_sd if noise_sd is None else np.sqrt(noise_sd**2 + dp_sd**2)
        self.rounds_run = server_round
        return self.newton.advance(summed, noise_sd)

    def release(self, n_contributing: int | None) -> dict[str, Any]:
        """Return the fitted model, or failed when the fit released nothing."""
        result = self.newton.result
        if result is None:
            return {"status": "failed", "reason": "the fit ended without a released result"}
        out = {**result.to_json_dict(), "status": "succeeded"}
        if self.spec.glm.formula is not None:
            out["formula"] = self.spec.glm.formula
        if self.secagg is not None:
            out["secagg_resolution"] = self.secagg.resolution
        if self.noise is not None:
            out["dp"] = self.noise.summary(self.rounds_run, n_contributing)
        return out


register_plan("glm", GlmPlan)
