# ruff: noqa: N806
"""Federated GLM (Newton/IRLS over summed node statistics) against pooled statsmodels fits."""

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from federation.analytics import (
    GlmRefusal,
    glm_fit,
    glm_layout,
    glm_local_statistics,
    glm_newton_step,
    glm_public_scale,
    glm_result,
)
from federation.analytics.design import DesignError, DesignSpec, build_design, design_from_job
from federation.analytics.scaling import scale_for_secagg, simulate_secure_sum, unscale
from federation.errors import FederationError, ValueRangeError
from federation.spec import parse_job_spec

FAMILIES = {
    "binomial": sm.families.Binomial(),
    "gaussian": sm.families.Gaussian(),
    "poisson": sm.families.Poisson(),
}
DESIGN = DesignSpec(
    features=("maternal_age", "parity", "smoking", "bmi_cat"),
    categorical={"parity": 1, "bmi_cat": 1},
    levels={"parity": [1, 2, 3], "bmi_cat": [0, 1, 2]},
)
#: Public bounds of |x| per term (data model: maternal_age <= 55; dummies and intercept 1).
TERM_BOUNDS = np.array([1.0, 55.0, 1.0, 1.0, 1.0, 1.0, 1.0])
#: SecAgg+ settings of the quantised runs: clipping range and 30-bit quantisation.
CLIP, QRANGE = 8.0, 2**30


def _cohort(n: int = 3000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "maternal_age": rng.integers(18, 45, n),
            "parity": rng.choice([1, 2, 3], n, p=[0.45, 0.35, 0.2]),
            "smoking": rng.binomial(1, 0.15, n),
            "bmi_cat": rng.choice([0, 1, 2], n, p=[0.2, 0.6, 0.2]),
        }
    )
    eta = (
        -2.6
        + 0.03 * (df.maternal_age - 30)
        - 0.3 * (df.parity == 2)
        + 0.2 * (df.parity == 3)
        + 0.8 * df.smoking
        + 0.5 * (df.bmi_cat == 0)
        + 0.1 * (df.bmi_cat == 2)
    )
    df["lbw"] = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    df["birth_weight_kg"] = (
        3.1 - 0.15 * df.smoking + 0.004 * df.maternal_age + rng.normal(0, 0.45, n)
    )
    df["visits"] = rng.poisson(np.exp(1.2 + 0.01 * df.maternal_age - 0.2 * df.smoking))
    return df


OUTCOME = {"binomial": "lbw", "gaussian": "birth_weight_kg", "poisson": "visits"}


def _nodes(df: pd.DataFrame, family: str) -> list[tuple[np.ndarray, np.ndarray]]:
    parts = np.array_split(np.arange(len(df)), [900, 2000])  # unequal nodes: 900/1100/1000
    return [(build_design(df.iloc[p], DESIGN), df[OUTCOME[family]].to_numpy()[p]) for p in parts]


def _pooled(df: pd.DataFrame, family: str):
    X = build_design(df, DESIGN)
    return sm.GLM(df[OUTCOME[family]].to_numpy(), X, family=FAMILIES[family]).fit(tol=1e-13)


def _exact_round(nodes, family):
    return lambda beta: sum(glm_local_statistics(X, y, beta, family) for X, y in nodes)


def _quantised_round(nodes, family, rng):
    y_bound = {"binomial": 1.0, "gaussian": 6.0, "poisson": 40.0}[family]

    def run(beta):
        scale = glm_public_scale(family, TERM_BOUNDS, 1200, beta, CLIP, y_bound=y_bound)
        sent = [
            scale_for_secagg(glm_local_statistics(X, y, beta, family), scale, CLIP)
            for X, y in nodes
        ]
        return unscale(simulate_secure_sum(sent, CLIP, QRANGE, rng), scale)

    return run


def _arrays(result):
    rows = list(result.coefficients.values())
    return np.array([r.estimate for r in rows]), np.array([r.std_error for r in rows])


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return _cohort()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_federated_newton_equals_pooled_statsmodels(cohort, family):
    nodes = _nodes(cohort, family)
    result = glm_fit(_exact_round(nodes, family), len(DESIGN.term_names), family, DESIGN.term_names)
    ref = _pooled(cohort, family)
    est, se = _arrays(result)
    np.testing.assert_allclose(est, ref.params, rtol=0, atol=1e-6)
    np.testing.assert_allclose(se, ref.bse, rtol=0, atol=1e-6)
    assert result.deviance == pytest.approx(ref.deviance, abs=1e-6)
    assert result.null_deviance == pytest.approx(ref.null_deviance, abs=1e-6)
    assert result.aic == pytest.approx(ref.aic, abs=1e-6)
    assert result.llf == pytest.approx(ref.llf, abs=1e-6)
    assert result.scale == pytest.approx(ref.scale, rel=1e-9)
    rows = list(result.coefficients.values())
    np.testing.assert_allclose([r.z for r in rows], ref.tvalues, atol=1e-5)
    np.testing.assert_allclose([r.p_value for r in rows], ref.pvalues, atol=1e-8)
    ci = ref.conf_int()
    np.testing.assert_allclose([r.ci_low for r in rows], ci[:, 0], atol=1e-6)
    np.testing.assert_allclose([r.ci_high for r in rows], ci[:, 1], atol=1e-6)
    assert result.n_obs == len(cohort) and result.df_resid == ref.df_resid
    assert result.converged and 1 <= result.iterations <= 10
    if family == "binomial":
        assert rows[1].odds_ratio == pytest.approx(np.exp(ref.params[1]), rel=1e-6)
        assert rows[1].or_ci_low == pytest.approx(np.exp(ci[1, 0]), rel=1e-6)
    else:
        assert rows[1].odds_ratio is None


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_quantised_secure_sum_stays_within_stated_tolerance(cohort, family):
    """Through simulated SecAgg+ (C = 8, 30 bits, 3 nodes): coefficients within 1e-4,
    standard errors within 1e-4 relative, deviance within 1e-2 (absolute)."""
    nodes = _nodes(cohort, family)
    rng = np.random.default_rng(11)
    result = glm_fit(
        _quantised_round(nodes, family, rng),
        len(DESIGN.term_names),
        family,
        DESIGN.term_names,
        tolerance=1e-6,
        rcond=1e-7,
    )
    ref = _pooled(cohort, family)
    est, se = _arrays(result)
    np.testing.assert_allclose(est, ref.params, rtol=0, atol=1e-4)
    np.testing.assert_allclose(se, ref.bse, rtol=1e-4)
    assert result.deviance == pytest.approx(ref.deviance, abs=1e-2)
    assert result.aic == pytest.approx(ref.aic, abs=1e-2)


def test_simulated_secure_sum_matches_flower_quantisation():
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    rng = np.random.default_rng(0)
    vecs = [rng.uniform(-8, 8, 50) for _ in range(3)]
    ours = simulate_secure_sum(vecs, 8.0, 2**22, rng)
    flower_q = sum(quantize([v], 8.0, 2**22)[0].astype(np.int64) for v in vecs)
    flower = dequantize([flower_q], 8.0, 2**22)[0] - 2 * 8.0
    np.testing.assert_allclose(ours, sum(vecs), atol=3 * 16 / 2**22)
    np.testing.assert_allclose(flower, ours, atol=2 * 3 * 16 / 2**22)


def test_scale_check_refuses_out_of_range_entry():
    with pytest.raises(ValueRangeError, match="clipping range"):
        scale_for_secagg(np.array([1.0, 100.0]), np.array([1.0, 1.0]), 8.0)
    with pytest.raises(ValueRangeError, match="NaN"):
        scale_for_secagg(np.array([np.nan]), 1.0, 8.0)
    # a local vector scaled by the public bound always fits
    df = _cohort(500)
    X, y = build_design(df, DESIGN), df.lbw.to_numpy()
    beta = np.full(7, 0.5)
    vec = glm_local_statistics(X, y, beta, "binomial")
    scaled = scale_for_secagg(vec, glm_public_scale("binomial", TERM_BOUNDS, 500, beta, CLIP), CLIP)
    assert np.abs(scaled).max() <= CLIP


def test_treatment_coding_names_and_reference_level(cohort):
    assert DESIGN.term_names == [
        "(Intercept)",
        "maternal_age",
        "parity[T.2]",
        "parity[T.3]",
        "smoking",
        "bmi_cat[T.0]",
        "bmi_cat[T.2]",
    ]
    X = build_design(cohort.head(6), DESIGN)
    parity = cohort.parity.head(6).to_numpy()
    np.testing.assert_array_equal(X[:, 2], parity == 2)
    np.testing.assert_array_equal(X[:, 3], parity == 3)
    assert (X[parity == 1][:, 2:4] == 0).all()  # the reference level is all zeros
    # a node that lacks a level still builds the same columns
    assert build_design(cohort[cohort.parity == 1].head(5), DESIGN).shape == (5, 7)


def test_design_refusals():
    df = _cohort(50)
    with pytest.raises(DesignError, match="not among the declared levels"):
        build_design(df.assign(parity=4), DESIGN)
    with pytest.raises(DesignError, match="needs declared levels"):
        DesignSpec(features=("parity",), categorical={"parity": 1})
    with pytest.raises(DesignError, match="reference level"):
        DesignSpec(features=("parity",), categorical={"parity": 9}, levels={"parity": [1, 2]})
    with pytest.raises(DesignError, match="missing"):
        build_design(df.assign(maternal_age=np.nan), DESIGN)


def test_design_from_job_spec():
    spec = parse_job_spec(
        {
            "kind": "glm",
            "features": ["maternal_age", "parity"],
            "label": "lbw",
            "glm": {"categorical": {"parity": 1}, "levels": {"parity": [1, 2, 3]}},
        }
    )
    design = design_from_job(spec.glm, spec.features)
    assert design.term_names == ["(Intercept)", "maternal_age", "parity[T.2]", "parity[T.3]"]


def test_result_json_shape(cohort):
    nodes = _nodes(cohort, "binomial")
    result = glm_fit(_exact_round(nodes, "binomial"), 7, "binomial", DESIGN.term_names)
    doc = json.loads(json.dumps(result.to_json_dict()))
    assert set(doc["coefficients"]) == set(DESIGN.term_names)
    assert set(doc["coefficients"]["smoking"]) == {
        "estimate",
        "std_error",
        "z",
        "p_value",
        "ci_low",
        "ci_high",
        "odds_ratio",
        "or_ci_low",
        "or_ci_high",
    }
    for key in ("deviance", "null_deviance", "aic", "n_obs", "df_resid", "iterations", "converged"):
        assert key in doc


def test_layout_round_trip():
    layout = glm_layout(3)
    h = np.array([[4.0, 1, 2], [1, 5, 3], [2, 3, 6]])
    vec = layout.pack(np.array([1.0, 2, 3]), h, {"n": 10.0, "deviance": 2.5})
    assert vec.shape == (layout.size,) and layout.size == 3 + 6 + 7
    g, h2, sc = layout.unpack(vec)
    np.testing.assert_array_equal(h2, h)
    assert sc["n"] == 10 and sc["deviance"] == 2.5 and vec[layout.scalar_index("n")] == 10


# ---- refusals -------------------------------------------------------------------------


def test_refuses_too_few_events_at_node(cohort):
    X, y = _nodes(cohort, "binomial")[0]
    with pytest.raises(GlmRefusal) as err:
        glm_local_statistics(X, y, np.zeros(7), "binomial", min_events=int(y.sum()) + 1)
    assert err.value.cause == "too_few_events_at_node"
    assert isinstance(err.value, FederationError)


def test_refuses_too_few_events_per_parameter(cohort):
    nodes = _nodes(cohort, "binomial")
    events = sum(int(y.sum()) for _, y in nodes)
    with pytest.raises(GlmRefusal) as err:
        glm_fit(
            _exact_round(nodes, "binomial"),
            7,
            "binomial",
            DESIGN.term_names,
            min_events_per_parameter=events / 7 + 1,
        )
    assert err.value.cause == "too_few_events_per_parameter"


def _separated(quasi: bool):
    rng = np.random.default_rng(3)
    n = 600
    x = rng.normal(size=n)
    y = (x > 0).astype(float)
    if quasi:  # complete separation for one group only: group g=1 always has y=1
        g = rng.binomial(1, 0.3, n).astype(float)
        y = np.where(g == 1, 1.0, rng.binomial(1, 0.4, n))
        X = np.column_stack([np.ones(n), rng.normal(size=n), g])
    else:
        X = np.column_stack([np.ones(n), x])
    parts = np.array_split(np.arange(n), 3)
    return [(X[p], y[p]) for p in parts], X.shape[1]


@pytest.mark.parametrize("quasi", [False, True], ids=["complete", "quasi_complete"])
def test_refuses_separation(quasi):
    nodes, p = _separated(quasi)
    with pytest.raises(GlmRefusal) as err:
        glm_fit(_exact_round(nodes, "binomial"), p, "binomial", [f"x{i}" for i in range(p)])
    assert err.value.cause == "separation"


@pytest.mark.parametrize("kind", ["constant", "collinear"])
def test_refuses_singular_design(cohort, kind):
    nodes = _nodes(cohort, "binomial")
    if kind == "constant":  # a second constant column next to the intercept
        nodes = [(np.column_stack([X, np.ones(len(X))]), y) for X, y in nodes]
    else:  # a column that is a linear combination of two others
        nodes = [(np.column_stack([X, 2 * X[:, 1] - X[:, 4]]), y) for X, y in nodes]
    with pytest.raises(GlmRefusal) as err:
        glm_fit(_exact_round(nodes, "binomial"), 8, "binomial", [f"t{i}" for i in range(8)])
    assert err.value.cause == "singular_design"


def test_refuses_bad_outcome():
    X = np.ones((4, 1))
    with pytest.raises(GlmRefusal) as err:
        glm_local_statistics(X, np.array([0, 1, 2, 0]), np.zeros(1), "binomial")
    assert err.value.cause == "invalid_outcome"


def test_newton_step_reports_and_result_needs_matching_names(cohort):
    nodes = _nodes(cohort, "gaussian")
    beta = np.zeros(7)
    summed = _exact_round(nodes, "gaussian")(beta)
    beta1, info = glm_newton_step(summed, beta, "gaussian")
    assert info.iteration == 0 and not info.converged and info.max_step > 0
    summed1 = _exact_round(nodes, "gaussian")(beta1)
    beta2, info2 = glm_newton_step(summed1, beta1, "gaussian", previous=info)
    assert info2.converged and np.array_equal(beta2, beta1)  # gaussian: one step is exact
    with pytest.raises(ValueError):
        glm_result(summed1, beta1, "gaussian", ["a"], 1)


def test_dp_glm_noise_is_calibrated_and_large_epsilon_fit_is_close(cohort):
    from federation.analytics.dp_noise import calibrate_gaussian
    from federation.analytics.glm import glm_layout
    from federation.analytics.glm_dp import glm_clip_rows, glm_dp_perturb

    nodes = [
        (glm_clip_rows(X / np.r_[1, 55, 1, 1, 1, 1, 1], 2.0), y)
        for X, y in _nodes(cohort, "binomial")
    ]
    beta = np.zeros(7)
    exact = _exact_round(nodes, "binomial")(beta)
    draws = np.array(
        [
            glm_dp_perturb(
                exact,
                7,
                "binomial",
                x_norm_bound=2.0,
                epsilon=1.0,
                delta=1e-6,
                n_releases=10,
                eta_bound=10.0,
            )[0][0]
            - exact[0]
            for _ in range(1000)
        ]
    )
    sigma = calibrate_gaussian(float(np.sqrt(7 * 10)), 1.0, 1e-6)
    # The noise is OpenDP's (not seedable); 1,000 draws put the SD within 15 % (6.7 SEs).
    assert abs(draws.std(ddof=1) / (sigma * 2.0) - 1) < 0.15  # score block: sens = B * 1
    ref = glm_fit(_exact_round(nodes, "binomial"), 7, "binomial", DESIGN.term_names)

    def noisy_round(b):
        return glm_dp_perturb(
            _exact_round(nodes, "binomial")(b),
            7,
            "binomial",
            x_norm_bound=2.0,
            epsilon=100.0,  # the largest epsilon a job spec accepts
            delta=1e-6,
            n_releases=10,
            eta_bound=10.0,
        )[0]

    # The loop is told the noise, as a DP plan tells it: it takes every planned round.
    big = calibrate_gaussian(float(np.sqrt(7 * 10)), 100.0, 1e-6)
    layout, dev = glm_layout(7), 2 * (10 + np.log(2))
    scales = np.zeros(layout.size)
    scales[:7], scales[7 : 7 + layout.n_packed] = 2.0, 0.25 * 2.0**2
    for name, sens in (
        ("deviance", dev),
        ("loglik", dev / 2),
        ("n", 1),
        ("sum_y", 1),
        ("sum_y2", 1),
    ):
        scales[layout.scalar_index(name)] = sens

    fit = glm_fit(
        noisy_round,
        7,
        "binomial",
        DESIGN.term_names,
        max_iterations=9,
        noise_sd=lambda b: big * scales,
        dp=True,
    )
    assert fit.iterations == 9 and fit.convergence["stopped_at"] == "planned_rounds"
    assert fit.convergence["averaged_rounds"] == 5
    # At the optimum each round's score noise moves the step by H^-1 e; the mean of the
    # last 5 broadcasts carries a fifth of that variance. Within 5 of those SDs of exact:
    ref_est = _arrays(ref)[0]
    _, hess, _ = layout.unpack(_exact_round(nodes, "binomial")(ref_est))
    inv = np.linalg.inv(hess)
    dp_sd = np.sqrt(np.diag(inv @ np.diag((big * scales[:7]) ** 2) @ inv) / 5)
    est, _ = _arrays(fit)
    assert np.all(np.abs(est - ref_est) < 5 * dp_sd), (est - ref_est) / dp_sd
