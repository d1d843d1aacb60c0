"""The released table of a federated GLM, built from the summed statistics at the final ``beta``.

It matches ``statsmodels`` GLM defaults: Wald z statistics and normal p-values / 95 %
intervals for all families, the Gaussian scale estimated as deviance / df_resid,
``aic = -2 llf + 2 p`` with the Gaussian log-likelihood at the MLE scale RSS / n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from federation.analytics.glm import GlmRefusal, check_family, glm_layout

__all__ = ["CoefficientRow", "GlmResult", "glm_result"]

# The standard normal by the standard library: an MPC party builds this table too, and
# scipy.stats alone would double its start-up.
_Z975 = NormalDist().inv_cdf(0.975)


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def _two_sided_p(z: np.ndarray) -> np.ndarray:
    return np.array([math.erfc(abs(float(v)) / math.sqrt(2.0)) for v in z])


@dataclass(frozen=True)
class CoefficientRow:
    """One released coefficient (odds-ratio fields only for ``binomial``)."""

    estimate: float
    std_error: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    odds_ratio: float | None = None
    or_ci_low: float | None = None
    or_ci_high: float | None = None

    def to_json_dict(self) -> dict[str, float]:
        """Return the row as a JSON-ready mapping (odds-ratio fields only when set)."""
        out = {k: float(v) for k, v in self.__dict__.items() if v is not None}
        return out


@dataclass(frozen=True)
class GlmResult:
    """The released result of a federated GLM."""

    family: str
    link: str
    coefficients: dict[str, CoefficientRow]
    deviance: float
    null_deviance: float | None
    llf: float
    aic: float
    scale: float
    n_obs: int
    df_model: int
    df_resid: int
    iterations: int
    converged: bool
    covariance: list[list[float]] = field(default_factory=list)
    dp: dict[str, Any] | None = None
    convergence: dict[str, Any] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Return the result as ``result.json`` content (``coefficients``: term -> fields)."""
        return {
            "kind": "glm",
            "family": self.family,
            "link": self.link,
            "coefficients": {k: v.to_json_dict() for k, v in self.coefficients.items()},
            "deviance": self.deviance,
            "null_deviance": self.null_deviance,
            "llf": self.llf,
            "aic": self.aic,
            "scale": self.scale,
            "n_obs": self.n_obs,
            "df_model": self.df_model,
            "df_resid": self.df_resid,
            "iterations": self.iterations,
            "converged": self.converged,
            "covariance": self.covariance,
            "dp": self.dp,
            "convergence": self.convergence,
        }


_LINKS = {"binomial": "logit", "gaussian": "identity", "poisson": "log"}


def _null_deviance(family: str, n: float, s: float, s2: float, sylogy: float) -> float:
    ybar = s / n
    if family == "binomial":
        return float(-2.0 * (_xlogy(s, ybar) + _xlogy(n - s, 1.0 - ybar)))
    if family == "poisson":
        return float(2.0 * (sylogy - _xlogy(s, ybar)))
    return float(s2 - s * s / n)


def glm_result(
    summed_final: np.ndarray,
    beta: np.ndarray,
    family: str,
    term_names: Sequence[str],
    n_iterations: int,
    *,
    converged: bool = True,
    dp: dict[str, Any] | None = None,
    convergence: dict[str, Any] | None = None,
    offset: bool = False,
) -> GlmResult:
    """Build the released table from the summed statistics at the final ``beta``.

    ``convergence`` says why the fit stopped (criterion, decrement, tolerance, the
    quantisation floor); it is released as given. With an ``offset`` the null deviance
    is that of an intercept-only model *with* the offset, which the sums do not give:
    it is released as None.

    Raises:
        ValueError: ``term_names`` and ``beta`` disagree in length.
        GlmRefusal: ``singular_design`` (the information cannot be inverted).

    """
    check_family(family)
    beta = np.asarray(beta, dtype=np.float64)
    p = beta.shape[0]
    if len(term_names) != p:
        raise ValueError(f"{len(term_names)} term names for {p} coefficients")
    _, hess, sc = glm_layout(p).unpack(summed_final)
    n, dev = sc["n"], sc["deviance"]
    df_resid = n - p
    try:
        inv = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        raise GlmRefusal("singular_design", "the information matrix cannot be inverted") from None
    if family == "gaussian":
        scale = dev / df_resid
        llf = -n / 2.0 * (math.log(2 * math.pi * dev / n) + 1.0)
    else:
        scale = 1.0
        llf = sc["loglik"]
    cov = scale * (inv + inv.T) / 2.0
    se = np.sqrt(np.diag(cov))
    z = beta / se
    pv = _two_sided_p(z)
    lo, hi = beta - _Z975 * se, beta + _Z975 * se
    rows: dict[str, CoefficientRow] = {}
    for j, name in enumerate(term_names):
        extra: dict[str, float] = {}
        if family == "binomial":
            extra = {
                "odds_ratio": math.exp(beta[j]),
                "or_ci_low": math.exp(lo[j]),
                "or_ci_high": math.exp(hi[j]),
            }
        rows[name] = CoefficientRow(
            float(beta[j]),
            float(se[j]),
            float(z[j]),
            float(pv[j]),
            float(lo[j]),
            float(hi[j]),
            **extra,
        )
    return GlmResult(
        family=family,
        link=_LINKS[family],
        coefficients=rows,
        deviance=float(dev),
        null_deviance=None
        if offset
        else _null_deviance(family, n, sc["sum_y"], sc["sum_y2"], sc["sum_ylogy"]),
        llf=float(llf),
        aic=float(-2.0 * llf + 2.0 * p),
        scale=float(scale),
        n_obs=int(round(n)),
        df_model=p - 1,
        df_resid=int(round(df_resid)),
        iterations=int(n_iterations),
        converged=bool(converged),
        covariance=cov.tolist(),
        dp=dp,
        convergence=convergence,
    )
