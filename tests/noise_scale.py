"""A statistical check that noise nobody can seed has the scale it was calibrated to.

The DP noise comes from OpenDP's samplers (cryptographically secure, unseedable), so
every check of it is a hypothesis test that can fail by chance. Each check here fails
on correct noise with probability about ``ALPHA`` (one in a million) and passes noise
off by the factor it checks against (10 % wider or narrower where there are enough
draws) with a probability below ``MISS``; :func:`assert_unit_normal` checks that design
before it looks at the draws.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: The chance that a check fails on noise of exactly the calibrated scale.
ALPHA = 1e-6
#: The largest chance allowed that a check passes on noise whose scale is off by the
#: factor checked against (the test's power is at least ``1 - MISS``).
MISS = 1e-6


def variance_interval(z: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """Return the two-sided ``1 - alpha`` confidence interval of the variance of ``z``.

    ``z`` holds independent draws of N(0, v) (mean known to be 0), so ``sum(z**2) / v``
    is chi-square with ``len(z)`` degrees of freedom.
    """
    n, total = z.size, float(np.sum(np.square(z, dtype=np.float64)))
    return total / stats.chi2.isf(alpha / 2, n), total / stats.chi2.ppf(alpha / 2, n)


def miss_rate(n: int, off: float, alpha: float = ALPHA) -> float:
    """Return the chance that the interval of ``n`` draws of N(0, off**2) contains 1.

    The larger of the two directions (variance ``off**2`` or ``1 / off**2``): how often
    noise whose scale is off by the factor ``off`` would pass the check.
    """
    lo, hi = stats.chi2.ppf(alpha / 2, n), stats.chi2.isf(alpha / 2, n)
    # the interval contains 1 when lo <= sum(z**2) <= hi, sum(z**2) / v ~ chi2(n)
    return max(
        float(stats.chi2.cdf(hi / v, n) - stats.chi2.cdf(lo / v, n)) for v in (off**2, off**-2)
    )


def false_alarm_rate(n: int, off: float, alpha: float = ALPHA) -> float:
    """Return a bound on the chance that correct noise (variance 1) fails the check.

    Its interval misses 1 (``alpha``) or reaches ``off**2`` or ``1 / off**2`` (the sum
    of the three chances).
    """
    lo, hi = stats.chi2.ppf(alpha / 2, n), stats.chi2.isf(alpha / 2, n)
    # upper end >= off**2  <=>  sum(z**2) >= off**2 * lo; lower end <= 1 / off**2 likewise
    reach = stats.chi2.sf(off**2 * lo, n) + stats.chi2.cdf(hi / off**2, n)
    return alpha + float(reach)


def assert_unit_normal(z: np.ndarray, off: float = 1.1) -> None:
    """Assert that ``z`` (noise divided by its calibrated scale) is N(0, 1).

    The variance's confidence interval must contain 1 and exclude ``off**2`` and
    ``1 / off**2`` (noise ``off`` times wider or narrower); a Kolmogorov-Smirnov test
    at the same false-alarm level checks the shape (Gaussian). Before looking at the
    draws, the check's own design is asserted: with ``len(z)`` draws it fails on correct
    noise with probability at most ``10 * ALPHA`` and passes noise off by ``off`` with
    probability at most ``MISS``.
    """
    z = np.asarray(z, dtype=np.float64).ravel()
    assert false_alarm_rate(z.size, off) <= 10 * ALPHA, f"{z.size} draws: too few to check"
    assert miss_rate(z.size, off) <= MISS, f"{z.size} draws: too few to see {off}x noise"
    lo, hi = variance_interval(z)
    assert lo <= 1.0 <= hi, f"variance {np.mean(z**2):.4f}: interval ({lo:.4f}, {hi:.4f})"
    assert off**-2 < lo and hi < off**2, f"interval ({lo:.4f}, {hi:.4f}) reaches {off}x noise"
    assert stats.kstest(z, "norm").pvalue > ALPHA
