"""DP maths tested three ways: pinned ε, calibration never overshoots, noise actually added."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.dp_training import epsilon_spent, get_parameters, plan_dp, train_local
from federation.errors import FederationError, RegistryError
from federation.models import build_model, register_model


def test_epsilon_spent_pinned_value():
    # Opacus RDP accountant, sigma 1.0, q 0.01, 1000 steps, delta 1e-5.
    from federation.dp_training import DpPlan

    plan = DpPlan(1.0, 0.01, 100, 10, 10.0, 1e-5, "rdp")
    assert epsilon_spent(plan, 10) == pytest.approx(2.10137, abs=1e-4)
    assert epsilon_spent(plan, 0) == 0.0
    assert epsilon_spent(plan, 5) < epsilon_spent(plan, 10)


@pytest.mark.parametrize(
    ("accountant", "independent", "tol"),
    [("pld", "pld", 1e-3), ("rdp", "rdp", 1e-4), ("prv", "pld", 0.01)],
)
def test_epsilon_spent_agrees_with_google_dp_accounting(accountant, independent, tol):
    import dp_accounting as dpa

    from federation.dp_training import DpPlan

    plan = DpPlan(1.1, 0.02, 50, 8, 10.0, 1e-5, accountant)
    event = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.02, dpa.GaussianDpEvent(1.1)), 400)
    acc = dpa.rdp.RdpAccountant() if independent == "rdp" else dpa.pld.PLDAccountant()
    acc.compose(event)
    reference = acc.get_epsilon(1e-5)
    assert epsilon_spent(plan, 8) == pytest.approx(reference, rel=tol)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(200, 20_000),
    batch=st.integers(8, 256),
    rounds=st.integers(1, 20),
    epsilon=st.floats(0.3, 10.0),
)
def test_plan_dp_never_overshoots_target(n, batch, rounds, epsilon):
    plan = plan_dp(n, batch, 1, rounds, epsilon, 1.0 / (10 * n))  # PLD, what nodes use
    spent = epsilon_spent(plan, rounds)
    assert spent <= epsilon
    assert spent >= 0.995 * epsilon  # calibrated, not wasteful


def test_plan_dp_refuses_delta_not_below_one_over_n():
    with pytest.raises(FederationError, match="below 1/n"):
        plan_dp(1000, 32, 1, 5, 3.0, 1e-3)


def _data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0]))).astype(float)
    return x, y


def _train(plan, seed=1, lr=0.0):
    torch.manual_seed(0)
    model = build_model("logreg", 4)
    x, y = _data()
    start = get_parameters(model)
    res = train_local(
        model,
        x,
        y,
        plan,
        max_grad_norm=1.0,
        learning_rate=lr,
        batch_size=100,
        local_epochs=1,
        seed=seed,
    )
    return start, res


def test_train_local_adds_calibrated_noise():
    # With the data gradient removed (labels balanced, lr small) the update's spread
    # comes from the Gaussian noise: std of the summed-noise / batch per step.
    plan = plan_dp(2000, 100, 1, 1, 1.0, 1e-5)
    deltas = []
    for seed in range(30):
        start, res = _train(plan, seed=seed, lr=1.0)
        deltas.append(res.parameters[0].ravel() - start[0].ravel())
    spread = np.std(np.array(deltas), axis=0).mean()
    # Per step noise std on the averaged gradient: sigma * C / expected batch (100).
    per_step = plan.noise_multiplier * 1.0 / 100
    expected = per_step * np.sqrt(plan.steps_per_round)
    assert 0.6 * expected < spread < 1.6 * expected


def test_train_local_without_dp_is_deterministic_and_noise_free():
    _, a = _train(None, seed=3, lr=0.1)
    _, b = _train(None, seed=3, lr=0.1)
    for p, q in zip(a.parameters, b.parameters, strict=True):
        np.testing.assert_array_equal(p, q)


def test_model_registry_refuses_overwrite_and_unknown():
    with pytest.raises(RegistryError):
        register_model("logreg", lambda n, h: None)
    with pytest.raises(RegistryError, match="unknown model"):
        build_model("transformer", 3)
