"""Composing recorded mechanisms: PLD per job (dp_accounting), RDP curves across jobs."""

import math

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant

from policies import RDP_ORDERS, Composition, MechanismError, compose_epsilon, parse_mechanism
from policies.accounting import PLD_VALUE_INTERVAL, to_dp_event

from .conftest import DPSGD, NOW

DELTA = 1e-5


def _pld_accountant() -> dp_accounting.pld.PLDAccountant:
    return dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_VALUE_INTERVAL)


def test_dpsgd_composition_equals_dp_accounting_pld():
    ours = compose_epsilon([DPSGD] * 10, DELTA)
    accountant = _pld_accountant()
    step = dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1))
    accountant.compose(dp_accounting.SelfComposedDpEvent(step, 1000))
    assert ours == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-9)
    # Pinned: 1000 DP-SGD steps, q = 0.01, sigma = 1.1, delta = 1e-5; RDP says 1.7118.
    assert ours == pytest.approx(1.5162, abs=5e-4)
    assert Composition.of(parse_mechanism({**DPSGD, "steps": 1000})).epsilon(DELTA) == (
        pytest.approx(1.7117701662429012, rel=1e-9)
    )


def test_composition_is_tighter_than_naive_summation():
    per_round = compose_epsilon([DPSGD], DELTA / 10)
    naive = 10 * per_round  # basic composition at the same total delta
    composed = compose_epsilon([DPSGD] * 10, DELTA)
    assert composed < naive / 3


def test_mixed_mechanisms_match_dp_accounting():
    mechs = [
        DPSGD,
        {"type": "gaussian", "sigma": 8.0, "sensitivity": 2.0, "count": 3},
        {"type": "laplace", "scale": 4.0, "sensitivity": 1.0},
    ]
    accountant = _pld_accountant()
    for m in mechs:
        accountant.compose(to_dp_event(parse_mechanism(m)))
    assert compose_epsilon(mechs, DELTA) == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-6)
    rdp = RdpAccountant(list(RDP_ORDERS))
    for m in mechs:
        rdp.compose(to_dp_event(parse_mechanism(m)))
    assert compose_epsilon(mechs, DELTA) < rdp.get_epsilon(DELTA)


def test_pure_mechanisms_compose_no_worse_than_adding_up():
    pure = {"type": "pure", "epsilon": 0.5, "delta": 1e-6}
    assert compose_epsilon([pure, pure], 2e-6) <= 1.0 + 1e-9
    assert compose_epsilon([pure, pure], 1e-6) == math.inf  # delta cannot cover them
    alone = compose_epsilon([DPSGD], DELTA - 1e-6)
    assert compose_epsilon([DPSGD, pure], DELTA) <= alone + 0.5


def test_delta_zero_with_gaussian_is_infinite():
    assert compose_epsilon([DPSGD], 0.0) == math.inf
    assert compose_epsilon([], 0.0) == 0.0
    assert Composition().epsilon(0.0) == 0.0


def test_curve_survives_storage():
    comp = Composition.of(parse_mechanism(DPSGD))
    again = Composition(rdp=Composition.curve_from_blob(comp.to_blob()), has_rdp=True)
    assert again.epsilon(DELTA) == comp.epsilon(DELTA)


@pytest.mark.parametrize(
    ("mech", "field"),
    [
        ({"type": "gaussian", "sigma": -1}, "mechanism.sigma"),
        (
            {"type": "subsampled_gaussian", "noise_multiplier": 1, "sample_rate": 2, "steps": 1},
            "mechanism.sample_rate",
        ),
        (
            {"type": "subsampled_gaussian", "noise_multiplier": 1, "sample_rate": 0.1},
            "mechanism.steps",
        ),
        ({"type": "laplace", "scale": float("nan")}, "mechanism.scale"),
        ({"type": "pure", "epsilon": 1, "extra": 2}, "mechanism.extra"),
        ({"type": "magic"}, "mechanism"),
        ({"sigma": 1.0}, "mechanism"),
    ],
)
def test_malformed_mechanism_names_the_field(mech, field):
    with pytest.raises(MechanismError) as info:
        parse_mechanism(mech)
    assert info.value.field == field


def test_charges_compose_in_the_ledger_pld_per_job_rdp_across_jobs(ledger):
    ledger.reserve("a", "births", 3.0, DELTA, NOW)
    ledger.reserve("b", "births", 3.0, DELTA, NOW)
    for r in range(5):
        ledger.charge("a", r, DPSGD, None, NOW)
        ledger.charge("b", r, DPSGD, None, NOW)
    ledger.release("a", "finished", NOW)
    ledger.release("b", "finished", NOW)
    accountant = RdpAccountant(list(RDP_ORDERS))
    for _ in range(10):
        accountant.compose(to_dp_event(parse_mechanism(DPSGD)))
    across = accountant.get_epsilon(2 * DELTA)
    per_job = compose_epsilon([DPSGD] * 5, DELTA)  # PLD: what each job was charged
    assert per_job < Composition.of(parse_mechanism({**DPSGD, "steps": 500})).epsilon(DELTA)
    expected = min(2 * per_job, across)
    spent = ledger.spent("births", NOW)
    assert spent == pytest.approx(expected, rel=1e-9)
    assert spent <= 2 * per_job
    assert ledger.remaining("births", NOW).epsilon == pytest.approx(10.0 - expected, rel=1e-9)
