"""GLM formulas: the federated fit of a formula lines up with statsmodels' formula GLM.

Every node builds its design from the formula and the *public* levels, so a node that
lacks a level still sends the same columns; the plan (the one both engines run) is driven
round by round over three nodes, exactly or through simulated SecAgg+, and the released
coefficients are compared by name with ``statsmodels.formula.api.glm`` on the pooled data.
"""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from federation.analytics.design import DesignError
from federation.analytics.formula import parse_formula
from federation.analytics.glm_round import glm_formula_design
from federation.analytics.scaling import simulate_secure_sum
from federation.errors import JobSpecError
from federation.plans import PlanInputs, plan_for
from federation.spec import parse_job_spec

PURPOSE = {"duo": ["HMB"], "project": "p", "requester": "r", "requester_type": "academic"}
FORMULA = "lbw ~ bmi_pre + smoking + C(parity_group, Treatment(reference=2)) + maternal_age:smoking"
DECLARED = {"bmi_pre": (12.0, 50.0), "maternal_age": (13.0, 55.0), "smoking": (0.0, 1.0)}


def _births(seed: int = 3) -> list[pd.DataFrame]:
    """Three nodes' births; the smallest node has no parity group 4."""
    rng = np.random.default_rng(seed)
    frames = []
    for n, groups in ((500, [1, 2, 3, 4]), (450, [1, 2, 3, 4]), (160, [1, 2, 3])):
        age = rng.integers(18, 45, n)
        bmi = rng.uniform(16, 35, n)
        smoking = (rng.random(n) < 0.2).astype(int)
        pg = rng.choice(groups, n)
        eta = -2.0 + 0.05 * (bmi - 22) + 0.6 * smoking + 0.2 * (pg == 1) - 0.01 * age * smoking
        lbw = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
        frames.append(
            pd.DataFrame(
                {"maternal_age": age, "bmi_pre": bmi, "smoking": smoking, "parity_group": pg}
            ).assign(lbw=lbw)
        )
    return frames


def _spec(glm: dict, **extra):
    return parse_job_spec(
        {"kind": "glm", "purpose": PURPOSE, "secure_aggregation": {"enabled": False}, **extra}
        | {"glm": glm}
    )


def _drive(spec, frames, declared, secagg_seed: int | None = None) -> dict:
    """Run the GLM plan over ``frames``: each node's vector from the plan, summed, stepped."""
    inputs = PlanInputs(
        n_nodes=len(frames), max_records=max(len(f) for f in frames), declared=declared
    )
    server = plan_for(spec, inputs)
    nodes = [plan_for(spec, inputs) for _ in frames]  # one plan per node, as in its process
    rng = np.random.default_rng(secagg_seed)

    def secure_sum(vectors: list[np.ndarray]) -> np.ndarray:
        if server.secagg is None:
            return np.sum(vectors, axis=0)
        cfg = server.secagg
        return simulate_secure_sum(vectors, cfg.clipping_range, cfg.quantization_range, rng)

    params, done = server.initial, 0
    while params is not None and done < server.max_rounds:
        done += 1
        sent = [p.local(f, params, {}) for p, f in zip(nodes, frames, strict=True)]
        params = server.step(done, secure_sum(sent))
    return server.release(len(frames))


def _compare(result: dict, ref, atol: float) -> None:
    coefs = result["coefficients"]
    assert sorted(coefs) == sorted(ref.params.index)
    for name, row in coefs.items():
        assert row["estimate"] == pytest.approx(ref.params[name], abs=atol), name
        assert row["std_error"] == pytest.approx(ref.bse[name], abs=atol), name
    assert result["deviance"] == pytest.approx(ref.deviance, abs=max(atol, 1e-6) * 100)
    assert result["df_resid"] == pytest.approx(ref.df_resid)


def test_formula_fit_equals_statsmodels_formula_glm():
    frames = _births()
    spec = _spec({"formula": FORMULA, "levels": {"parity_group": [1, 2, 3, 4]}})
    assert spec.label == "lbw"
    assert set(spec.features) == {"bmi_pre", "smoking", "parity_group", "maternal_age"}
    result = _drive(spec, frames, DECLARED)
    assert result["status"] == "succeeded" and result["formula"] == FORMULA
    ref = smf.glm(FORMULA, pd.concat(frames), family=sm.families.Binomial()).fit()
    _compare(result, ref, 1e-6)
    assert "C(parity_group, Treatment(reference=2))[T.1]" in result["coefficients"]
    assert "maternal_age:smoking" in result["coefficients"]
    assert result["null_deviance"] == pytest.approx(ref.null_deviance, abs=1e-6)
    assert result["llf"] == pytest.approx(ref.llf, abs=1e-6)
    assert result["aic"] == pytest.approx(ref.aic, abs=1e-6)


def test_formula_fit_through_secagg_stays_within_tolerance():
    """Simulated SecAgg+ (the spec's clipping range, 30-bit quantisation): coefficients
    and standard errors within 1e-3 of statsmodels'."""
    frames = _births()
    spec = parse_job_spec(
        {
            "kind": "glm",
            "purpose": PURPOSE,
            "glm": {"formula": FORMULA, "levels": {"parity_group": [1, 2, 3, 4]}},
        }
    )
    result = _drive(spec, frames, DECLARED, secagg_seed=11)
    assert result["secagg_resolution"] > 0
    ref = smf.glm(FORMULA, pd.concat(frames), family=sm.families.Binomial()).fit()
    _compare(result, ref, 1e-3)


def test_rate_model_with_offset_and_frequency_weights_equals_statsmodels():
    rng = np.random.default_rng(8)
    frames = []
    for n in (300, 260, 340):
        x = rng.uniform(0, 2, n)
        area = rng.choice(["north", "south", "centre"], n)
        exposure = rng.uniform(0.5, 4.0, n)
        weight = rng.integers(1, 4, n)
        mu = exposure * np.exp(0.3 + 0.4 * x + 0.3 * (area == "north"))
        frames.append(
            pd.DataFrame(
                {"cases": rng.poisson(mu), "x": x, "area": area, "exposure": exposure, "w": weight}
            )
        )
    formula = "cases ~ x + C(area, Treatment(reference='centre')) + offset(log(exposure))"
    spec = _spec(
        {
            "family": "poisson",
            "formula": formula,
            "weights": "w",
            "levels": {"area": ["centre", "north", "south"]},
            "bounds": {"x": [0.0, 2.0], "exposure": [0.5, 4.0], "w": [0.0, 3.0]},
            "y_bound": 60.0,
        }
    )
    assert set(spec.features) == {"x", "area", "exposure", "w"}
    result = _drive(spec, frames, {})
    pooled = pd.concat(frames, ignore_index=True)
    ref = smf.glm(
        formula.replace(" + offset(log(exposure))", ""),
        pooled,
        family=sm.families.Poisson(),
        offset=np.log(pooled.exposure),
        freq_weights=pooled.w,
    ).fit()
    _compare(result, ref, 1e-6)
    assert result["llf"] == pytest.approx(ref.llf, abs=1e-6)
    assert result["n_obs"] == int(pooled.w.sum())
    assert result["null_deviance"] is None  # the sums do not give the offset's null model


def test_levels_are_public_not_learnt_from_a_node():
    """A node holding two of four levels builds the same four-level columns."""
    spec = _spec({"formula": FORMULA, "levels": {"parity_group": [1, 2, 3, 4]}})
    design = glm_formula_design(spec)
    small = _births()[2].query("parity_group in (1, 3)")
    x, offset, weights = design.matrices(small)
    assert x.shape[1] == len(design.term_names) == 7 and offset is None and weights is None
    assert not x[:, design.term_names.index("C(parity_group, Treatment(reference=2))[T.4]")].any()
    with pytest.raises(DesignError, match="not among the public levels"):
        design.matrices(small.assign(parity_group=5))


def test_data_model_categories_serve_as_public_levels():
    """A flag column of the data model has levels 0, 1 without a [glm.levels] entry."""
    spec = _spec({"formula": "lbw ~ C(smoking) + bmi_pre"}, domain="births")
    assert glm_formula_design(spec).term_names == ["Intercept", "C(smoking)[T.1]", "bmi_pre"]
    with pytest.raises(DesignError, match="needs its public levels"):
        glm_formula_design(_spec({"formula": "lbw ~ C(parity)"}))


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("lbw ~ __import__('os').system('true')", "glm.formula"),
        ("lbw ~ exp(__import__('os').getpid())", "only a column name"),
        ("lbw ~ I(bmi_pre ** 2)", "I\\(\\) is not allowed"),
        ("lbw ~ np.log(bmi_pre)", "a term is a column"),
        ("lbw ~ scale(bmi_pre)", "scale\\(\\) is not allowed"),
        ("lbw ~ C(parity, Sum)", "the only contrast is Treatment"),
        ("lbw ~ C(parity, levels=[1, 2])", "levels come from"),
        ("lbw ~ offset(x) + offset(y)", "at most one offset"),
        ("lbw + x ~ y", "one column name"),
        ("lbw ~ lbw", "also a term"),
        ("lbw ~ x ~ y", "one '~'"),
    ],
)
def test_bad_formulas_are_refused_before_evaluation(formula, message):
    with pytest.raises(DesignError, match=message):
        parse_formula(formula)
    with pytest.raises(JobSpecError) as err:
        _spec({"formula": formula})
    assert err.value.field.startswith("glm")


def test_formula_spec_rules():
    with pytest.raises(JobSpecError, match="leave them out"):
        _spec({"formula": "lbw ~ bmi_pre"}, features=["maternal_age"])
    with pytest.raises(JobSpecError, match="write C\\(column\\)"):
        _spec({"formula": "lbw ~ bmi_pre", "categorical": {"parity": 2}})
    spec = _spec({"formula": "lbw ~ bmi_pre", "weights": "w"})
    assert "w" in spec.columns() and "w" in spec.to_policy_request("j").features
