"""Exact federated GLMs by Newton-Raphson (IRLS): families, the summed layout, node statistics.

Families (canonical links, so observed and expected information agree):
``binomial`` (logit, outcome 0/1), ``gaussian`` (identity), ``poisson`` (log).

Each round the server sends the current coefficients ``beta``; every node returns
:func:`glm_local_statistics` at ``beta`` (a flat float64 vector, layout
:class:`GlmLayout`); SecAgg+ returns the sum; the server's Newton loop
(:mod:`federation.analytics.glm_newton`) turns the sum into the next ``beta``. Because
score, information, deviance and log-likelihood are sums over records, the federated
fit equals the pooled fit exactly (up to floating point, or to the quantisation error
of SecAgg+); :mod:`federation.analytics.glm_result` builds the released table, which
matches ``statsmodels`` GLM defaults.

Refusals raise :class:`GlmRefusal` (its ``cause`` is one of :data:`REFUSAL_CAUSES`) and
nothing is released: too few events at a node (node side) or per parameter (server
side), separation (fitted probabilities or means driven to the boundary, coefficients
diverging while the deviance is flat, or the binomial deviance going to 0), a singular
information matrix at the start (rank-deficient design: constant or collinear column),
or no convergence within the iteration limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from federation.errors import FederationError

__all__ = [
    "BOUNDARY_ETA",
    "FAMILIES",
    "REFUSAL_CAUSES",
    "GlmLayout",
    "GlmRefusal",
    "check_family",
    "family_events",
    "glm_layout",
    "glm_local_statistics",
    "glm_public_scale",
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


def check_family(family: str) -> None:
    """Check that ``family`` is one of :data:`FAMILIES`.

    Raises:
        ValueError: an unknown family.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def family_events(family: str, n: float, sum_y: float) -> float:
    """Return the events that limit a fit: the rarer outcome, the total count, or the rows."""
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
    offset: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Return a node's sufficient statistics at ``beta`` (layout :func:`glm_layout`).

    ``min_events`` is the node's own floor: for ``binomial`` the rarer outcome (events
    or non-events), for ``poisson`` the total count, for ``gaussian`` the rows.
    ``offset`` is added to the linear predictor (coefficient 1, as ``log(exposure)`` in a
    rate model); ``weights`` are frequency weights (a row of weight 3 counts as three
    identical rows), so every sum, count and event is weighted, as in ``statsmodels``'
    ``freq_weights``.

    Raises:
        GlmRefusal: ``invalid_outcome`` (NaN, not 0/1 for binomial, negative for poisson)
            or ``too_few_events_at_node``.
        ValueError: shapes disagree or the family is unknown.

    """
    from scipy import special  # here, not at import: an MPC party imports this module

    check_family(family)
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
    off = np.zeros_like(y) if offset is None else np.asarray(offset, dtype=np.float64).ravel()
    f = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if off.shape != y.shape or f.shape != y.shape:
        raise ValueError(f"shapes disagree: y {y.shape}, offset {off.shape}, weights {f.shape}")
    if not (np.isfinite(off).all() and np.isfinite(f).all()) or (f < 0).any():
        raise GlmRefusal("invalid_outcome", "an offset or weight is NaN, infinite or negative")
    n = float(f.sum())
    sum_y = float(f @ y)
    events = family_events(family, n, sum_y)
    if events < min_events:
        raise GlmRefusal(
            "too_few_events_at_node",
            f"this node has {events:g} events, fewer than its minimum {min_events}",
        )
    eta = X @ beta + off
    ylogy = float(f @ special.xlogy(y, y)) if family == "poisson" else 0.0
    if family == "binomial":
        log_mu = -np.logaddexp(0.0, -eta)
        log_1mu = -np.logaddexp(0.0, eta)
        mu = np.exp(log_mu)
        w = mu * np.exp(log_1mu)
        loglik = float(f @ (y * log_mu + (1 - y) * log_1mu))
        deviance = -2.0 * loglik
    elif family == "poisson":
        mu = np.exp(eta)
        w = mu
        loglik = float(f @ (y * eta - mu - special.gammaln(y + 1)))
        deviance = float(2.0 * (f @ (special.xlogy(y, y) - y * eta - (y - mu))))
    else:
        mu = eta
        w = np.ones_like(eta)
        loglik = 0.0
        deviance = float(f @ ((y - mu) ** 2))
    grad = X.T @ (f * (y - mu))
    hess = (X * (f * w)[:, None]).T @ X
    used = f > 0
    boundary = (
        float(np.sum(used & (np.abs(eta) > BOUNDARY_ETA)))
        if family == "binomial"
        else (float(np.sum(used & (eta < -BOUNDARY_ETA))) if family == "poisson" else 0.0)
    )
    scalars = {
        "deviance": deviance,
        "loglik": loglik,
        "n": n,
        "sum_y": sum_y,
        "sum_y2": float(f @ (y * y)),
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
    *,
    offset_bound: float = 0.0,
    weight_bound: float = 1.0,
) -> np.ndarray:
    """Return the public per-entry scale that brings any node's vector into ``[-C, C]``.

    Derived from public information only: ``term_bounds[j]`` bounds ``|x_j|`` (1 for the
    intercept and dummies, else the data model's range), ``max_records`` bounds a node's
    rows, ``y_bound`` bounds ``|y|`` (1 for binomial) and ``beta`` is the coefficient
    vector the server broadcast (with ``offset_bound``, a public bound of ``|offset|``, it
    bounds the linear predictor); ``weight_bound`` bounds a row's frequency weight.
    Divide the local vector by it (:func:`federation.analytics.scaling.scale_for_secagg`)
    and multiply the sum back.

    Returns:
        A positive vector of :attr:`GlmLayout.size` entries.

    """
    check_family(family)
    b = np.asarray(term_bounds, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if b.shape != beta.shape or (b <= 0).any():
        raise ValueError("term_bounds must be positive, one per coefficient")
    n_max = float(max_records)
    eta_max = float(np.sum(b * np.abs(beta))) + float(offset_bound)
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
    return n_max * float(weight_bound) * per_row / clipping_range
