"""The plan of a training job: DP-SGD on every node, FedAvg of the updates over SecAgg+.

The server half is the SecAgg+ sizing (``max_weight`` is the spec's, else the public
bound of a node's training set), the seeded initial model and the settlement of a run
that ended early. The node half is the public feature scaling, the held-out split, the
DP-SGD plan fixed at a node's first round, what each round charges, and the local
training step itself; the node's ClientApp brings its data and its gate as arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.plans.base import PlanInputs
from federation.plans.registry import register_plan
from federation.secagg import SecAggSettings
from federation.spec import JobSpec

if TYPE_CHECKING:
    import pandas as pd

    from federation.dp_training import DpPlan
    from federation.evaluation_dp import EvaluationRelease
    from federation.training_round import RoundRecord

__all__ = [
    "RoundSpend",
    "TrainPlan",
    "held_out_mask",
    "prepare_features",
    "public_scaling",
]


def held_out_mask(frame: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Return a held-out mask that is stable for a record whatever else is filtered out."""
    keys = frame["subject"].astype(str) if "subject" in frame.columns else frame.index.astype(str)
    salt = str(seed).encode()
    draws = np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(k.encode(), digest_size=4, salt=salt[:16]).digest(), "big"
            )
            for k in keys
        ),
        dtype=np.uint64,
        count=len(frame),
    )
    return draws < np.uint64(int(fraction * 2**32))


def prepare_features(
    frame: pd.DataFrame, features: list[str], scaling: dict[str, tuple[float, float]]
) -> np.ndarray:
    """Return the feature matrix, each column centred and scaled by its public (centre, scale).

    Raises:
        ValueError: a feature is not numeric.
    """
    import pandas as pd

    cols = []
    for name in features:
        col = pd.to_numeric(frame[name], errors="raise").to_numpy(dtype=np.float64)
        centre, scale = scaling.get(name, (0.0, 1.0))
        cols.append((col - centre) / scale)
    return np.column_stack(cols) if cols else np.empty((len(frame), 0))


def _declared_range(domain: str, column: str) -> tuple[float, float] | None:
    """Return a numeric column's declared (low, high) in the common data model, if any."""
    from federation.cdm import get_schema

    try:
        schema = get_schema(domain)
    except KeyError:
        return None
    for col in schema.columns:
        numeric = isinstance(col.low, int | float) and isinstance(col.high, int | float)
        if col.name == column and col.kind in ("int", "float") and numeric:
            return float(col.low), float(col.high)  # type: ignore[arg-type]
    return None


def public_scaling(job: JobSpec) -> dict[str, tuple[float, float]]:
    """Return (centre, scale) per feature: the job's own, else the data model's declared range.

    Both are public, so every node scales alike without seeing another node's data.
    """
    out: dict[str, tuple[float, float]] = {}
    for name in job.features:
        if name in job.training.scaling:
            out[name] = job.training.scaling[name]
        elif (rng := _declared_range(job.domain, name)) is not None and rng[1] > rng[0]:
            out[name] = ((rng[0] + rng[1]) / 2.0, (rng[1] - rng[0]) / 2.0)
    return out


@dataclass(frozen=True)
class RoundSpend:
    """What one training round uses at a node, to be committed before training runs."""

    subjects: list[str]
    epsilon: float
    delta: float
    mechanism: dict[str, Any]


class TrainPlan:
    """A training job: DP-SGD rounds at the nodes, FedAvg over SecAgg+ at the server.

    Attributes:
        spec: the job.
        inputs: the public inputs (``max_records`` bounds a node's training set).
        rounds: training rounds (one evaluation round follows).
        evaluation: what the job releases of its models' held-out evaluation, and under
            which noise (:mod:`federation.evaluation_dp`).
    """

    def __init__(self, spec: JobSpec, inputs: PlanInputs) -> None:
        self.spec = spec
        self.inputs = inputs
        self.rounds = spec.rounds

    # -- server half ---------------------------------------------------------------------
    @cached_property
    def secagg(self) -> SecAggSettings | None:
        """Return the SecAgg+ settings (``max_weight``: the spec's, else the record bound).

        Raises:
            ValueError: SecAgg+ is on and no bound of the nodes' training sets is known.
        """
        sa = self.spec.secure_aggregation
        weight = sa.max_weight or self.inputs.max_records
        if sa.enabled and weight < 1:
            raise ValueError(
                "max-records: unknown bound of the nodes' training sets (SecAgg+ max_weight)"
            )
        return SecAggSettings.from_spec(self.spec, self.inputs.n_nodes, weight)

    def initial_parameters(self) -> list[np.ndarray]:
        """Return the seeded initial model's parameters.

        Raises:
            ValueError: fewer nodes than the job's minimum.
        """
        import torch

        from federation.dp_training import get_parameters
        from federation.models import build_model

        if self.inputs.n_nodes < self.spec.min_nodes:
            raise ValueError(
                f"min_nodes: the job needs {self.spec.min_nodes} nodes, {self.inputs.n_nodes} given"
            )
        torch.manual_seed(self.spec.seed)
        spec = self.spec
        return get_parameters(
            build_model(spec.model, len(spec.features), spec.training.hidden_units)
        )

    @cached_property
    def evaluation(self) -> EvaluationRelease:
        """Return the job's evaluation releases (which rounds, and their noise under DP)."""
        from federation.evaluation_dp import EvaluationRelease

        return EvaluationRelease.for_job(self.spec, self.inputs.n_nodes)

    def evaluation_summary(self, rounds: Sequence[RoundRecord]) -> dict[str, Any]:
        """Return what the result states about the evaluations released in ``rounds``."""
        released = [r for r in rounds if r.metrics]
        fewest = min((len(r.nodes) for r in released), default=None)
        return self.evaluation.summary(len(released), fewest)

    @staticmethod
    def unfinished_reason(status: str) -> str | None:
        """Return why a run that ended with ``status`` failed, if it never finished."""
        return "the run ended without reaching its last round" if status == "pending" else None

    @staticmethod
    def epsilon_by_node(rounds: Sequence[RoundRecord]) -> dict[str, float]:
        """Return each node's cumulative ε after the last round it took part in."""
        last: dict[str, float] = {}
        for rec in rounds:
            last.update(rec.epsilon_by_node)
        return last

    @staticmethod
    def rows_dropped_by_node(rounds: Sequence[RoundRecord]) -> dict[str, int]:
        """Return the rows each node's per-resident cap dropped, in the last round it said."""
        last: dict[str, int] = {}
        for rec in rounds:
            last.update(rec.rows_dropped_by_node)
        return dict(sorted(last.items()))

    # -- node half -----------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """Return the columns a node reads: the features and the label."""
        if self.spec.label is None:
            raise ValueError("label: a training job needs a label")
        return [*self.spec.features, self.spec.label]

    def dp_plan(self, n_train: int) -> DpPlan | None:
        """Return the DP-SGD plan for a node with ``n_train`` training records (None without DP).

        Raises:
            federation.errors.FederationError: too few records, or δ not below 1/n.
        """
        from federation.dp_training import plan_dp

        privacy = self.spec.privacy
        if privacy is None:
            return None
        t = self.spec.training
        return plan_dp(
            n_train,
            t.batch_size,
            t.local_epochs,
            self.rounds,
            privacy.epsilon,
            privacy.delta,
            privacy.accountant,
            self.evaluation.mechanism(),
            self.spec.evaluation.per_round,
        )

    def dp_plan_from(self, sigma: float, sample_rate: float, steps: int) -> DpPlan | None:
        """Return the DP-SGD plan a node fixed at its first round, from its kept values."""
        from federation.dp_training import DpPlan

        privacy = self.spec.privacy
        if privacy is None:
            return None
        return DpPlan(
            sigma,
            sample_rate,
            steps,
            self.rounds,
            privacy.epsilon,
            privacy.delta,
            privacy.accountant,
            self.evaluation.mechanism(),
            self.spec.evaluation.per_round,
        )

    def local_step(
        self,
        frame: pd.DataFrame,
        parameters: list[np.ndarray],
        round_no: int,
        phase: str,
        *,
        node_name: str,
        fixed_dp: Callable[[int], DpPlan | None],
        commit: Callable[[RoundSpend], None],
    ) -> tuple[list[np.ndarray], int, float]:
        """Run one round at a node on the rows its gate admitted.

        ``fixed_dp(n_train)`` returns the node's DP plan (fixed at its first round and
        kept by the node); ``commit`` charges the round's spend and writes its usage
        entry, and must raise to stop the round: no row is read, for training or for the
        held-out evaluation, before it returns, and the usage it receives names every
        admitted subject (the final evaluation-only round commits too, spending what its
        noisy release costs under DP). A round that releases no evaluation sends zeros in
        its place (:class:`federation.evaluation_dp.EvaluationRelease`).

        Returns:
            ``(update arrays, training records, cumulative ε)``; an evaluation round
            returns the broadcast parameters with the held-out evaluation.
        """
        from federation.dp_training import (
            epsilon_spent,
            predict_proba,
            round_mechanism,
            set_parameters,
            train_local,
        )
        from federation.models import build_model
        from federation.privacy_unit import cap_rows_per_subject
        from federation.training_round import pack_update

        job = self.spec
        label = self.columns[-1]
        if job.privacy is not None:  # one row per resident: DP-SGD's record is a resident
            frame = cap_rows_per_subject(frame, 1).frame
        test = held_out_mask(frame, job.training.test_fraction, job.seed)
        n_train = int((~test).sum())
        plan = fixed_dp(n_train)
        training = phase == "train"
        release = self.evaluation
        done = round_no if training else round_no - 1  # training rounds done after this one
        eps_before = epsilon_spent(plan, round_no - 1) if plan else 0.0
        eps_after = epsilon_spent(plan, done, final=not training) if plan else 0.0
        mechanism: dict[str, Any] | None = None
        if plan is not None:  # DP-SGD (with a release if per round), or the final release
            mechanism = round_mechanism(plan) if training else release.mechanism()
        # Every admitted row is read below (training and held-out evaluation alike, and in
        # the final evaluation-only round): the usage entry covers them all, before any read.
        subjects = frame["subject"].astype(str).tolist() if "subject" in frame.columns else []
        delta = job.privacy.delta if job.privacy and mechanism else 0.0
        spend = RoundSpend(subjects, eps_after - eps_before, delta, mechanism or {"type": "none"})
        commit(spend)
        x = prepare_features(frame, job.features, public_scaling(job))
        y = frame[label].to_numpy(dtype=np.float64)
        x_train, y_train, x_test, y_test = x[~test], y[~test], x[test], y[test]
        model = build_model(job.model, len(job.features), job.training.hidden_units)
        set_parameters(model, parameters)
        evaluation = (
            release.node_vector(predict_proba(model, x_test), y_test)
            if release.released(round_no)
            else release.silent()
        )
        if not training:
            params = [np.asarray(p, dtype=np.float64) for p in parameters]
            return pack_update(params, evaluation, n_train), n_train, eps_after
        result = train_local(
            model,
            x_train,
            y_train,
            plan,
            max_grad_norm=job.privacy.max_grad_norm if job.privacy else 1.0,
            learning_rate=job.training.learning_rate,
            batch_size=job.training.batch_size,
            local_epochs=job.training.local_epochs,
            seed=job.seed * 100_003 + round_no * 1_009 + sum(map(ord, node_name)),
        )
        return pack_update(result.parameters, evaluation, len(y_train)), len(y_train), eps_after


register_plan("train", TrainPlan)
