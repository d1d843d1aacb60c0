"""Exact federated GLMs by Newton-Raphson (IRLS): node statistics, server steps, the result.

Families (canonical links, so observed and expected information agree):
``binomial`` (logit, outcome 0/1), ``gaussian`` (identity), ``poisson`` (log).

Each round the server sends the current coefficients ``beta``; every node returns
:func:`glm_local_statistics` at ``beta`` (a flat float64 vector, layout
:class:`GlmLayout`); SecAgg+ returns the sum; :func:`glm_newton_step` turns the sum into
the next ``beta``. Because score, information, deviance and log-likelihood are sums over
records, the federated fit equals the pooled fit exactly (up to floating point, or to
the quantisation error of SecAgg+). :func:`glm_result` builds the released table from the
sums at the final ``beta``; it matches ``statsmodels`` GLM defaults: Wald z statistics
and normal p-values / 95 % intervals for all families, the Gaussian scale estimated as
deviance / df_resid, ``aic = -2 llf + 2 p`` with the Gaussian log-likelihood at the MLE
scale RSS / n.

Refusals raise :class:`GlmRefusal` (its ``cause`` is one of :data:`REFUSAL_CAUSES`) and
nothing is released: too few events at a node (node side) or per parameter (server
side), separation (fitted probabilities or means driven to the boundary, coefficients
diverging while the deviance is flat, or the binomial deviance going to 0), a singular
information matrix at the start (rank-deficient design: constant or collinear column),
or no convergence within the iteration limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import special, stats

from federation.errors import FederationError

__all__ = [
    "REFUSAL_CAUSES",
    "CoefficientRow",
    "GlmLayout",
    "GlmRefusal",
    "GlmResult",
    "NewtonInfo",
    "glm_clip_rows",
    "glm_dp_perturb",
    "glm_fit",
    "glm_layout",
    "glm_local_statistics",
    "glm_newton_step",
    "glm_public_scale",
    "glm_result",
]

Family = Literal["binomial", "gaussian", "poisson"]
FAMILIES: tuple[str, ...] = ("binomial", "gaussian", "poisson")

#: Why a fit was refused.
REFUSAL_CAUSES = (
    "too_few_events_at_node",
    "too_few_events_per_parameter",
    "separation",
    "singular_design",
    "not_converged",
    "invalid_outcome",
)

_Z975 = float(stats.norm.ppf(0.975))
#: |linear predictor| beyond which a fitted probability / mean counts as on the boundary.
BOUNDARY_ETA = 25.0
_SCALARS = ("deviance", "loglik", "n", "sum_y", "sum_y2", "sum_ylogy", "n_boundary")


class GlmRefusal(FederationError):  # noqa: N818 (the brief names it)
    """A GLM fit was refused; nothing is released.

    Attributes:
        cause: one of :data:`REFUSAL_CAUSES`.
        detail: a human-readable reason.

    """

    def __init__(self, cause: str, detail: str) -> None:
        self.cause = cause
        self.detail = detail
        super().__init__(f"{cause}: {detail}")


@dataclass(frozen=True)
class GlmLayout:
    """Where each statistic sits in the flat local / summed vector of ``p`` parameters.

    ``[0, p)`` score ``X'(y - mu)``; ``[p, p + p(p+1)/2)`` the information ``X'WX``, upper
    triangle packed row by row (``numpy.triu_indices(p)`` order); then the scalars
    ``deviance, loglik, n, sum_y, sum_y2, sum_ylogy, n_boundary`` (``loglik`` is 0 for
    ``gaussian``: it needs the global scale and is derived on the server).
    """

    n_params: int

    @property
    def n_packed(self) -> int:
        """Return the number of packed Hessian entries ``p(p+1)/2``."""
        return self.n_params * (self.n_params + 1) // 2

    @property
    def size(self) -> int:
        """Return the length of the vector."""
        return self.n_params + self.n_packed + len(_SCALARS)

    def scalar_index(self, name: str) -> int:
        """Return the position of scalar ``name`` (one of ``deviance, loglik, n, ...``)."""
        return self.n_params + self.n_packed + _SCALARS.index(name)

    def pack(self, grad: np.ndarray, hess: np.ndarray, scalars: dict[str, float]) -> np.ndarray:
        """Return the flat vector of a score, a symmetric information matrix and the scalars."""
        iu = np.triu_indices(self.n_params)
        return np.concatenate([grad, hess[iu], [float(scalars.get(k, 0.0)) for k in _SCALARS]])

    def unpack(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Return ``(score, symmetric information, scalars)`` from a flat vector.

        Raises:
            ValueError: the vector has the wrong length.

        """
        vec = np.asarray(vector, dtype=np.float64)
        if vec.shape != (self.size,):
            raise ValueError(f"expected a vector of {self.size} entries, got shape {vec.shape}")
        p = self.n_params
        grad = vec[:p].copy()
        hess = np.zeros((p, p))
        hess[np.triu_indices(p)] = vec[p : p + self.n_packed]
        hess = hess + np.triu(hess, 1).T
        scal = {k: float(vec[p + self.n_packed + i]) for i, k in enumerate(_SCALARS)}
        return grad, hess, scal


def glm_layout(n_params: int) -> GlmLayout:
    """Return the :class:`GlmLayout` of a model with ``n_params`` coefficients."""
    if n_params < 1:
        raise ValueError("a GLM needs at least one parameter")
    return GlmLayout(n_params)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def _events(family: str, n: float, sum_y: float) -> float:
    if family == "binomial":
        return min(sum_y, n - sum_y)
    if family == "poisson":
        return sum_y
    return n


def glm_local_statistics(
    X: np.ndarray,  # noqa: N803 (statistical convention)
    y: np.ndarray,
    beta: np.ndarray,
    family: str,
    *,
    min_events: int = 0,
) -> np.ndarray:
    """Return a node's sufficient statistics at ``beta`` (layout :func:`glm_layout`).

    ``min_events`` is the node's own floor: for ``binomial`` the rarer outcome (events
    or non-events), for ``poisson`` the total count, for ``gaussian`` the rows.

    Raises:
        GlmRefusal: ``invalid_outcome`` (NaN, not 0/1 for binomial, negative for poisson)
            or ``too_few_events_at_node``.
        ValueError: shapes disagree or the family is unknown.

    """
    _check_family(family)
    X = np.asarray(X, dtype=np.float64)  # noqa: N806
    y = np.asarray(y, dtype=np.float64).ravel()
    beta = np.asarray(beta, dtype=np.float64).ravel()
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != beta.shape[0]:
        raise ValueError(f"shapes disagree: X {X.shape}, y {y.shape}, beta {beta.shape}")
    if not (np.isfinite(X).all() and np.isfinite(y).all() and np.isfinite(beta).all()):
        raise GlmRefusal("invalid_outcome", "X, y or beta contain NaN or infinity")
    if family == "binomial" and not np.isin(y, (0.0, 1.0)).all():
        raise GlmRefusal("invalid_outcome", "a binomial outcome must be 0 or 1")
    if family == "poisson" and (y < 0).any():
        raise GlmRefusal("invalid_outcome", "a poisson outcome must be >= 0")
    n = float(y.shape[0])
    sum_y = float(y.sum())
    events = _events(family, n, sum_y)
    if events < min_events:
        raise GlmRefusal(
            "too_few_events_at_node",
            f"this node has {events:g} events, fewer than its minimum {min_events}",
        )
    eta = X @ beta
    ylogy = float(np.sum(special.xlogy(y, y))) if family == "poisson" else 0.0
    if family == "binomial":
        log_mu = -np.logaddexp(0.0, -eta)
        log_1mu = -np.logaddexp(0.0, eta)
        mu = np.exp(log_mu)
        w = mu * np.exp(log_1mu)
        loglik = float(np.sum(y * log_mu + (1 - y) * log_1mu))
        deviance = -2.0 * loglik
    elif family == "poisson":
        mu = np.exp(eta)
        w = mu
        loglik = float(np.sum(y * eta - mu - special.gammaln(y + 1)))
        deviance = float(2.0 * np.sum(special.xlogy(y, y) - y * eta - (y - mu)))
    else:
        mu = eta
        w = np.ones_like(eta)
        loglik = 0.0
        deviance = float(np.sum((y - mu) ** 2))
    grad = X.T @ (y - mu)
    hess = (X * w[:, None]).T @ X
    boundary = (
        float(np.sum(np.abs(eta) > BOUNDARY_ETA))
        if family == "binomial"
        else (float(np.sum(eta < -BOUNDARY_ETA)) if family == "poisson" else 0.0)
    )
    scalars = {
        "deviance": deviance,
        "loglik": loglik,
        "n": n,
        "sum_y": sum_y,
        "sum_y2": float(np.sum(y * y)),
        "sum_ylogy": ylogy,
        "n_boundary": boundary,
    }
    return glm_layout(X.shape[1]).pack(grad, hess, scalars)


def glm_public_scale(
    family: str,
    term_bounds: Sequence[float],
    max_records: int,
    beta: np.ndarray,
    clipping_range: float,
    y_bound: float = 1.0,
) -> np.ndarray:
    """Return the public per-entry scale that brings any node's vector into ``[-C, C]``.

    Derived from public information only: ``term_bounds[j]`` bounds ``|x_j|`` (1 for the
    intercept and dummies, else the data model's range), ``max_records`` bounds a node's
    rows, ``y_bound`` bounds ``|y|`` (1 for binomial) and ``beta`` is the coefficient
    vector the server broadcast (it bounds the linear predictor). Divide the local vector
    by it (:func:`federation.analytics.scaling.scale_for_secagg`) and multiply the sum back.

    Returns:
        A positive vector of :attr:`GlmLayout.size` entries.

    """
    _check_family(family)
    b = np.asarray(term_bounds, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if b.shape != beta.shape or (b <= 0).any():
        raise ValueError("term_bounds must be positive, one per coefficient")
    n_max = float(max_records)
    eta_max = float(np.sum(b * np.abs(beta)))
    yb = float(y_bound)
    if family == "binomial":
        resid, w_max, dev_max = 1.0, 0.25, 2.0 * (eta_max + math.log(2.0))
        ll_max = dev_max / 2
    elif family == "poisson":
        mu_max = math.exp(min(eta_max, 700.0))
        resid, w_max = yb + mu_max, mu_max
        dev_max = 2.0 * (yb * (abs(math.log(max(yb, 1.0))) + eta_max) + yb + mu_max)
        ll_max = yb * eta_max + mu_max + math.lgamma(yb + 1)
    else:
        resid, w_max = yb + eta_max, 1.0
        dev_max = resid**2
        ll_max = 1.0
    layout = glm_layout(b.shape[0])
    iu = np.triu_indices(b.shape[0])
    scalars = {
        "deviance": dev_max,
        "loglik": ll_max,
        "n": 1.0,
        "sum_y": yb,
        "sum_y2": yb * yb,
        "sum_ylogy": yb * abs(math.log(max(yb, 1.0))) + 1.0,
        "n_boundary": 1.0,
    }
    per_row = np.concatenate(
        [resid * b, w_max * np.outer(b, b)[iu], [max(scalars[k], 1e-12) for k in _SCALARS]]
    )
    assert per_row.shape == (layout.size,)
    return n_max * per_row / clipping_range


@dataclass(frozen=True)
class NewtonInfo:
    """What one Newton step learned from the sums at the current ``beta``.

    Attributes:
        iteration: 0 for the step from the starting values.
        deviance: deviance at the current ``beta``.
        decrement: squared Newton decrement ``g' H^-1 g`` (divided by the scale for
            gaussian): the distance of ``beta`` from the optimum, squared, in standard-error
            units; once its square root is under ``tolerance`` the current ``beta`` is final.
        max_step: largest absolute coefficient change of the step.
        converged: the current ``beta`` is the estimate (release it, with these sums).
        diverging: consecutive steps that looked like separation so far.

    """

    iteration: int
    deviance: float
    decrement: float
    max_step: float
    converged: bool
    diverging: int = 0


def _check_information(hess: np.ndarray, rcond: float) -> float:
    d = np.diag(hess)
    if not np.all(np.isfinite(hess)) or (d <= 0).any():
        return 0.0
    s = 1.0 / np.sqrt(d)
    eig = np.linalg.eigvalsh(hess * s[:, None] * s[None, :])
    return float(eig[0] / eig[-1]) if eig[-1] > 0 else 0.0


def glm_newton_step(
    summed: np.ndarray,
    beta: np.ndarray,
    family: str,
    *,
    previous: NewtonInfo | None = None,
    tolerance: float = 1e-10,
    min_events_per_parameter: float = 0.0,
    rcond: float = 1e-10,
) -> tuple[np.ndarray, NewtonInfo]:
    """Return the next coefficients from the summed statistics at ``beta``.

    ``previous`` is the :class:`NewtonInfo` of the last step (None at the start);
    ``tolerance`` bounds the Newton decrement ``sqrt(g' H^-1 g)`` (the distance to the
    optimum in standard-error units) at convergence; a round with a decrement below 1e-3
    whose deviance is no lower than the previous one also counts as converged (the
    floating-point or, under SecAgg+, the quantisation noise floor). ``rcond`` is the
    smallest reciprocal condition number of the correlation-scaled information accepted
    (1e-10 exact, about 1e-7 under SecAgg+ with 30-bit quantisation).

    Raises:
        GlmRefusal: ``too_few_events_per_parameter``, ``singular_design``, ``separation``.

    """
    _check_family(family)
    beta = np.asarray(beta, dtype=np.float64)
    p = beta.shape[0]
    layout = glm_layout(p)
    grad, hess, sc = layout.unpack(summed)
    it = 0 if previous is None else previous.iteration + 1
    n = sc["n"]
    events = _events(family, n, sc["sum_y"])
    if events / p < min_events_per_parameter:
        raise GlmRefusal(
            "too_few_events_per_parameter",
            f"{events:.0f} events for {p} parameters: "
            f"fewer than {min_events_per_parameter:g} per parameter",
        )
    if n <= p:
        raise GlmRefusal("too_few_events_per_parameter", f"{n:.0f} records for {p} parameters")
    dev = sc["deviance"]
    ratio = _check_information(hess, rcond)
    if ratio < rcond:
        if previous is None:
            raise GlmRefusal(
                "singular_design",
                f"the information matrix is singular (reciprocal condition {ratio:.2e}): "
                "a constant, empty or collinear column",
            )
        raise GlmRefusal(
            "separation",
            "the information matrix became singular while fitting: "
            "fitted values driven to the boundary",
        )
    if family in ("binomial", "poisson") and sc["n_boundary"] >= 0.5:
        raise GlmRefusal(
            "separation",
            f"{sc['n_boundary']:.0f} fitted {'probabilities' if family == 'binomial' else 'means'} "
            "at the boundary (perfect or quasi-complete separation)",
        )
    if family == "binomial" and previous is not None and dev < 1e-6 * max(n, 1.0):
        raise GlmRefusal("separation", "the deviance went to 0: perfect separation")
    step = np.linalg.solve(hess, grad)
    decrement = float(grad @ step)
    if family == "gaussian":
        decrement /= max(dev / max(n - p, 1.0), 1e-300)
    max_step = float(np.max(np.abs(step)))
    diverging = 0
    if previous is not None and decrement < 1e-3 and max_step > 1.0:
        diverging = previous.diverging + 1
        if diverging >= 2:
            raise GlmRefusal(
                "separation",
                f"coefficients keep moving by {max_step:.3g} while the deviance is flat: "
                "perfect or quasi-complete separation",
            )
    converged = math.sqrt(max(decrement, 0.0)) <= tolerance or (
        previous is not None
        and decrement < 1e-6
        and dev >= previous.deviance - max(tolerance, 1e-12 * abs(dev))
    )
    info = NewtonInfo(it, dev, decrement, max_step, bool(converged), diverging)
    return (beta if converged else beta + step), info


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
    null_deviance: float
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
        }


_LINKS = {"binomial": "logit", "gaussian": "identity", "poisson": "log"}


def _null_deviance(family: str, n: float, s: float, s2: float, sylogy: float) -> float:
    ybar = s / n
    if family == "binomial":
        return float(-2.0 * (special.xlogy(s, ybar) + special.xlogy(n - s, 1.0 - ybar)))
    if family == "poisson":
        return float(2.0 * (sylogy - special.xlogy(s, ybar)))
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
) -> GlmResult:
    """Build the released table from the summed statistics at the final ``beta``.

    Raises:
        ValueError: ``term_names`` and ``beta`` disagree in length.
        GlmRefusal: ``singular_design`` (the information cannot be inverted).

    """
    _check_family(family)
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
    pv = 2.0 * stats.norm.sf(np.abs(z))
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
        null_deviance=_null_deviance(family, n, sc["sum_y"], sc["sum_y2"], sc["sum_ylogy"]),
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
    )


def glm_fit(
    aggregate: Callable[[np.ndarray], np.ndarray],
    n_params: int,
    family: str,
    term_names: Sequence[str],
    *,
    max_iterations: int = 25,
    tolerance: float = 1e-10,
    min_events_per_parameter: float = 0.0,
    rcond: float = 1e-10,
    beta0: np.ndarray | None = None,
) -> GlmResult:
    """Run the whole Newton loop over an ``aggregate(beta) -> summed vector`` round function.

    ``aggregate`` stands for one federated round (every node's
    :func:`glm_local_statistics` at ``beta``, securely summed and unscaled). The sums of
    the last round (at the released ``beta``) give the standard errors.

    Raises:
        GlmRefusal: any refusal of :func:`glm_newton_step`, or ``not_converged``.

    """
    beta = np.zeros(n_params) if beta0 is None else np.asarray(beta0, dtype=np.float64)
    info: NewtonInfo | None = None
    for _ in range(max_iterations + 1):
        summed = aggregate(beta)
        beta_new, info = glm_newton_step(
            summed,
            beta,
            family,
            previous=info,
            tolerance=tolerance,
            min_events_per_parameter=min_events_per_parameter,
            rcond=rcond,
        )
        if info.converged:
            return glm_result(summed, beta, family, term_names, info.iteration)
        beta = beta_new
    raise GlmRefusal(
        "not_converged",
        f"no convergence in {max_iterations} iterations "
        f"(Newton decrement {info.decrement if info else float('nan'):.3g})",
    )


def glm_clip_rows(X: np.ndarray, norm_bound: float) -> np.ndarray:  # noqa: N803
    """Scale down every row of ``X`` whose L2 norm exceeds ``norm_bound`` (node side, DP mode)."""
    norms = np.linalg.norm(X, axis=1)
    factor = np.minimum(1.0, norm_bound / np.maximum(norms, 1e-300))
    return X * factor[:, None]


def glm_dp_perturb(
    summed: np.ndarray,
    n_params: int,
    family: str,
    *,
    x_norm_bound: float,
    epsilon: float,
    delta: float,
    n_releases: int,
    eta_bound: float,
    y_bound: float = 1.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Add calibrated Gaussian noise (OpenDP) to one round's summed GLM statistics.

    Sensitivity assumptions (one subject = one row, rows clipped on the node with
    :func:`glm_clip_rows` to ``||x||_2 <= x_norm_bound``, ``|y| <= y_bound``, and
    ``|x'beta| <= eta_bound`` for every broadcast ``beta``, e.g. enforced by the server
    capping ``||beta||_2 <= eta_bound / x_norm_bound``): the score moves by at most
    ``B r`` in L2 (``r`` = 1 binomial, ``y_bound + eta_bound`` gaussian), the packed
    information by at most ``w_max B²`` (Frobenius; ``w_max`` = 1/4 binomial, 1
    gaussian), the deviance by ``2 (eta_bound + log 2)`` (binomial) or ``r²``
    (gaussian), the counts by 1. Each block gets noise ``σ × its sensitivity``; σ is
    calibrated so that ``n_releases`` such rounds (the iteration budget, fixed in
    advance) compose, in zCDP, to (ε, δ). Poisson is not supported (its weights are
    unbounded).

    Returns:
        ``(noisy summed vector, report)``; the report states ε, δ, σ, the releases and
        the sensitivity assumptions.
    """
    from federation.analytics import dp_noise

    _check_family(family)
    if family == "poisson":
        raise ValueError(
            "DP GLM supports binomial and gaussian only (poisson weights are unbounded)"
        )
    layout = glm_layout(n_params)
    resid = 1.0 if family == "binomial" else y_bound + eta_bound
    w_max = 0.25 if family == "binomial" else 1.0
    dev = 2.0 * (eta_bound + math.log(2.0)) if family == "binomial" else resid**2
    sens = {
        "grad": x_norm_bound * resid,
        "hess": w_max * x_norm_bound**2,
        "deviance": dev,
        "loglik": dev / 2.0,
        "n": 1.0,
        "sum_y": y_bound,
        "sum_y2": y_bound**2,
    }
    n_blocks = len(sens)
    l2 = math.sqrt(n_blocks * n_releases)
    sigma = dp_noise.calibrate_gaussian(l2, float(epsilon), float(delta))
    scales = np.zeros(layout.size)
    scales[:n_params] = sens["grad"]
    scales[n_params : n_params + layout.n_packed] = sens["hess"]
    for name in ("deviance", "loglik", "n", "sum_y", "sum_y2"):
        scales[layout.scalar_index(name)] = sens[name]
    noisy = (
        np.asarray(summed, dtype=np.float64) + dp_noise.gaussian_noise(layout.size, sigma) * scales
    )
    report = {
        "mechanism": "gaussian",
        "epsilon": float(epsilon),
        "delta": float(delta),
        "noise_scale": sigma,
        "releases": int(n_releases),
        "x_norm_bound": x_norm_bound,
        "eta_bound": eta_bound,
        "y_bound": y_bound,
        "block_sensitivity": sens,
        "unit": "one subject = one row; rows clipped to the norm bound on the node",
    }
    return noisy, report
