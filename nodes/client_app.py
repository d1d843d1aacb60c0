"""The node's Flower ClientApp: every round passes the node's gate before data are read.

The gate (:class:`RoundGate`) is the enforcement point: it selects the records this
job may use in this round (policy, consent, minimum cohort) and commits the round's
privacy charge and ledger entry; only then does local DP training run. The update goes
out through ``secaggplus_mod``, so only its masked form leaves the node.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from federation.dp_training import DpPlan
from federation.plans.train import RoundSpend, TrainPlan
from federation.privacy_unit import cap_for_job
from federation.secagg import check_range
from federation.spec import JobSpec
from nodes.sources import NodeSource, read_columns

if TYPE_CHECKING:
    from flwr.app import Context
    from flwr.clientapp import ClientApp

__all__ = ["OpenGate", "RoundGate", "RoundUse", "build_training_client_app"]

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

    def commit(self, job: JobSpec, use: RoundUse) -> float | None:
        """Charge the round's privacy cost and write its usage entry, atomically, or raise.

        Returns:
            The job's composed ε charged at this node so far, this round included, or
            None when the gate keeps no budget (the node then composes what it ran).
        """
        ...


class OpenGate:
    """A gate that admits every row: for ``hamanasu simulate`` on a researcher's sample files."""

    def select(self, job: JobSpec, job_id: str, round_no: int, frame: pd.DataFrame) -> pd.DataFrame:
        """Return ``frame`` unchanged."""
        return frame

    def commit(self, job: JobSpec, use: RoundUse) -> None:
        """Do nothing (sample files carry no consent or budget); return None."""


class _TrainingClient:
    """The NumPyClient of one node for one training job: read, gate, then the plan's step."""

    def __init__(
        self, plan: TrainPlan, job_id: str, node: NodeSource, gate: RoundGate, context: Context
    ) -> None:
        self.plan, self.job_id, self.node, self.gate, self.context = (
            plan,
            job_id,
            node,
            gate,
            context,
        )

    def _fixed_dp(self, n_train: int) -> DpPlan | None:
        """Return the DP plan fixed at the node's first round (kept in the node's context)."""
        if self.plan.spec.privacy is None:
            return None
        from flwr.app import ConfigRecord

        store = self.context.state.config_records
        key = f"hamanasu.plan.{self.job_id}"
        if key not in store:
            fixed = self.plan.dp_plan(n_train)
            if fixed is None:
                raise ValueError(f"job {self.job_id}: a job with privacy needs a DP plan")
            store[key] = ConfigRecord(
                {
                    "sigma": fixed.noise_multiplier,
                    "q": fixed.sample_rate,
                    "steps": fixed.steps_per_round,
                }
            )
        rec = store[key]
        sigma, rate, steps = (rec[k] for k in ("sigma", "q", "steps"))
        if not (isinstance(sigma, float) and isinstance(rate, float) and isinstance(steps, int)):
            raise TypeError(f"the node's kept DP plan of job {self.job_id} is malformed")
        return self.plan.dp_plan_from(sigma, rate, steps)

    def _keep_mechanism(self, round_no: int, mechanism: dict[str, Any]) -> None:
        """Keep the mechanism this node ran in ``round_no`` (in the node's context)."""
        from flwr.app import ConfigRecord

        from policies.accounting import mechanism_json, parse_mechanism

        if mechanism.get("type") == "none":
            return
        store = self.context.state.config_records
        key = f"hamanasu.ran.{self.job_id}"
        ran = store[key] if key in store else ConfigRecord()
        ran[str(round_no)] = mechanism_json(parse_mechanism(mechanism))
        store[key] = ran

    def _composed(self) -> float:
        """Return the composed ε of the mechanisms this node ran for the job (0 without DP)."""
        from policies.accounting import compose_epsilon

        key = f"hamanasu.ran.{self.job_id}"
        store = self.context.state.config_records
        privacy = self.plan.spec.privacy
        if privacy is None or key not in store:
            return 0.0
        ran = store[key]
        mechs = [json.loads(str(ran[k])) for k in sorted(ran, key=int)]
        return float(compose_epsilon(mechs, privacy.delta)) if mechs else 0.0

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        job = self.plan.spec
        round_no, phase = int(config["round"]), str(config["phase"])
        frame = read_columns(self.node.data, job.domain, self.plan.columns)
        frame = self.gate.select(job, self.job_id, round_no, frame)
        frame, dropped = cap_for_job(frame, job)  # one row per resident under DP-SGD

        charged: list[float | None] = []

        def commit(spend: RoundSpend) -> None:
            use = RoundUse(
                self.job_id,
                round_no,
                phase,
                spend.subjects,
                spend.epsilon,
                spend.delta,
                spend.mechanism,
            )
            charged.append(self.gate.commit(job, use))
            self._keep_mechanism(round_no, spend.mechanism)

        arrays, n_train, _ = self.plan.local_step(
            frame,
            parameters,
            round_no,
            phase,
            node_name=self.node.name,
            fixed_dp=self._fixed_dp,
            commit=commit,
        )
        if "secagg.clipping_range" in config:
            check_range(
                arrays,
                n_train,
                float(config["secagg.clipping_range"]),
                float(config["secagg.max_weight"]),
            )
        # The ε this node spent on the job: what its budget charged for the rounds it ran
        # (a node that missed rounds spent less than the job's composed ε).
        eps = charged[-1] if charged and charged[-1] is not None else self._composed()
        metrics: dict[str, Any] = {"node": self.node.name, "epsilon": eps}
        if dropped is not None:
            metrics["rows_dropped"] = dropped
        return arrays, n_train, metrics


def build_training_client_app(
    plan: TrainPlan,
    job_id: str,
    nodes: list[NodeSource],
    gates: dict[str, RoundGate] | None = None,
) -> ClientApp:
    """Build the ClientApp that runs ``plan``'s job at whichever node a message is addressed to.

    A node is found by ``node_config["node-name"]`` (deployment) or by its simulation
    ``partition-id`` (embedded runs). ``gates`` maps a node name to its enforcement point;
    a node without one uses :class:`OpenGate`.

    Returns:
        The :class:`flwr.clientapp.ClientApp` (with ``secaggplus_mod`` when the job's
        secure aggregation is on).
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
        return _Client(_TrainingClient(plan, job_id, node, gate, context)).to_client()

    secure = plan.spec.secure_aggregation.enabled
    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if secure else None)
