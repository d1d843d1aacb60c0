"""Local training with record-level differential privacy (Opacus DP-SGD).

Every node runs the same routine (Opacus): Poisson-sampled batches, per-sample clipping
at the job's ``max_grad_norm``, Gaussian noise whose multiplier is calibrated so that the
job's whole training (all rounds) together with its evaluation releases
(:mod:`federation.evaluation_dp`) stays within the job's (ε, δ). Calibration and the ε
spent after any number of rounds use the privacy-loss-distribution accountant of
:mod:`policies.accounting` (dp_accounting's PLD, the same one the budget ledger charges)
by default, composing DP-SGD and the releases; with an Opacus accountant (``rdp``,
``prv``: looser) DP-SGD takes half of δ and the rest of ε, the releases the other half
(basic composition). Nothing is hand-accounted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.errors import FederationError
from policies.accounting import calibrate_sigma, compose_epsilon

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "DpPlan",
    "LocalTrainingResult",
    "epsilon_spent",
    "plan_dp",
    "round_mechanism",
    "train_local",
]


@dataclass(frozen=True)
class DpPlan:
    """How one node spends its (ε, δ) over a whole job.

    Attributes:
        noise_multiplier: σ, Gaussian noise std relative to ``max_grad_norm``.
        sample_rate: q, Poisson sampling probability of a record per step.
        steps_per_round: expected batches per round (local epochs / q).
        rounds: rounds the job plans.
        target_epsilon, delta: the job's target.
        accountant: ``pld`` (dp_accounting PLD, the default) or an Opacus accountant name
            (``rdp``, ``prv``).
        evaluation: one evaluation release as the ledger records it (a Gaussian), or None.
        evaluation_per_round: every round releases an evaluation, not only the final one.
    """

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    target_epsilon: float
    delta: float
    accountant: str
    evaluation: dict[str, Any] | None = None
    evaluation_per_round: bool = False

    def releases(self, rounds_done: int, final: bool) -> list[dict[str, Any]]:
        """Return the evaluation releases made after ``rounds_done`` rounds (and the final)."""
        if self.evaluation is None:
            return []
        count = (rounds_done if self.evaluation_per_round else 0) + int(final)
        return [{**self.evaluation, "count": count}] if count else []


def plan_dp(
    n_records: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    epsilon: float,
    delta: float,
    accountant: str = "pld",
    evaluation: dict[str, Any] | None = None,
    evaluation_per_round: bool = False,
) -> DpPlan:
    """Calibrate DP-SGD noise for a node's whole job with the plan's accountant.

    ``evaluation`` (one release, a Gaussian mechanism) is released after the last round,
    and with ``evaluation_per_round`` in every round too: DP-SGD gets what those releases
    leave of (ε, δ).

    Returns:
        The :class:`DpPlan` whose total spend after ``rounds`` rounds and every
        evaluation release is at most ``epsilon``.

    Raises:
        FederationError: fewer records than one batch, or δ not below 1/n.
    """
    if n_records < 2:
        raise FederationError(f"{n_records} training records are too few for DP-SGD")
    if delta >= 1.0 / n_records:
        raise FederationError(
            f"delta {delta:g} must be below 1/n = {1.0 / n_records:.3g} for {n_records} records"
        )
    sample_rate = min(1.0, batch_size / n_records)
    steps_per_round = max(1, round(local_epochs / sample_rate))
    draft = DpPlan(
        1.0,
        sample_rate,
        steps_per_round,
        rounds,
        epsilon,
        delta,
        accountant,
        evaluation,
        evaluation_per_round,
    )
    releases = draft.releases(rounds, final=True)
    if accountant == "pld":
        job = _mechanism(1.0, sample_rate, steps_per_round * rounds)
        sigma = calibrate_sigma(
            {**job, "noise_multiplier": "__x__"}, epsilon, delta, alongside=releases
        )
    else:
        from opacus.accountants.utils import get_noise_multiplier

        sgd_delta = delta / 2 if releases else delta
        sigma = get_noise_multiplier(
            target_epsilon=epsilon - compose_epsilon(releases, sgd_delta),
            target_delta=sgd_delta,
            sample_rate=sample_rate,
            steps=steps_per_round * rounds,
            accountant=accountant,
            epsilon_tolerance=0.005,
        )
    return replace(draft, noise_multiplier=sigma)


def _mechanism(sigma: float, sample_rate: float, steps: int) -> dict[str, Any]:
    return {
        "type": "subsampled_gaussian",
        "noise_multiplier": sigma,
        "sample_rate": sample_rate,
        "steps": steps,
    }


def round_mechanism(plan: DpPlan) -> dict[str, Any]:
    """Return one training round of the plan as the budget ledger records it.

    Returns:
        The mechanism description (:mod:`policies.accounting`): DP-SGD steps, composed
        with an evaluation release when every round releases one.
    """
    sgd = _mechanism(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
    if plan.evaluation is None or not plan.evaluation_per_round:
        return sgd
    return {"type": "composed", "parts": [sgd, plan.evaluation]}


def epsilon_spent(plan: DpPlan, rounds_done: int, final: bool = False) -> float:
    """Return the ε spent after ``rounds_done`` rounds (and the final evaluation, if ``final``).

    The plan's accountant composes DP-SGD and the evaluation releases made so far.

    Raises:
        ValueError: ``rounds_done`` is negative.
    """
    if rounds_done < 0:
        raise ValueError("rounds_done must be >= 0")
    releases = plan.releases(rounds_done, final)
    steps = plan.steps_per_round * rounds_done
    sgd = [_mechanism(plan.noise_multiplier, plan.sample_rate, steps)] if steps else []
    if plan.accountant == "pld":
        return compose_epsilon([*sgd, *releases], plan.delta) if sgd or releases else 0.0
    from opacus.accountants import create_accountant

    delta = plan.delta / 2 if plan.evaluation is not None else plan.delta
    spent = compose_epsilon(releases, delta) if releases else 0.0
    if not steps:
        return spent
    acc = create_accountant(plan.accountant)
    acc.history = [(plan.noise_multiplier, plan.sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta)) + spent


@dataclass(frozen=True)
class LocalTrainingResult:
    """What one node's round of local training produced."""

    parameters: list[np.ndarray]
    n_records: int
    mean_loss: float
    steps: int


def get_parameters(model: nn.Module) -> list[np.ndarray]:
    """Return the model's parameters as float64 numpy arrays, in registration order."""
    return [p.detach().cpu().numpy().astype(np.float64) for p in model.parameters()]


def set_parameters(model: nn.Module, arrays: list[np.ndarray]) -> None:
    """Copy ``arrays`` into the model's parameters.

    Raises:
        ValueError: the shapes do not match the model.
    """
    import torch

    params = list(model.parameters())
    if len(params) != len(arrays):
        raise ValueError(f"expected {len(params)} arrays, got {len(arrays)}")
    with torch.no_grad():
        for p, a in zip(params, arrays, strict=True):
            if tuple(p.shape) != tuple(a.shape):
                raise ValueError(f"shape {a.shape} does not fit parameter {tuple(p.shape)}")
            p.copy_(torch.as_tensor(a, dtype=p.dtype))


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    plan: DpPlan | None,
    *,
    max_grad_norm: float,
    learning_rate: float,
    batch_size: int,
    local_epochs: int,
    seed: int,
) -> LocalTrainingResult:
    """Train ``model`` in place on (x, y) for one round, with DP-SGD when ``plan`` is given.

    Returns:
        The updated parameters, record count, mean training loss and steps taken.

    Raises:
        FederationError: the data are empty or not finite.
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    if len(x) == 0 or not np.isfinite(x).all() or not np.isfinite(y).all():
        raise FederationError("training data are empty or contain NaN/inf")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = TensorDataset(
        torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    if plan is not None:
        from opacus import PrivacyEngine

        loader = DataLoader(
            data, batch_size=max(1, round(plan.sample_rate * len(data))), generator=gen
        )
        # Opacus's own accountant only tracks steps here; the plan's accountant reports.
        engine = PrivacyEngine(accountant="rdp" if plan.accountant == "pld" else plan.accountant)
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=gen,
        )
        epochs = local_epochs
    else:
        loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen)
        epochs = local_epochs
    total, steps = 0.0, 0
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            if len(xb) == 0:  # Poisson sampling may draw an empty batch: nothing to learn
                continue
            loss = loss_fn(model(xb).squeeze(-1), yb)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
    module = getattr(model, "_module", model)
    return LocalTrainingResult(get_parameters(module), len(data), total / max(steps, 1), steps)


def predict_proba(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Return the model's predicted probabilities for rows ``x`` as float64."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float32)).squeeze(-1)
    return torch.sigmoid(logits).numpy().astype(np.float64)


def delta_ok(delta: float, n_records: int) -> bool:
    """Return whether δ is below 1/n for ``n_records`` records."""
    return n_records > 0 and delta < 1.0 / n_records and math.isfinite(delta)
