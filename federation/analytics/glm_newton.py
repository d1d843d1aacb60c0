"""The server's Newton–Raphson loop over summed GLM statistics: start, steps, stopping rule.

Each round's secure sum (score, information, deviance, counts at the broadcast
``beta``; layout :class:`~federation.analytics.glm.GlmLayout`) gives one Newton step
(:func:`glm_newton_step`); :class:`NewtonLoop` keeps the state between rounds and builds
the released table once the current ``beta`` is final.

Start. With an intercept, the first round's sums at ``beta = 0`` determine the sums at
the intercept-only fit exactly (``mu`` is the same for every record there, so the score
and information are the ``beta = 0`` ones rescaled, :func:`glm_null_start`), and the
first step is taken from that point rather than from 0: the same kind of start as
``statsmodels``' IRLS (``mu`` near the mean), without an extra round, and it keeps a
Poisson fit with large counts from overshooting (from ``beta = 0`` its first step
moves the intercept by about the mean count). Where the step from the intercept-only
fit would itself overshoot (a rare binary term with a strong effect, such as multiple
births and low birth weight: the step changes the linear predictor by tens of logits),
the first step is taken from 0 instead (:func:`wild_null_step`).

Stopping. The distance of ``beta`` from the optimum, in standard-error units, is the
Newton decrement ``sqrt(g' H^-1 g)``. Exact sums stop once it is below the job's
``tolerance``. Sums through SecAgg+ carry the quantisation error of each node's
entries (stochastic rounding to a step of ``resolution`` after division by the public
scale), so the measured decrement cannot fall below that error's own decrement,
``sqrt(sum_j sd_j^2 (H^-1)_jj)`` with ``sd`` the score's noise SD: the *quantisation
floor*. A round whose decrement is below :data:`FLOOR_MULTIPLE` floors has reached what
the secure sum can resolve, so the loop stops there instead of chasing a tolerance the
sum cannot deliver; the floor is reported with the result.

Under DP the floor is no stopping rule. The DP noise is calibrated for a planned number
of rounds, and its floor can exceed the start's distance from the optimum: a fit that
stopped "within the floor" would release its start, shrunk toward it. A DP fit
(``planned_rounds``) therefore takes every planned step, and releases the mean of the
broadcasts of its last :func:`averaged_rounds` rounds: near the optimum each noisy Newton
step lands on the optimum plus that round's noise (to first order independent of the
last), so the mean's noise falls with the number of rounds averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from federation.analytics.glm import GlmRefusal, check_family, family_events, glm_layout
from federation.analytics.glm_result import GlmResult, glm_result

__all__ = [
    "FLOOR_MULTIPLE",
    "MAX_NULL_STEP_RMS",
    "NewtonInfo",
    "NewtonLoop",
    "averaged_rounds",
    "decrement_floor",
    "glm_fit",
    "glm_newton_step",
    "glm_null_start",
    "wild_null_step",
]

#: A decrement below this many quantisation floors is noise: the current ``beta`` is final.
#: For a true optimum the measured squared decrement is a sum of ``p`` squared noise
#: terms with mean floor²; exceeding 9 × floor² is then a chi-square tail of p < 0.003
#: for one parameter and far smaller for more.
FLOOR_MULTIPLE = 3.0


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
        floor: the decrement's quantisation floor (square root, standard-error units;
            0 for exact sums).
    """

    iteration: int
    deviance: float
    decrement: float
    max_step: float
    converged: bool
    diverging: int = 0
    floor: float = 0.0


def _check_information(hess: np.ndarray, rcond: float) -> float:
    d = np.diag(hess)
    if not np.all(np.isfinite(hess)) or (d <= 0).any():
        return 0.0
    s = 1.0 / np.sqrt(d)
    eig = np.linalg.eigvalsh(hess * s[:, None] * s[None, :])
    return float(eig[0] / eig[-1]) if eig[-1] > 0 else 0.0


def decrement_floor(hess: np.ndarray, score_sd: np.ndarray, scale: float = 1.0) -> float:
    """Return the quantisation floor of the Newton decrement (square root, SE units).

    ``score_sd`` is the noise SD of each summed score entry; the floor is the square root
    of the expected ``e' H^-1 e / scale`` for independent noise ``e`` of those SDs.

    Raises:
        numpy.linalg.LinAlgError: ``hess`` is singular.
    """
    inv_diag = np.diag(np.linalg.inv(hess))
    return math.sqrt(max(float(np.sum(np.square(score_sd) * inv_diag)), 0.0) / scale)


#: A first step from the intercept-only fit that moves the linear predictor by more than
#: this (root mean square over the records, in link units) leaves Newton's quadratic
#: model far behind; the fit then starts from 0 as before. An ordinary fit's first step
#: moves it by a fraction of a unit; a rare binary term with a strong effect moves a few
#: records by ten units and overshoots on the step after.
MAX_NULL_STEP_RMS = 1.0


def wild_null_step(zero_sums: np.ndarray, start_sums: np.ndarray, family: str) -> bool:
    """Return whether the Newton step from the intercept-only fit would overshoot.

    The step's root-mean-square change of the linear predictor over the records,
    ``sqrt(step' (X'X / n) step)``, follows from the sums at ``beta = 0`` (whose
    information is ``w0 X'X``); above :data:`MAX_NULL_STEP_RMS` the step is wild.
    """
    layout = glm_layout(int(round((math.sqrt(8 * (np.asarray(zero_sums).size - 7) + 9) - 3) / 2)))
    _, hess0, sc = layout.unpack(np.asarray(zero_sums, dtype=np.float64))
    grad, hess, _ = layout.unpack(np.asarray(start_sums, dtype=np.float64))
    w0 = 0.25 if family == "binomial" else 1.0
    try:
        step = np.linalg.solve(hess, grad)
    except np.linalg.LinAlgError:
        return True
    mean_square = float(step @ (hess0 / (w0 * max(sc["n"], 1.0))) @ step)
    return not math.isfinite(mean_square) or mean_square > MAX_NULL_STEP_RMS**2


def glm_null_start(summed: np.ndarray, family: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(beta, sums)`` at the intercept-only fit, from the sums at ``beta = 0``.

    The intercept must be term 0 and a column of ones. At ``beta = 0`` every record has
    ``mu0`` and weight ``w0`` (0.5 and 0.25 binomial, 1 and 1 poisson), so
    ``X'1 = H[:, 0] / w0`` and ``X'y = g + mu0 X'1``; at the intercept-only fit every
    record has ``mu = mean(y)`` and weight ``w``, so its score is ``X'y - mu X'1`` and
    its information ``(w / w0) H``; deviance and log-likelihood follow from the counts.

    Returns:
        The start and its sums, or None where it does not apply (``gaussian``, whose
        first step from 0 is already exact, or a mean on the boundary: all 0 or all 1).
    """
    check_family(family)
    if family == "gaussian":
        return None
    vec = np.asarray(summed, dtype=np.float64)
    p = int(round((math.sqrt(8 * (vec.size - 7) + 9) - 3) / 2))
    layout = glm_layout(p)
    grad, hess, sc = layout.unpack(vec)
    n, s = sc["n"], sc["sum_y"]
    if n <= 0:
        return None
    ybar = s / n
    if family == "binomial":
        if not 0.0 < ybar < 1.0:
            return None
        mu0, w0, w = 0.5, 0.25, ybar * (1.0 - ybar)
        c = math.log(ybar / (1.0 - ybar))
        loglik = s * math.log(ybar) + (n - s) * math.log1p(-ybar)
        deviance = -2.0 * loglik
        boundary = n if abs(c) > 25.0 else 0.0
    else:
        if not ybar > 0.0:
            return None
        mu0, w0, w = 1.0, 1.0, ybar
        c = math.log(ybar)
        # loglik at 0 is -n - sum(lgamma(y + 1)); at c it is s c - n ybar - sum(lgamma(y + 1))
        loglik = s * c - s + sc["loglik"] + n
        deviance = 2.0 * (sc["sum_ylogy"] - c * s)
        boundary = n if c < -25.0 else 0.0
    ones = hess[:, 0] / w0
    score = grad + mu0 * ones - ybar * ones
    scalars = {**sc, "deviance": deviance, "loglik": loglik, "n_boundary": boundary}
    beta = np.zeros(p)
    beta[0] = c
    return beta, layout.pack(score, hess * (w / w0), scalars)


def glm_newton_step(
    summed: np.ndarray,
    beta: np.ndarray,
    family: str,
    *,
    previous: NewtonInfo | None = None,
    tolerance: float = 1e-10,
    min_events_per_parameter: float = 0.0,
    rcond: float = 1e-10,
    noise_sd: np.ndarray | None = None,
    floor_stops: bool = True,
) -> tuple[np.ndarray, NewtonInfo]:
    """Return the next coefficients from the summed statistics at ``beta``.

    ``previous`` is the :class:`NewtonInfo` of the last step (None at the start);
    ``tolerance`` bounds the Newton decrement ``sqrt(g' H^-1 g)`` (the distance to the
    optimum in standard-error units) at convergence. ``noise_sd`` is the noise SD of
    each summed entry (SecAgg+'s quantisation; None for exact sums): a decrement below
    :data:`FLOOR_MULTIPLE` times its floor (:func:`decrement_floor`) also ends the fit,
    unless ``floor_stops`` is False (a DP fit, which spends its planned rounds).
    A round with a decrement below 1e-3 whose deviance is no lower than the previous
    one also counts as converged (the floating-point noise floor). ``rcond`` is the
    smallest reciprocal condition number of the correlation-scaled information accepted
    (1e-10 exact, about 1e-7 under SecAgg+ with 30-bit quantisation).

    Raises:
        GlmRefusal: ``too_few_events_per_parameter``, ``singular_design``, ``separation``.

    """
    check_family(family)
    beta = np.asarray(beta, dtype=np.float64)
    p = beta.shape[0]
    layout = glm_layout(p)
    grad, hess, sc = layout.unpack(summed)
    it = 0 if previous is None else previous.iteration + 1
    n = sc["n"]
    events = family_events(family, n, sc["sum_y"])
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
    # Under noise (SecAgg+'s quantisation, DP) a boundary count is only believed when it
    # stands 4 SDs clear of it.
    boundary_sd = 0.0 if noise_sd is None else float(noise_sd[layout.scalar_index("n_boundary")])
    if family in ("binomial", "poisson") and sc["n_boundary"] >= 0.5 + 4.0 * boundary_sd:
        raise GlmRefusal(
            "separation",
            f"{sc['n_boundary']:.0f} fitted {'probabilities' if family == 'binomial' else 'means'} "
            "at the boundary (perfect or quasi-complete separation)",
        )
    if family == "binomial" and previous is not None and dev < 1e-6 * max(n, 1.0):
        raise GlmRefusal("separation", "the deviance went to 0: perfect separation")
    step = np.linalg.solve(hess, grad)
    decrement = float(grad @ step)
    scale = max(dev / max(n - p, 1.0), 1e-300) if family == "gaussian" else 1.0
    decrement /= scale
    floor = 0.0 if noise_sd is None else decrement_floor(hess, np.asarray(noise_sd)[:p], scale)
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
    distance = math.sqrt(max(decrement, 0.0))
    converged = distance <= max(tolerance, FLOOR_MULTIPLE * floor if floor_stops else 0.0) or (
        previous is not None
        and decrement < 1e-6
        and dev >= previous.deviance - max(tolerance, 1e-12 * abs(dev))
    )
    info = NewtonInfo(it, dev, decrement, max_step, bool(converged), diverging, floor)
    return (beta if converged else beta + step), info


class NewtonLoop:
    """The server's side of a federated GLM fit: one :meth:`advance` per round's sum.

    ``offset`` says the model has an offset: the start is then ``beta = 0`` and the
    null deviance is not released. ``planned_rounds`` (a DP fit: the rounds its noise is
    calibrated for) makes the loop take every planned step and release the mean of the
    last :func:`averaged_rounds` broadcasts (module doc); None stops at the tolerance or
    the quantisation floor.

    Attributes:
        beta: the coefficients the next round's sums are taken at (the broadcast).
        info: the last step's :class:`NewtonInfo` (None before the first).
        result: the released table once the fit is done (None until then).
    """

    def __init__(
        self,
        family: str,
        term_names: Sequence[str],
        *,
        tolerance: float = 1e-10,
        min_events_per_parameter: float = 0.0,
        rcond: float = 1e-10,
        null_start: bool = True,
        offset: bool = False,
        planned_rounds: int | None = None,
    ) -> None:
        check_family(family)
        if planned_rounds is not None and planned_rounds < 1:
            raise ValueError(f"planned_rounds must be at least 1, got {planned_rounds}")
        self.offset, self.planned = offset, planned_rounds
        #: the broadcasts the sums were taken at, in order (kept for a DP fit's mean)
        self.path: list[np.ndarray] = []
        self.family, self.names = family, list(term_names)
        self.tolerance, self.min_events, self.rcond = tolerance, min_events_per_parameter, rcond
        # With an offset the intercept-only fit is no rescaling of the sums at 0.
        self.null_start = null_start and not offset
        self.beta = np.zeros(len(self.names))
        self.info: NewtonInfo | None = None
        self.result: GlmResult | None = None

    def advance(self, summed: np.ndarray, noise_sd: np.ndarray | None = None) -> np.ndarray | None:
        """Take one step from the sums at :attr:`beta`; return the next broadcast or None.

        ``noise_sd`` is the noise SD of each summed entry (None for exact sums).

        Raises:
            GlmRefusal: any refusal of :func:`glm_newton_step`.
        """
        beta, sums = self.beta, np.asarray(summed, dtype=np.float64)
        if self.info is None and self.null_start and not beta.any():
            start = glm_null_start(sums, self.family)
            if start is not None and not wild_null_step(sums, start[1], self.family):
                beta, sums = start
        beta_new, info = glm_newton_step(
            sums,
            beta,
            self.family,
            previous=self.info,
            tolerance=self.tolerance,
            min_events_per_parameter=self.min_events,
            rcond=self.rcond,
            noise_sd=noise_sd,
            floor_stops=self.planned is None,
        )
        if self.planned is not None:
            self.path.append(beta)
            if info.iteration + 1 >= self.planned:
                self.result = self._planned_result(sums, info)
                return None
            self.beta, self.info = beta_new, info
            return beta_new
        if info.converged:
            convergence = {
                "criterion": "newton_decrement",
                "decrement": math.sqrt(max(info.decrement, 0.0)),
                "tolerance": self.tolerance,
                "quantisation_floor": info.floor,
                "stopped_at": "tolerance"
                if math.sqrt(max(info.decrement, 0.0)) <= self.tolerance
                else ("quantisation_floor" if info.floor > 0 else "deviance_flat"),
            }
            self.result = glm_result(
                sums,
                beta,
                self.family,
                self.names,
                info.iteration,
                convergence=convergence,
                offset=self.offset,
            )
            return None
        self.beta, self.info = beta_new, info
        return beta_new

    def _planned_result(self, sums: np.ndarray, info: NewtonInfo) -> GlmResult:
        """Return a DP fit's table: the mean of its last broadcasts, the last round's sums."""
        assert self.planned is not None
        kept = averaged_rounds(self.planned)
        distance = math.sqrt(max(info.decrement, 0.0))
        return glm_result(
            sums,
            np.mean(self.path[-kept:], axis=0),
            self.family,
            self.names,
            info.iteration,
            converged=distance <= max(self.tolerance, FLOOR_MULTIPLE * info.floor),
            convergence={
                "criterion": "planned_rounds",
                "rounds": self.planned,
                "averaged_rounds": kept,
                "decrement": distance,
                "tolerance": self.tolerance,
                "quantisation_floor": info.floor,
                "stopped_at": "planned_rounds",
            },
            offset=self.offset,
        )


def averaged_rounds(planned_rounds: int) -> int:
    """Return how many of a DP fit's last broadcasts its released coefficients average.

    The second half of the planned rounds (at least one): the first half brings the
    iterates from the start to the optimum.
    """
    return max(1, planned_rounds // 2)


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
    noise_sd: Callable[[np.ndarray], np.ndarray] | None = None,
    null_start: bool = True,
    dp: bool = False,
) -> GlmResult:
    """Run the whole Newton loop over an ``aggregate(beta) -> summed vector`` round function.

    ``aggregate`` stands for one federated round (every node's
    :func:`~federation.analytics.glm.glm_local_statistics` at ``beta``, securely summed
    and unscaled); ``noise_sd(beta)`` the noise SD of that sum's entries, if any. The
    intercept, when ``null_start`` says there is one, is term 0. The sums of the last
    round (at the released ``beta``) give the standard errors.

    ``dp`` says the sums carry DP noise: the fit then spends all ``max_iterations + 1``
    rounds and releases the mean of its last broadcasts (:class:`NewtonLoop`), with the
    standard errors of the last round's sums (taken at the last broadcast).

    Raises:
        ValueError: ``term_names`` and ``n_params`` disagree.
        GlmRefusal: any refusal of :func:`glm_newton_step`, or ``not_converged``.

    """
    if len(term_names) != n_params:
        raise ValueError(f"{len(term_names)} term names for {n_params} coefficients")
    loop = NewtonLoop(
        family,
        term_names,
        tolerance=tolerance,
        min_events_per_parameter=min_events_per_parameter,
        rcond=rcond,
        null_start=null_start,
        planned_rounds=max_iterations + 1 if dp else None,
    )
    for _ in range(max_iterations + 1):
        beta = loop.beta
        loop.advance(aggregate(beta), None if noise_sd is None else noise_sd(beta))
        if loop.result is not None:
            return loop.result
    info = loop.info
    raise GlmRefusal(
        "not_converged",
        f"no convergence in {max_iterations} iterations "
        f"(Newton decrement {info.decrement if info else float('nan'):.3g})",
    )
