"""The exact linked GLM inside MPyC: one secure Newton round per public coefficient vector.

Every party runs :func:`linked_glm_fit` in lockstep. Set-up: each holder secret-shares
its scaled term columns, the outcome's holder its outcome; the products of term pairs
are formed once (pairs within one holder locally, across holders by secure
multiplication). Each round, at the public ``beta``, every holder computes its partial
linear predictor ``eta_k`` locally and shares only a function of it:

* binomial: ``exp(eta_k / 2)`` and ``exp(-eta_k / 2)``; the products over holders are
  ``U = exp(eta/2)``, ``V = exp(-eta/2)`` and the fitted probability is
  ``p = U / (U + V)``. Since ``|eta| <= B = sum_j |beta_j|`` (every scaled term lies in
  [-1, 1]), ``U + V`` lies in ``[2, 2 cosh(B/2)]``: a public range, so the reciprocal is
  Newton's iteration ``c <- c (2 - d c)`` from ``c = 1`` on ``d / (2 cosh(B/2))`` with a
  step count fixed from that range (:func:`federation.linkage.jobs.reciprocal_steps`),
  no bit decomposition; the ``cosh`` form halves the exponent range of ``1 + exp(-eta)``.
* poisson: ``exp(eta_k)``; the product is the mean. gaussian: ``eta_k`` itself.

Opened each round are only the score ``Z'(y - mu)``, the packed information ``Z'WZ``
and, for gaussian and poisson, the deviance (the binomial deviance needs a secure
logarithm per row and is not computed); these are the horizontal GLM's release
(:mod:`federation.analytics.glm_newton`), whose Newton loop, stopping rule and result table are
reused as they are. Fixed point carries 32 fractional bits; the fit agrees with a pooled
fit to about 1e-9 in the coefficients.

With DP (``job.dp``, :mod:`federation.linkage.mpc_noise`) every round opens the score, the
information, the gaussian deviance, ``sum y``, ``sum y²`` and ``n``, each plus the parties'
secret noise shares (per-row bounds in the scaled space: every term within [-1, 1], the
outcome clipped to ``|y| <= y_bound``); nothing is opened exactly, not even the outcome's
sums, and the Newton loop's stopping rule knows the noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from federation.analytics.glm import glm_layout, glm_public_scale
from federation.analytics.glm_newton import glm_fit
from federation.analytics.glm_result import glm_result
from federation.linkage.jobs import LinkedGlmJob, reciprocal_steps, term_transform
from federation.linkage.mpc_noise import LinkedDp, secure_noise

__all__ = [
    "LocalColumns",
    "dp_entries",
    "fixed_point_sd",
    "linked_glm_fit",
    "max_linear_predictor",
]

#: Largest bound on |eta| the fixed-point range carries (exp(B/2) within 2**31).
MAX_ETA_BOUND = 40.0


class LocalColumns:
    """One party's private inputs: its scaled term columns (rows in cohort order), outcome."""

    def __init__(self, z: np.ndarray | None, y: np.ndarray | None = None) -> None:
        self.z = None if z is None else np.asarray(z, dtype=np.float64)
        self.y = None if y is None else np.asarray(y, dtype=np.float64).ravel()


def fixed_point_sd(job: LinkedGlmJob, beta: np.ndarray) -> np.ndarray:
    """Return the SD of the opened sums' fixed-point error at ``beta`` (per entry).

    Truncation leaves up to two units of ``2**-f`` per product; the reciprocal's steps
    carry them, scaled by the range bound, into every fitted value, and the score sums
    ``n`` of them. Below this floor the Newton decrement means nothing
    (:func:`federation.analytics.glm_newton.decrement_floor`).
    """
    bound = max_linear_predictor(beta)
    if job.family == "binomial":
        d_max = 2.0 * math.cosh(bound / 2.0)
        per_row = 2.0 * (reciprocal_steps(d_max, job.frac_bits) + 2) * d_max
    elif job.family == "poisson":
        per_row = 4.0 * len(job.holders) * math.exp(min(bound, MAX_ETA_BOUND))
    else:
        per_row = 4.0
    sd = per_row * math.sqrt(job.n) * 2.0 ** -job.frac_bits
    return np.full(glm_layout(len(job.terms)).size, sd)


def max_linear_predictor(beta: np.ndarray) -> float:
    """Return the public bound ``sum_j |beta_j|`` on ``|eta|`` (scaled terms in [-1, 1])."""
    return float(np.sum(np.abs(beta)))


def dp_entries(family: str, n_params: int) -> int:
    """Return how many entries a DP round opens (score, information, deviance, y sums, n)."""
    extra = 1 if family == "gaussian" else 0
    return n_params + glm_layout(n_params).n_packed + extra + 3


def _per_row(job: LinkedGlmJob, dp: LinkedDp, beta: np.ndarray) -> np.ndarray:
    """Return, in layout order, what one row adds at most to each entry (scaled terms)."""
    return glm_public_scale(job.family, np.ones(len(job.terms)), 1, beta, 1.0, dp.y_bound)


def _opened_per_row(job: LinkedGlmJob, dp: LinkedDp, beta: np.ndarray,
                    with_info: bool) -> np.ndarray:
    """Return the per-row bounds of a DP round's opened vector, in its order.

    Every scaled term is bounded by 1, so all score entries share one bound and all
    information entries another: the holder order of the opened blocks does not matter.
    """
    full, layout = _per_row(job, dp, beta), glm_layout(len(job.terms))
    p = len(job.terms)
    parts = [full[:p]]
    if with_info:
        parts.append(full[p : p + layout.n_packed])
    if job.family == "gaussian":
        parts.append(full[[layout.scalar_index("deviance")]])
    parts.append(full[[layout.scalar_index(k) for k in ("sum_y", "sum_y2", "n")]])
    return np.concatenate(parts)


class _Secure:
    """Shared set-up of one linked GLM at one party."""

    def __init__(self, mpc: Any, job: LinkedGlmJob, local: LocalColumns) -> None:
        self.mpc, self.job, self.local = mpc, job, local
        self.f = mpc.SecFxp(64 + job.frac_bits, job.frac_bits)
        self.n = job.n
        self.cols = {k: job.party_terms(k) for k in job.holders}
        self.z = {k: self.share(k, self._mine(k, "z"), (self.n, len(c))) for k, c in
                  self.cols.items() if c}
        self.zt = {k: v.T for k, v in self.z.items()}
        self.y = self.share(job.label_party, self._mine(job.label_party, "y"), (self.n,))
        self.blocks = self._products()

    def _mine(self, party: int, what: str) -> np.ndarray | None:
        if self.mpc.pid != party:
            return None
        return self.local.z if what == "z" else self.local.y

    def share(self, sender: int, values: np.ndarray | None, shape: tuple[int, ...]) -> Any:
        """Return the secret-shared array ``sender`` inputs (zeros stand in elsewhere)."""
        arr = values if values is not None else np.zeros(shape)
        if arr.shape != shape:
            raise ValueError(f"party {sender}: expected shape {shape}, got {arr.shape}")
        return self.mpc.input(self.f.array(arr, integral=False), senders=sender)

    def _products(self) -> list[tuple[list[tuple[int, int]], Any]]:
        """Return ``(pairs, secure n x len(pairs) products)`` blocks covering every j <= l."""
        blocks: list[tuple[list[tuple[int, int]], Any]] = []
        parties = [k for k in self.cols if self.cols[k]]
        for k in parties:
            pairs = [(j, ll) for a, j in enumerate(self.cols[k]) for ll in self.cols[k][a:]]
            local = None
            if self.mpc.pid == k:
                zk = self.local.z
                assert zk is not None
                pos = {j: i for i, j in enumerate(self.cols[k])}
                local = np.stack([zk[:, pos[j]] * zk[:, pos[ll]] for j, ll in pairs], axis=1)
            blocks.append((pairs, self.share(k, local, (self.n, len(pairs)))))
        for ia, a in enumerate(parties):
            for b in parties[ia + 1 :]:
                za, zb = self.z[a], self.z[b]
                prod = (za[:, :, None] * zb[:, None, :]).reshape(self.n, -1)
                pairs = [(min(j, ll), max(j, ll)) for j in self.cols[a] for ll in self.cols[b]]
                blocks.append((pairs, prod))
        return blocks

    def eta_parts(self, beta: np.ndarray) -> np.ndarray | None:
        """Return this party's partial linear predictor (None at a party without terms)."""
        mine = self.cols.get(self.mpc.pid)
        if not mine or self.local.z is None:
            return None
        return np.asarray(self.local.z @ beta[mine], dtype=np.float64)

    def product_over_holders(self, parts: Callable[[np.ndarray], np.ndarray], beta: np.ndarray,
                             rows: int) -> Any:
        """Return the secure elementwise product over holders of ``parts(eta_k)``."""
        acc = None
        eta = self.eta_parts(beta)
        for k in self.cols:
            if not self.cols[k]:
                continue
            mine = parts(eta) if (self.mpc.pid == k and eta is not None) else None
            shape = (rows, self.n) if rows > 1 else (self.n,)
            x = self.share(k, None if mine is None else mine.reshape(shape), shape)
            acc = x if acc is None else acc * x
        return acc

    def eta_sum(self, beta: np.ndarray) -> Any:
        """Return the secure linear predictor ``sum_k eta_k`` (no multiplication needed)."""
        total = None
        eta = self.eta_parts(beta)
        for k in self.cols:
            if not self.cols[k]:
                continue
            x = self.share(k, eta if self.mpc.pid == k else None, (self.n,))
            total = x if total is None else total + x
        return total

    def information(self, w: Any | None) -> dict[tuple[int, int], Any]:
        """Return secure ``sum_i w_i z_ij z_il`` per block (``w = 1`` when None)."""
        out = {}
        for i, (pairs, block) in enumerate(self.blocks):
            out[(i, len(pairs))] = (
                self.mpc.np_sum(block, axis=0) if w is None else w @ block
            )
        return out

    def score(self, r: Any) -> Any:
        """Return the secure score blocks ``Z_k' r`` concatenated in holder order."""
        return self.mpc.np_concatenate([self.zt[k] @ r for k in self.cols if self.cols[k]])


def _binomial_round(s: _Secure, beta: np.ndarray) -> tuple[Any, Any, list[Any]]:
    job = s.job
    bound = max_linear_predictor(beta)
    d_max = 2.0 * math.cosh(bound / 2.0)
    uv = s.product_over_holders(lambda e: np.stack([np.exp(e / 2), np.exp(-e / 2)]), beta, 2)
    uv = uv * (1.0 / d_max)
    d = uv[0] + uv[1]
    c = 2 - d
    for _ in range(reciprocal_steps(d_max, job.frac_bits) - 1):
        c = c * (2 - d * c)
    pq = uv * c
    p = pq[0]
    w = p * pq[1]
    return w, s.y - p, []


def _poisson_round(s: _Secure, beta: np.ndarray) -> tuple[Any, Any, list[Any]]:
    mu = s.product_over_holders(np.exp, beta, 1)
    eta = s.eta_sum(beta)
    return mu, s.y - mu, [s.y @ eta, s.mpc.np_sum(mu)]


def _gaussian_round(s: _Secure, beta: np.ndarray) -> tuple[Any, Any, list[Any]]:
    r = s.y - s.eta_sum(beta)
    return None, r, [r @ r]


_ROUNDS = {"binomial": _binomial_round, "poisson": _poisson_round, "gaussian": _gaussian_round}


def _outcome_sums(job: LinkedGlmJob, y: np.ndarray | None) -> np.ndarray:
    if y is None:
        return np.zeros(4)
    ylogy = lgam = 0.0
    if job.family == "poisson":
        from scipy import special  # only here: a party's start-up stays without scipy

        ylogy = float(np.sum(special.xlogy(y, y)))
        lgam = float(np.sum(special.gammaln(y + 1)))
    return np.array([y.sum(), (y * y).sum(), ylogy, lgam])


def linked_glm_fit(
    mpc: Any,
    job: LinkedGlmJob,
    local: LocalColumns,
    progress: Callable[[str], None] | None = None,
    before_open: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the linked GLM as this party; every party returns the same result JSON.

    ``before_open(k)`` runs before round ``k``'s opening (a holder's budget charge for
    that release; raising stops the computation before anything of round ``k`` opens).

    Returns:
        The horizontal GLM's result mapping (:class:`federation.analytics.glm.GlmResult`)
        on the original scale of the terms, with ``linked_n`` (noisy with DP) and, with
        DP, ``dp`` (mechanism, ε, rounds charged); the binomial deviance,
        log-likelihood and AIC are None (not computed).

    Raises:
        federation.analytics.glm.GlmRefusal: any refusal of the Newton loop.
        ValueError: |eta|'s public bound leaves the fixed-point range (separation).

    """
    note = progress or (lambda _msg: None)
    dp = LinkedDp.from_json(job.dp)
    if dp is not None and local.y is not None:  # the sensitivity holds for |y| <= y_bound
        local = LocalColumns(local.z, np.clip(local.y, -dp.y_bound, dp.y_bound))
    s = _Secure(mpc, job, local)
    sum_y = sum_y2 = sum_ylogy = sum_lgamma = 0.0
    if dp is None:  # with DP the outcome's sums are opened only noisy, every round
        mine = _outcome_sums(job, local.y if mpc.pid == job.label_party else None)
        sums = mpc.run(mpc.output(s.share(job.label_party, mine if mpc.pid == job.label_party
                                          else None, (4,))))
        sum_y, sum_y2, sum_ylogy, sum_lgamma = (float(v) for v in sums)
    p = len(job.terms)
    layout = glm_layout(p)
    rows, cols = np.triu_indices(p)
    iu = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(rows, cols, strict=True))}
    order = [j for k in s.cols for j in s.cols[k]]
    m = term_transform(job.terms)
    rounds = [0]
    gaussian_h: np.ndarray | None = None
    noisy_n = [float(job.n)]

    def aggregate(beta: np.ndarray) -> np.ndarray:
        nonlocal gaussian_h, sum_y, sum_y2
        if job.family != "gaussian" and max_linear_predictor(beta) > MAX_ETA_BOUND:
            raise ValueError("the linear predictor's bound left the fixed-point range")
        w, r, extra = _ROUNDS[job.family](s, beta)
        with_info = job.family != "gaussian" or gaussian_h is None
        parts = [s.score(r)]
        if with_info:
            parts += list(s.information(w).values())
        parts += [mpc.np_fromlist(extra)] if extra else []
        if dp is not None:
            parts.append(mpc.np_fromlist([mpc.np_sum(s.y), s.y @ s.y, s.f(float(job.n))]))
        vec = mpc.np_concatenate(parts)
        if dp is not None:
            vec = vec + secure_noise(mpc, s.f, _opened_per_row(job, dp, beta, with_info), dp)
        if before_open is not None:
            before_open(rounds[0] + 1)
        opened = np.asarray(mpc.run(mpc.output(vec)), dtype=np.float64)
        grad = np.zeros(p)
        grad[order] = opened[:p]
        pos = p
        if with_info:
            packed = np.zeros(layout.n_packed)
            for pairs, _block in s.blocks:
                for pair in pairs:
                    packed[iu[pair]] = opened[pos]
                    pos += 1
            hess = np.zeros((p, p))
            hess[np.triu_indices(p)] = packed
            hess = hess + np.triu(hess, 1).T
            if job.family == "gaussian":
                gaussian_h = hess
        else:
            hess = gaussian_h
        tail = opened[pos:]
        if dp is not None:
            sum_y, sum_y2, noisy_n[0] = (float(v) for v in tail[-3:])
            tail = tail[:-3]
        if job.family == "gaussian":
            dev, loglik = float(tail[0]), 0.0
        elif job.family == "poisson":
            s_yeta, s_mu = float(tail[0]), float(tail[1])
            dev = 2.0 * (sum_ylogy - s_yeta - sum_y + s_mu)
            loglik = s_yeta - s_mu - sum_lgamma
        else:
            dev = loglik = float("nan")
        rounds[0] += 1
        note(f"round {rounds[0]}")
        return layout.pack(grad, hess, {
            "deviance": dev, "loglik": loglik, "n": noisy_n[0], "sum_y": sum_y,
            "sum_y2": sum_y2, "sum_ylogy": sum_ylogy, "n_boundary": 0.0,
        })

    names = [t.name for t in job.terms]
    last: dict[str, np.ndarray] = {}

    def remember(beta: np.ndarray) -> np.ndarray:
        last["beta"] = np.array(beta)
        last["summed"] = aggregate(beta)
        return last["summed"]

    def noise_sd(beta: np.ndarray) -> np.ndarray:
        sd = fixed_point_sd(job, beta)
        if dp is None:
            return sd
        dp_sd = dp.total_scale * dp.max_rows_per_subject * _per_row(job, dp, beta)
        return np.sqrt(sd**2 + dp_sd**2)

    fitted = glm_fit(remember, p, job.family, names, max_iterations=job.max_iterations,
                     tolerance=job.tolerance, noise_sd=noise_sd, dp=dp is not None)
    # Under DP the released coefficients are the mean of the last broadcasts, not the last.
    beta_z = np.array([fitted.coefficients[name].estimate for name in names])
    # Back to the original scale: beta_x = M' beta_z, g_x = M^-1 g_z, H_x = M^-1 H M^-T.
    grad_z, hess_z, scalars = layout.unpack(last["summed"])
    m_inv = np.linalg.inv(m)
    summed_x = layout.pack(m_inv @ grad_z, m_inv @ hess_z @ m_inv.T, scalars)
    result = glm_result(summed_x, m.T @ beta_z, job.family, names, fitted.iterations,
                        converged=fitted.converged,
                        convergence=fitted.convergence).to_json_dict()
    if job.family == "binomial":
        result.update(deviance=None, llf=None, aic=None)
    result["linked_n"] = job.n if dp is None else max(0, round(noisy_n[0]))
    if dp is not None:
        result["dp"] = dp_summary(job, dp, rounds[0])
    return result


def dp_noise_model(job: LinkedGlmJob, dp: LinkedDp) -> Any:
    """Return the :class:`federation.analytics.glm_noise.GlmNoise` of a DP linked GLM.

    Its σ is the calibration (the same PLD calibration as the horizontal GLM, over the
    entries a round opens); its per-round ε is what every holder is charged.
    """
    from federation.analytics.glm_noise import GlmNoise

    return GlmNoise(epsilon=dp.epsilon, delta=dp.delta, rounds=dp.rounds,
                    n_nodes=dp.parties - dp.threshold,
                    entries=dp_entries(job.family, len(job.terms)),
                    max_rows_per_subject=dp.max_rows_per_subject)


def dp_summary(job: LinkedGlmJob, dp: LinkedDp, rounds_run: int) -> dict[str, Any]:
    """Return the result's ``dp`` entry: ε charged per holder, ε against the researcher."""
    out = dp_noise_model(job, dp).summary(rounds_run, dp.parties)
    out.pop("nodes_contributing", None)
    out.update(dp.summary(len(job.holders)), noise_scale=dp.sigma)
    return out
