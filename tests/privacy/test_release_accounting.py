"""Accounting cross-check of the releases: Gaussian, Laplace, discrete Gaussian, pure pairs.

The same comparison as ``test_accounting_crosscheck.py`` (which holds DP-SGD's grid) for the
statistics and distributed-noise mechanisms: the ε :func:`policies.accounting.compose_epsilon`
charges against dp_accounting's PLD built straight from ``privacy_loss_distribution`` on a
ten times finer grid, and statistical tests that the samplers add the calibrated noise. A
file of its own so that the two halves run on different test workers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from policies.accounting import compose_epsilon
from tests.noise_scale import assert_unit_normal

DELTA = 1e-5
FINE = 1e-4

# -- releases: Gaussian, Laplace, discrete Gaussian, pure pairs ------------------------------


@pytest.mark.parametrize("sigma", [0.7, 1.6, 4.5, 8.7])
@pytest.mark.parametrize("count", [1, 4])
@pytest.mark.parametrize("delta", [1e-6, 1e-5])
def test_gaussian_charge_within_one_percent_of_pld(sigma, count, delta):
    charged = compose_epsilon(
        [{"type": "gaussian", "sigma": sigma, "sensitivity": 1.0, "count": count}], delta
    )
    pessimistic, optimistic = (
        float(
            pld_lib.from_gaussian_mechanism(
                sigma, pessimistic_estimate=p, value_discretization_interval=FINE
            )
            .self_compose(count)
            .get_epsilon_for_delta(delta)
        )
        for p in (True, False)
    )
    assert optimistic <= charged <= pessimistic * 1.01


@pytest.mark.parametrize("scale", [0.125, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("count", [1, 3])
def test_laplace_charge_within_one_percent_of_pld(scale, count):
    charged = compose_epsilon(
        [{"type": "laplace", "scale": scale, "sensitivity": 1.0, "count": count}], DELTA
    )
    fine = pld_lib.from_laplace_mechanism(scale, value_discretization_interval=FINE)
    exact = float(fine.self_compose(count).get_epsilon_for_delta(DELTA))
    assert exact * (1 - 1e-4) <= charged <= exact * 1.01
    assert charged <= count / scale  # never above pure-ε composition


def test_pure_pairs_compose_no_worse_than_adding_up():
    pure = {"type": "pure", "epsilon": 0.5, "delta": 1e-6}
    assert compose_epsilon([pure, pure], 2e-6) <= 1.0 + 1e-9
    assert compose_epsilon([pure, pure], 1e-6) == math.inf  # δ cannot cover them
    params = pld_common.DifferentialPrivacyParameters(0.5, 1e-6)
    exact = pld_lib.from_privacy_parameters(params, FINE).self_compose(4).get_epsilon_for_delta(1e-5)
    assert compose_epsilon([pure] * 4, 1e-5) == pytest.approx(exact, rel=0.01)


@pytest.mark.parametrize(("share_sigma", "nodes"), [(600.0, 3), (2000.0, 2)])
def test_distributed_discrete_gaussian_is_accounted_as_its_gaussian(share_sigma, nodes):
    # Distributed statistics: each node adds a discrete Gaussian share on a grid of step
    # 1e-3 of the sensitivity (sensitivity = 1000 grid points), so the sum has σ² =
    # nodes × share². dp_accounting's exact discrete-Gaussian PLD for that σ and the
    # Gaussian charge the ledger records agree within 1e-4.
    sigma_grid = share_sigma * math.sqrt(nodes)
    discrete = float(
        pld_lib.from_discrete_gaussian_mechanism(
            sigma_grid, sensitivity=1000, value_discretization_interval=FINE
        ).get_epsilon_for_delta(1e-6)
    )
    charged = compose_epsilon(
        [{"type": "gaussian", "sigma": sigma_grid / 1000, "sensitivity": 1.0}], 1e-6
    )
    assert charged == pytest.approx(discrete, rel=1e-3)
    assert charged >= discrete * (1 - 1e-4)


@pytest.mark.parametrize("sensitivity", [1.0, 2.0])
@pytest.mark.parametrize("epsilon", [0.5, 1.0, 3.0, 8.0])
def test_statistics_gaussian_release_is_calibrated_with_pld(sensitivity, epsilon):
    from federation.analytics.dp_noise import calibrate_gaussian, epsilon_for_gaussian

    delta = 1e-6
    sigma = calibrate_gaussian(sensitivity, epsilon, delta)
    reported = epsilon_for_gaussian(sigma, sensitivity, delta)
    exact = float(
        pld_lib.from_gaussian_mechanism(
            sigma / sensitivity, value_discretization_interval=FINE
        ).get_epsilon_for_delta(delta)
    )
    assert reported <= epsilon  # never overshoots
    assert reported >= 0.995 * epsilon
    assert exact * (1 - 1e-4) <= reported <= exact * 1.01
    charged = compose_epsilon(
        [{"type": "gaussian", "sigma": sigma, "sensitivity": sensitivity}], delta
    )
    assert charged == reported


@pytest.mark.parametrize("sensitivity", [1.0, 2.0])
@pytest.mark.parametrize("epsilon", [0.5, 1.0, 3.0, 8.0])
def test_statistics_laplace_release_epsilon_vs_pld(sensitivity, epsilon):
    from federation.analytics.dp_noise import calibrate_laplace

    scale = calibrate_laplace(sensitivity, epsilon)
    exact = pld_lib.from_laplace_mechanism(scale / sensitivity).get_epsilon_for_delta(1e-12)
    assert exact == pytest.approx(epsilon, rel=0.01)  # pure ε: OpenDP and PLD agree within 1 %
    assert exact <= epsilon * (1 + 1e-6)


# -- the noise actually added ---------------------------------------------------------------


def test_gaussian_release_noise_has_the_calibrated_scale():
    from federation.analytics.dp_noise import calibrate_gaussian, gaussian_noise

    sigma = calibrate_gaussian(2.0, 1.0, 1e-6)
    draws = gaussian_noise(20_000, sigma)
    # N(0, σ²): the sampler adds exactly the calibrated noise, not a wider (wasteful) or
    # narrower one: 10 % off is rejected.
    assert_unit_normal(draws / sigma, off=1.1)


def test_discrete_gaussian_shares_sum_to_the_calibrated_scale():
    from federation.analytics.dp_noise import discrete_gaussian_noise

    share, nodes = 50.0, 3
    total = sum(discrete_gaussian_noise(20_000, share) for _ in range(nodes))
    sigma = share * math.sqrt(nodes)
    assert np.issubdtype(total.dtype, np.integer)
    assert_unit_normal(total / sigma, off=1.1)
