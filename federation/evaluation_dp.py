"""What a training job releases about its models' held-out performance, and under which noise.

Every node evaluates the broadcast model on its held-out residents and sends the result
inside the secure sum (:mod:`federation.training_round`). What is released:

* **Which rounds.** The final model's evaluation, always; the evaluation of every round's
  model only when the spec asks (``[evaluation] per_round = true``). In any other round
  a node sends zeros in the evaluation's place, and nothing is released.
* **With ``[privacy]``** (every training job): the positives' and negatives'
  histograms on ``[evaluation] bins`` probability bins
  (:func:`federation.evaluation.histograms`).
  One resident's held-out row is one count in one bin, so the L2 sensitivity is 1. Each
  node adds its share of distributed discrete Gaussian noise (OpenDP) before SecAgg+,
  the same mechanism as a DP GLM's (:class:`federation.analytics.glm_noise.GlmNoise`):
  the sum carries Gaussian noise of scale ``σ``, so neither the coordinator nor the
  researcher sees an exact count. ``σ`` is calibrated with the PLD accountant so that the
  job's evaluation releases alone would spend ``epsilon_fraction`` of the job's ε; the
  DP-SGD noise is then calibrated for the rest, the composition of both (PLD,
  :func:`policies.accounting.calibrate_sigma` with the releases alongside) within the
  job's ε (:func:`federation.dp_training.plan_dp`). Each release is charged at every
  node in the round that makes it.
* **Without ``[privacy]``**: the exact evaluation vector
  (:func:`federation.evaluation.local_evaluation`).

A resident is held out or trains, never both (the split hashes the pseudonym), so adding
the two ε is conservative; the accounting does not rely on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from federation.evaluation import (
    EVAL_LENGTH,
    histograms,
    local_evaluation,
    metrics_from_histograms,
    metrics_from_sums,
)

if TYPE_CHECKING:
    from federation.analytics.glm_noise import GlmNoise
    from federation.spec import JobSpec

__all__ = ["EvaluationRelease", "EvaluationSpec"]


class EvaluationSpec(BaseModel):
    """The ``[evaluation]`` table of a training job.

    Attributes:
        per_round: release the evaluation of every round's model, not only the final
            one's (each release noised and charged under ``[privacy]``).
        epsilon_fraction: the share of ``privacy.epsilon`` the evaluation releases alone
            would spend; DP-SGD is calibrated for what remains (composed by PLD).
        bins: probability bins of the released histograms under ``[privacy]`` (even,
            so that 0.5 is an edge); without ``[privacy]`` the exact vector has 200.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_round: Annotated[bool, Field(strict=True)] = False
    epsilon_fraction: Annotated[float, Field(strict=True, allow_inf_nan=False)] = Field(
        default=0.3, gt=0, le=0.5
    )
    bins: Annotated[int, Field(strict=True)] = Field(default=20, ge=2, le=200, multiple_of=2)


@dataclass(frozen=True)
class EvaluationRelease:
    """A training job's evaluation releases, the same on the server and at every node.

    Attributes:
        settings: the job's ``[evaluation]`` table.
        rounds: the job's training rounds (the final evaluation is round ``rounds + 1``).
        noise: the distributed noise on the histograms; None without ``[privacy]``.
    """

    settings: EvaluationSpec
    rounds: int
    noise: GlmNoise | None

    @classmethod
    def for_job(cls, spec: JobSpec, n_nodes: int) -> EvaluationRelease:
        """Return the job's releases over ``n_nodes`` nodes adding shares.

        With an Opacus accountant (``rdp``, ``prv``) the releases are calibrated at half
        the job's δ, and DP-SGD at the other half (basic composition).
        """
        from federation.analytics.glm_noise import GlmNoise

        settings, privacy = spec.evaluation, spec.privacy
        if privacy is None:
            return cls(settings, spec.rounds, None)
        noise = GlmNoise(
            epsilon=privacy.epsilon * settings.epsilon_fraction,
            delta=privacy.delta if privacy.accountant == "pld" else privacy.delta / 2,
            rounds=spec.rounds + 1 if settings.per_round else 1,
            n_nodes=max(n_nodes, 1),
            entries=2 * settings.bins,
            l2_sensitivity=1.0,
        )
        return cls(settings, spec.rounds, noise)

    @property
    def length(self) -> int:
        """Return the length of the evaluation vector a node sends."""
        return EVAL_LENGTH if self.noise is None else 2 * self.settings.bins

    def released(self, round_no: int) -> bool:
        """Return whether round ``round_no`` releases an evaluation."""
        return round_no > self.rounds or self.settings.per_round

    def mechanism(self) -> dict[str, Any] | None:
        """Return one release as the budget ledger records it (None: no noise, no charge)."""
        return None if self.noise is None else self.noise.round_mechanism()

    # -- node half -----------------------------------------------------------------------
    def node_vector(self, prob: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return a node's evaluation of a released round, with its noise share under DP.

        Raises:
            ValueError: shapes differ or labels are not 0/1.
        """
        if self.noise is None:
            return local_evaluation(prob, y)
        counts = histograms(prob, y, self.settings.bins)
        return counts + self.noise.node_share(np.ones(self.length))

    def silent(self) -> np.ndarray:
        """Return what a node sends in a round that releases no evaluation (zeros)."""
        return np.zeros(self.length)

    # -- server half ---------------------------------------------------------------------
    def metrics(self, round_no: int, summed: np.ndarray) -> dict[str, float] | None:
        """Return the released metrics of round ``round_no`` (None when it releases none).

        Raises:
            ValueError: the sum has the wrong length or holds no example.
        """
        if not self.released(round_no):
            return None
        if self.noise is None:
            return metrics_from_sums(summed).as_dict()
        return metrics_from_histograms(summed, self.settings.bins).as_dict()

    def summary(self, released: int, n_contributing: int | None) -> dict[str, Any]:
        """Return what a result states about the releases made and their noise.

        ``released``: how many evaluations were released; ``n_contributing``: the fewest
        nodes that added a share to any of them.
        """
        out: dict[str, Any] = {
            "released": "every round" if self.settings.per_round else "final model",
            "releases": released,
        }
        if self.noise is None:
            return {**out, "dp": None}
        return {
            **out,
            "bins": self.settings.bins,
            "epsilon_fraction": self.settings.epsilon_fraction,
            # its ``epsilon``: what the releases alone would spend (their share of the job's)
            "dp": self.noise.summary(released, n_contributing),
        }
