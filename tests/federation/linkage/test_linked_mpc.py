"""Linked GLM and statistics by PSI + MPC equal the pooled inner join; failures fail loudly."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from federation.analytics.stats import stats_finalize, stats_layout
from federation.linkage.errors import LinkageError, LinkageRefusal
from federation.linkage.jobs import LinkedGlmJob, Term
from federation.linkage.launch import PartyRun, run_local_parties
from federation.linkage.linked_run import HolderTable, linked_glm, linked_stats, locate_columns

RANGES = {"bmi": (14.0, 40.0), "age": (16.0, 48.0), "dairy": (0.0, 600.0), "supp": (0.0, 1.0)}


def _holders(n: int, seed: int, family: str) -> tuple[list[HolderTable], pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"p{i:05d}" for i in range(n)]
    bmi, age = rng.uniform(16, 34, n), rng.uniform(18, 44, n)
    dairy, supp = rng.uniform(0, 500, n), (rng.random(n) < 0.4).astype(float)
    eta = -1.0 + 0.08 * (22 - bmi) + 0.03 * (age - 30) - 0.002 * dairy + 0.5 * supp
    y = {
        "binomial": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float),
        "poisson": rng.poisson(np.exp(eta + 1)).astype(float),
        "gaussian": 3000 + 200 * eta + rng.normal(0, 300, n),
    }[family]
    full = pd.DataFrame({"subject": ids, "y": y, "bmi": bmi, "age": age, "dairy": dairy,
                         "supp": supp})
    hosp = full[["subject", "y", "bmi", "age"]].iloc[: int(n * 0.9)]
    dairy_co = full[["subject", "dairy"]].iloc[int(n * 0.1):]
    drug = full[["subject", "supp"]].sample(frac=0.85, random_state=seed)
    # A resident only the drugstore knows, and one only the dairy company knows.
    drug = pd.concat([drug, pd.DataFrame({"subject": ["stranger-1"], "supp": [1.0]})])
    dairy_co = pd.concat([dairy_co, pd.DataFrame({"subject": ["stranger-2"], "dairy": [50.0]})])
    holders = [HolderTable("hospital", hosp), HolderTable("dairy", dairy_co),
               HolderTable("drugstore", drug)]
    pooled = hosp.merge(dairy_co, on="subject").merge(drug, on="subject")
    return holders, pooled


@pytest.mark.parametrize("family", ["binomial", "gaussian", "poisson"])
def test_linked_glm_equals_the_pooled_inner_join(family: str) -> None:
    holders, pooled = _holders(400, 7, family)
    res = linked_glm(holders, key="subject", outcome="y", terms=["bmi", "age", "dairy", "supp"],
                     family=family, ranges=RANGES)
    fam = {"binomial": sm.families.Binomial(), "gaussian": sm.families.Gaussian(),
           "poisson": sm.families.Poisson()}[family]
    ref = sm.GLM(pooled["y"], sm.add_constant(pooled[["bmi", "age", "dairy", "supp"]]),
                 family=fam).fit()
    names = ["Intercept", "bmi", "age", "dairy", "supp"]
    est = np.array([res["coefficients"][k]["estimate"] for k in names])
    se = np.array([res["coefficients"][k]["std_error"] for k in names])
    np.testing.assert_allclose(est, ref.params.to_numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(se, ref.bse.to_numpy(), rtol=1e-6, atol=1e-6)
    assert res["linked_n"] == len(pooled) == res["n_obs"]
    assert "stranger-1" not in set(pooled["subject"])  # only at one holder: never linked
    assert res["holders"] == {"hospital": ["y", "bmi", "age"], "dairy": ["dairy"],
                              "drugstore": ["supp"]}
    if family != "binomial":
        assert res["deviance"] == pytest.approx(ref.deviance, rel=1e-6)
    else:
        assert res["coefficients"]["supp"]["odds_ratio"] == pytest.approx(
            float(np.exp(ref.params["supp"])), rel=1e-6)


def test_linked_stats_equal_the_pooled_inner_join() -> None:
    rng = np.random.default_rng(11)
    n = 300
    ids = [f"m{i:04d}" for i in range(n)]
    group = rng.choice(["lbw", "normal"], n, p=[0.2, 0.8])
    w4 = np.where(group == "lbw", 6000.0, 7000.0) + rng.normal(0, 500, n)
    w4[rng.random(n) < 0.1] = np.nan  # a checkup not attended
    hosp = pd.DataFrame({"mother": ids, "bw_group": group}).iloc[:280]
    city = pd.DataFrame({"mother": ids, "weight_4m": w4}).iloc[20:]
    holders = [HolderTable("hospital", hosp), HolderTable("city", city),
               HolderTable("clinic", pd.DataFrame({"mother": ids[:5], "x": np.ones(5)}))]
    vec, linked_n, who = linked_stats(holders[:2], key="mother", group_by=["bw_group"],
                                      levels={"bw_group": ["lbw", "normal"]},
                                      variables=["weight_4m"])
    pooled = hosp.merge(city, on="mother")
    assert linked_n == len(pooled) == 260
    assert who == {"hospital": ["bw_group"], "city": ["weight_4m"]}

    class Spec:
        group_by = ["bw_group"]
        levels = {"bw_group": ["lbw", "normal"]}
        variables = ["weight_4m"]
        bounds: dict = {}
        measures = ["count", "mean", "variance"]
        bins = None
        histogram_bins = 10

    layout = stats_layout(Spec())
    released = stats_finalize(vec, layout, Spec(), min_cell_count=5).to_json_dict()
    for lv in ["lbw", "normal"]:
        cell = next(c for c in released["cells"] if c["group"]["bw_group"] == lv)
        sub = pooled.loc[pooled["bw_group"] == lv, "weight_4m"]
        assert cell["n"] == len(sub)
        got = cell["variables"]["weight_4m"]
        assert got["count"] == sub.count()
        assert got["mean"] == pytest.approx(sub.mean(), rel=1e-9)
        assert got["sd"] == pytest.approx(sub.std(), rel=1e-6)


def test_columns_no_holder_holds_are_named() -> None:
    holders, _ = _holders(50, 1, "binomial")
    with pytest.raises(LinkageRefusal, match="'ldl'"):
        locate_columns(holders, ["bmi", "ldl"], "subject")
    assert locate_columns(holders, ["dairy.dairy"], "subject") == {"dairy.dairy": (1, "dairy")}


def test_two_parties_are_refused() -> None:
    job = LinkedGlmJob("gaussian", (Term("Intercept", 0), Term("x", 1)), 0, 10)
    with pytest.raises(LinkageRefusal) as info:
        run_local_parties(job, [{"x": np.ones((10, 1)), "y": np.ones(10)}, {"x": np.ones((10, 1))}],
                          ["a", "b"])
    assert info.value.cause == "too_few_parties"


def test_a_party_killed_mid_computation_fails_the_job_with_its_reason() -> None:
    holders, _ = _holders(300, 3, "binomial")

    def kill_after_first_round(runs: list[PartyRun]) -> None:
        def watch() -> None:
            victim = runs[1]
            while victim.process.poll() is None:
                if "round" in victim.stdout.read_text():
                    victim.process.kill()
                    return
                time.sleep(0.05)

        threading.Thread(target=watch, daemon=True).start()

    with pytest.raises(LinkageError, match="party dairy was lost mid-computation"):
        linked_glm(holders, key="subject", outcome="y", terms=["bmi", "dairy", "supp"],
                   family="binomial", ranges=RANGES, on_start=kill_after_first_round)
