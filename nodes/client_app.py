"""The node's Flower ClientApp: every round passes the node's gate before data are read.

The gate (:class:`RoundGate`) is the enforcement point: it selects the records this
job may use in this round (policy, consent, minimum cohort) and commits the round's
privacy charge and ledger entry; only then does local DP training run. The update goes
out through ``secaggplus_mod``, so only its masked form leaves the node.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from federation.dp_training import (
    DpPlan,
    epsilon_spent,
    plan_dp,
    predict_proba,
    set_parameters,
    train_local,
)
from federation.evaluation import local_evaluation
from federation.models import build_model
from federation.secagg import check_range
from federation.spec import JobSpec
from federation.training_round import pack_update
from nodes.sources import NodeSource, read_columns

if TYPE_CHECKING:
    from flwr.app import Context
    from flwr.clientapp import ClientApp

__all__ = ["OpenGate", "RoundGate", "RoundUse", "build_training_client_app", "prepare_features"]

log = logging.getLogger("hamanasu.node")


@dataclass(frozen=True)
class RoundUse:
    """What a round will use, as committed to the node's budget and ledger before training."""

    job_id: str
    round: int
    phase: str
    subjects: list[str]
    epsilon: float
    delta: float
    mechanism: dict[str, Any]


class RoundGate(Protocol):
    """The enforcement point a round passes before any record reaches training."""

    def select(self, job: JobSpec, job_id: str, round_no: int, frame: pd.DataFrame) -> pd.DataFrame:
        """Return the rows this job may use now (policy, consent, minimum cohort) or raise."""
        ...

    def commit(self, job: JobSpec, use: RoundUse) -> None:
        """Charge the round's privacy cost and write its usage entry, atomically, or raise."""
        ...


class OpenGate:
    """A gate that admits every row: for ``hamanasu simulate`` on a researcher's sample files."""

    def select(self, job: JobSpec, job_id: str, round_no: int, frame: pd.DataFrame) -> pd.DataFrame:
        """Return ``frame`` unchanged."""
        return frame

    def commit(self, job: JobSpec, use: RoundUse) -> None:
        """Do nothing: sample files carry no consent or budget."""


def _test_mask(frame: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
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


class _TrainingClient:
    """The NumPyClient of one node for one training job."""

    def __init__(
        self, job: JobSpec, job_id: str, node: NodeSource, gate: RoundGate, context: Context
    ) -> None:
        self.job, self.job_id, self.node, self.gate, self.context = job, job_id, node, gate, context

    def _plan(self, n_train: int) -> DpPlan | None:
        """Return the DP plan fixed at the node's first round (kept in the node's context)."""
        privacy = self.job.privacy
        if privacy is None:
            return None
        from flwr.app import ConfigRecord

        store = self.context.state.config_records
        key = f"hamanasu.plan.{self.job_id}"
        if key not in store:
            plan = plan_dp(
                n_train,
                self.job.training.batch_size,
                self.job.training.local_epochs,
                self.job.rounds,
                privacy.epsilon,
                privacy.delta,
                privacy.accountant,
            )
            store[key] = ConfigRecord(
                {
                    "sigma": plan.noise_multiplier,
                    "q": plan.sample_rate,
                    "steps": plan.steps_per_round,
                }
            )
        rec = store[key]
        sigma, rate, steps = (rec[k] for k in ("sigma", "q", "steps"))
        assert isinstance(sigma, float) and isinstance(rate, float) and isinstance(steps, int)
        return DpPlan(
            sigma,
            rate,
            steps,
            self.job.rounds,
            privacy.epsilon,
            privacy.delta,
            privacy.accountant,
        )

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        job = self.job
        round_no, phase = int(config["round"]), str(config["phase"])
        assert job.label is not None
        frame = read_columns(self.node.data, job.domain, [*job.features, job.label])
        frame = self.gate.select(job, self.job_id, round_no, frame)
        test = _test_mask(frame, job.training.test_fraction, job.seed)
        scaling = public_scaling(job)
        x = prepare_features(frame, job.features, scaling)
        y = frame[job.label].to_numpy(dtype=np.float64)
        x_train, y_train, x_test, y_test = x[~test], y[~test], x[test], y[test]
        model = build_model(job.model, len(job.features), job.training.hidden_units)
        set_parameters(model, parameters)
        evaluation = local_evaluation(predict_proba(model, x_test), y_test)
        plan = self._plan(len(y_train))
        eps_before = epsilon_spent(plan, round_no - 1) if plan else 0.0
        if phase == "train":
            eps_after = epsilon_spent(plan, round_no) if plan else 0.0
            mechanism: dict[str, Any] = (
                {
                    "type": "subsampled_gaussian",
                    "noise_multiplier": plan.noise_multiplier,
                    "sample_rate": plan.sample_rate,
                    "steps": plan.steps_per_round,
                }
                if plan
                else {"type": "none"}
            )
            subjects = (
                frame.loc[~test, "subject"].astype(str).tolist()
                if "subject" in frame.columns
                else []
            )
            self.gate.commit(
                job,
                RoundUse(
                    self.job_id,
                    round_no,
                    phase,
                    subjects,
                    eps_after - eps_before,
                    job.privacy.delta if job.privacy else 0.0,
                    mechanism,
                ),
            )
            result = train_local(
                model,
                x_train,
                y_train,
                plan,
                max_grad_norm=job.privacy.max_grad_norm if job.privacy else 1.0,
                learning_rate=job.training.learning_rate,
                batch_size=job.training.batch_size,
                local_epochs=job.training.local_epochs,
                seed=job.seed * 100_003 + round_no * 1_009 + sum(map(ord, self.node.name)),
            )
            params, eps_total = result.parameters, eps_after
        else:
            params, eps_total = [np.asarray(p, dtype=np.float64) for p in parameters], eps_before
        arrays = pack_update(params, evaluation, len(y_train))
        if "secagg.clipping_range" in config:
            check_range(
                arrays,
                len(y_train),
                float(config["secagg.clipping_range"]),
                float(config["secagg.max_weight"]),
            )
        return arrays, len(y_train), {"node": self.node.name, "epsilon": eps_total}


def build_training_client_app(
    job: JobSpec,
    job_id: str,
    nodes: list[NodeSource],
    gates: dict[str, RoundGate] | None = None,
    secure_aggregation: bool = True,
) -> ClientApp:
    """Build the ClientApp that runs ``job`` at whichever node a message is addressed to.

    A node is found by ``node_config["node-name"]`` (deployment) or by its simulation
    ``partition-id`` (embedded runs). ``gates`` maps a node name to its enforcement point;
    a node without one uses :class:`OpenGate`.

    Returns:
        The :class:`flwr.clientapp.ClientApp` (with ``secaggplus_mod`` when secure
        aggregation is on).
    """
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    by_name = {n.name: n for n in nodes}
    gate_map = gates or {}

    class _Client(NumPyClient):
        def __init__(self, inner: _TrainingClient) -> None:
            self.inner = inner

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            return self.inner.fit(parameters, config)

    def client_fn(context: Context) -> Any:
        name = context.node_config.get("node-name")
        node = by_name[str(name)] if name else nodes[int(context.node_config["partition-id"])]
        gate = gate_map.get(node.name, OpenGate())
        return _Client(_TrainingClient(job, job_id, node, gate, context)).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secure_aggregation else None)
