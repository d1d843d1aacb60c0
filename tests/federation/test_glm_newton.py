"""The server's Newton loop: the intercept-only start, and a stop that knows SecAgg+'s floor.

Goal: a federated fit takes at most the pooled ``statsmodels`` fit's IRLS iterations + 1
secure sums, for every family, with exact sums and through SecAgg+, and its estimates
equal the pooled fit's within the stated tolerance (1e-6 exact, 1e-4 under SecAgg+).
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from federation.analytics.glm import glm_layout, glm_local_statistics
from federation.analytics.glm_newton import FLOOR_MULTIPLE, glm_null_start
from federation.analytics.scaling import simulate_secure_sum
from federation.plans import GlmPlan, PlanInputs, plan_for
from federation.spec import parse_job_spec

FEATURES = ["x1", "x2", "x3", "x4"]
Y_BOUND = {"binomial": 1.0, "gaussian": 40.0, "poisson": 300.0}
TOLERANCE = {False: 1e-6, True: 1e-4}
SM_FAMILY = {
    "binomial": sm.families.Binomial(),
    "gaussian": sm.families.Gaussian(),
    "poisson": sm.families.Poisson(),
}


def _cohort(family: str, n: int = 4000, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).clip(-4, 4)
    coef = np.array([0.5, -0.3, 0.2, 0.1])
    if family == "binomial":
        y = rng.binomial(1, 1 / (1 + np.exp(-(-2.0 + x @ coef))))
    elif family == "poisson":  # counts around 12: from beta = 0 the first step overshoots
        y = rng.poisson(np.exp(2.5 + 0.5 * x @ coef))
    else:
        y = 10 + 3 * x @ coef + rng.normal(0, 2, n)
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["y"] = y.astype(float)
    return frame


def _fit(family: str, secure: bool, frame: pd.DataFrame) -> tuple[int, dict]:
    """Run the job's plan over 3 nodes; return (secure sums taken, release)."""
    spec = parse_job_spec(
        {
            "kind": "glm",
            "features": FEATURES,
            "label": "y",
            "glm": {
                "family": family,
                "bounds": {f: [-4, 4] for f in FEATURES},
                "y_bound": Y_BOUND[family],
            },
            "secure_aggregation": {"enabled": secure},
        }
    )
    parts = [frame.iloc[i] for i in np.array_split(np.arange(len(frame)), [1200, 2600])]
    plan = plan_for(spec, PlanInputs(3, max(len(p) for p in parts)))
    assert isinstance(plan, GlmPlan)
    rng, params = np.random.default_rng(9), plan.initial
    for rounds in range(1, plan.max_rounds + 1):
        vectors = [plan.local(p, params, {}) for p in parts]
        summed = (
            np.sum(vectors, axis=0)
            if plan.secagg is None
            else simulate_secure_sum(
                vectors, plan.secagg.clipping_range, plan.secagg.quantization_range, rng
            )
        )
        params = plan.step(rounds, summed)
        if params is None:
            return rounds, plan.release(3)
    raise AssertionError("the fit did not stop within its iteration limit")


@pytest.mark.parametrize("secure", [False, True], ids=["exact", "secagg"])
@pytest.mark.parametrize("family", sorted(SM_FAMILY))
def test_rounds_at_most_pooled_iterations_plus_one(family, secure):
    frame = _cohort(family)
    pooled = sm.GLM(frame["y"], sm.add_constant(frame[FEATURES]), family=SM_FAMILY[family]).fit()
    rounds, released = _fit(family, secure, frame)
    assert released["status"] == "succeeded"
    assert rounds <= int(pooled.fit_history["iteration"]) + 1
    est = np.array([c["estimate"] for c in released["coefficients"].values()])
    se = np.array([c["std_error"] for c in released["coefficients"].values()])
    np.testing.assert_allclose(est, pooled.params, rtol=0, atol=TOLERANCE[secure])
    np.testing.assert_allclose(se, pooled.bse, rtol=TOLERANCE[secure])
    floor = released["convergence"]["quantisation_floor"]
    assert (floor > 0) is secure  # reported with every release under SecAgg+


def test_secagg_fit_stops_at_the_floor_not_at_an_unreachable_tolerance():
    _, released = _fit("poisson", True, _cohort("poisson"))
    conv = released["convergence"]
    # The job's tolerance (1e-10) is far below what the secure sum resolves: the fit
    # stopped because the decrement fell under the floor, and says so.
    assert conv["tolerance"] == 1e-10 < conv["decrement"]
    assert conv["stopped_at"] == "quantisation_floor"
    assert conv["decrement"] <= FLOOR_MULTIPLE * conv["quantisation_floor"]


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_null_start_sums_equal_the_sums_at_the_intercept_only_fit(family):
    frame = _cohort(family)
    x = np.column_stack([np.ones(len(frame)), frame[FEATURES].to_numpy()])
    y = frame["y"].to_numpy()
    at_zero = glm_local_statistics(x, y, np.zeros(x.shape[1]), family)
    start = glm_null_start(at_zero, family)
    assert start is not None
    beta, derived = start
    direct = glm_local_statistics(x, y, beta, family)
    ybar = y.mean()
    assert beta[0] == pytest.approx(
        np.log(ybar / (1 - ybar)) if family == "binomial" else np.log(ybar)
    )
    assert not beta[1:].any()
    np.testing.assert_allclose(derived, direct, rtol=1e-10, atol=1e-8)
    assert derived.shape == (glm_layout(x.shape[1]).size,)


def test_null_start_does_not_apply_to_gaussian_or_a_mean_on_the_boundary():
    x = np.column_stack([np.ones(50), np.linspace(-1, 1, 50)])
    zero = np.zeros(2)
    assert (
        glm_null_start(glm_local_statistics(x, np.ones(50), zero, "gaussian"), "gaussian") is None
    )
    assert (
        glm_null_start(glm_local_statistics(x, np.zeros(50), zero, "binomial"), "binomial") is None
    )
    assert glm_null_start(glm_local_statistics(x, np.zeros(50), zero, "poisson"), "poisson") is None


def test_a_strong_rare_binary_term_fits_without_a_false_separation_refusal():
    """Multiple births: 2 % of records, LBW odds about 100 times higher. From the
    intercept-only fit the first Newton step overshoots that term and pushes a hundred
    fitted probabilities to the boundary for one iteration; the fit must go on to the
    pooled answer, not refuse it as separation."""
    from federation.analytics.glm import glm_local_statistics
    from federation.analytics.glm_newton import glm_fit

    rng = np.random.default_rng(7)
    n = 5400
    multiple = rng.binomial(1, 0.02, n).astype(float)
    other = rng.normal(size=(n, 3))
    eta = -2.9 + 4.75 * multiple + other @ np.array([0.3, -0.2, 0.1])
    y = rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float)
    x = np.column_stack([np.ones(n), multiple, other])
    pooled = sm.GLM(y, x, family=sm.families.Binomial()).fit()
    fit = glm_fit(
        lambda b: glm_local_statistics(x, y, b, "binomial"),
        x.shape[1],
        "binomial",
        ["Intercept", "multiple", "a", "b", "c"],
    )
    est = np.array([fit.coefficients[name].estimate for name in fit.coefficients])
    np.testing.assert_allclose(est, pooled.params, rtol=1e-6, atol=1e-8)
    assert fit.iterations <= pooled.fit_history["iteration"] + 1
