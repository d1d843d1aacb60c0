# ruff: noqa: N806
"""Federated statistics: exact pooled values, calibrated DP noise, suppression, quantiles."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from federation.analytics.disclosure import suppress_cells, table_lines
from federation.analytics.dp_noise import (
    DpConfig,
    calibrate_gaussian,
    calibrate_laplace,
    discrete_gaussian_noise,
    epsilon_for_gaussian,
    gaussian_noise,
    laplace_noise,
)
from federation.analytics.scaling import scale_for_secagg, simulate_secure_sum, unscale
from federation.analytics.stats import StatsError, stats_finalize, stats_layout, stats_local
from federation.spec import parse_job_spec
from tests.noise_scale import assert_unit_normal

LEVELS = {"year": [2015, 2016, 2017], "ftype": ["hospital", "clinic", "midwife"]}


def _births(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "year": rng.choice([2015, 2016, 2017], n),
            "ftype": rng.choice(["hospital", "clinic", "midwife"], n, p=[0.6, 0.38, 0.02]),
            "lbw": rng.binomial(1, 0.09, n),
            "bw": rng.normal(3000, 450, n).clip(300, 6000),
        }
    )


def _spec(**stats):
    base = {
        "measures": ["count", "sum", "mean", "variance", "proportion", "quantile", "histogram"],
        "variables": ["lbw", "bw"],
        "group_by": ["year", "ftype"],
        "levels": LEVELS,
        "bounds": {"lbw": [0, 1], "bw": [300, 6000]},
        "histogram_bins": 570,
    }
    return parse_job_spec({"kind": "stats", "stats": {**base, **stats}})


def _three_nodes(df, spec, dp=None):
    parts = np.array_split(np.arange(len(df)), [800, 2100])
    out = [stats_local(df.iloc[p], spec, dp=dp) for p in parts]
    return sum(v for v, _ in out), out[0][1]


@pytest.fixture(scope="module")
def births():
    return _births()


def test_three_nodes_equal_pooled_exact_values(births):
    spec = _spec()
    summed, layout = _three_nodes(births, spec)
    res = stats_finalize(summed, layout, spec, min_cell_count=0)
    assert res.suppressed == []
    for year in LEVELS["year"]:
        for ftype in LEVELS["ftype"]:
            sub = births[(births.year == year) & (births.ftype == ftype)]
            cell = res.cell(year=year, ftype=ftype)
            assert cell["n"] == len(sub)
            bw = cell["variables"]["bw"]
            assert bw["sum"] == pytest.approx(sub.bw.sum(), rel=1e-12)
            assert bw["mean"] == pytest.approx(sub.bw.mean(), rel=1e-12)
            assert bw["variance"] == pytest.approx(sub.bw.var(ddof=1), rel=1e-9)
            half = sps.t.ppf(0.975, len(sub) - 1) * sub.bw.std(ddof=1) / math.sqrt(len(sub))
            assert bw["mean_ci"] == pytest.approx([sub.bw.mean() - half, sub.bw.mean() + half])
            lbw = cell["variables"]["lbw"]
            assert lbw["proportion"] == pytest.approx(sub.lbw.mean(), rel=1e-12)
            from statsmodels.stats.proportion import proportion_confint

            wilson = proportion_confint(sub.lbw.sum(), len(sub), method="wilson")
            assert lbw["proportion_ci"] == pytest.approx(list(wilson), abs=1e-12)
    # margins: LBW rate by year over all facility types, and the grand total
    for year in LEVELS["year"]:
        sub = births[births.year == year]
        assert res.cell(year=year)["variables"]["lbw"]["proportion"] == pytest.approx(
            sub.lbw.mean()
        )
    assert res.cell()["n"] == len(births)
    assert res.cell()["variables"]["bw"]["mean"] == pytest.approx(births.bw.mean(), rel=1e-12)
    assert res.dp is None and res.unmatched_rows == 0
    json.dumps(res.to_json_dict())


def test_quantised_secure_sum_of_stats(births):
    spec = _spec(group_by=["year"])
    parts = np.array_split(np.arange(len(births)), 3)
    vecs = [stats_local(births.iloc[p], spec)[0] for p in parts]
    layout = stats_layout(spec)
    # public scale: max rows per node x the per-row bound of each block
    scale = 1200 * np.maximum(layout.block_scales(), 1.0) / 8.0
    got = unscale(
        simulate_secure_sum(
            [scale_for_secagg(v, scale, 8.0) for v in vecs], 8.0, 2**30, np.random.default_rng(1)
        ),
        scale,
    )
    exact = sum(vecs)
    # absolute error per entry about K * 2C / 2^30 * scale
    assert np.all(np.abs(got - exact) <= 3 * 16 / 2**30 * scale + 1e-9)
    res = stats_finalize(got, layout, spec, min_cell_count=5)
    assert res.cell()["variables"]["bw"]["mean"] == pytest.approx(births.bw.mean(), rel=1e-6)


def test_levels_are_public_and_unmatched_rows_counted(births):
    spec = _spec(group_by=["ftype"], levels={"ftype": ["hospital", "clinic"]})
    summed, layout = _three_nodes(births, spec)
    res = stats_finalize(summed, layout, spec, min_cell_count=5)
    assert res.unmatched_rows == (births.ftype == "midwife").sum()
    assert [c["group"]["ftype"] for c in res.cells] == ["hospital", "clinic", "(all)"]
    with pytest.raises(StatsError, match="declared"):
        stats_layout(_spec(group_by=["ftype"], levels={}))


def test_quantile_from_histogram():
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"bw": rng.normal(3000, 450, 20000).clip(300, 6000)})
    spec = parse_job_spec(
        {
            "kind": "stats",
            "stats": {
                "measures": ["count", "quantile"],
                "variables": ["bw"],
                "bins": list(range(0, 6001, 50)),
                "quantiles": [0.1, 0.5, 0.9],
            },
        }
    )
    summed, layout = _three_nodes(df, spec)
    q = stats_finalize(summed, layout, spec, 10).cell()["variables"]["bw"]["quantiles"]
    for p in (0.1, 0.5, 0.9):  # linear interpolation within 50 g bins
        assert q[f"{p:g}"] == pytest.approx(np.quantile(df.bw, p), abs=5)
    # an exactly known case: 10 values evenly in one bin
    df2 = pd.DataFrame({"bw": [100.0] * 4 + [150.0] * 4})
    spec2 = parse_job_spec(
        {
            "kind": "stats",
            "stats": {
                "measures": ["quantile"],
                "variables": ["bw"],
                "bins": [0, 100, 200],
                "quantiles": [0.25],
            },
        }
    )
    v, lay = stats_local(df2, spec2)
    # all 8 values in [100, 200]: the 0.25 quantile is 100 + (2 / 8) * 100
    assert stats_finalize(v, lay, spec2, 1).cell()["variables"]["bw"]["quantiles"]["0.25"] == 125


# ---- disclosure control ---------------------------------------------------------------


def _table(c):
    c = np.asarray(c)
    keys, lines = table_lines(c.shape)
    counts = {}
    for key in keys:
        idx = tuple(slice(None) if k is None else k for k in key)
        counts[key] = float(np.sum(c[idx]))
    return counts, lines


def _derivable(counts, lines, hidden):
    """Return hidden keys that one line gives away by subtraction."""
    return [
        k for line in lines for k in line if k in hidden and sum(x in hidden for x in line) == 1
    ]


def test_primary_and_complementary_suppression():
    counts, lines = _table([[50, 3, 40], [60, 70, 80], [90, 20, 30]])
    sup = suppress_cells(counts, lines, 10)
    by_key = {s.key: s.reason for s in sup}
    assert by_key[(0, 1)] == "primary"
    assert by_key[(0, 2)] == "complementary"  # smallest other cell of row 0 (40 < 50)
    assert by_key[(2, 1)] == "complementary"  # smallest other cell of column 1 (20 < 70)
    assert by_key[(2, 2)] == "complementary"  # then column 2 / row 2 need a partner too
    assert len(sup) == 4
    assert _derivable(counts, lines, set(by_key)) == []


def test_suppression_fixed_point_on_many_random_tables():
    rng = np.random.default_rng(2)
    for _ in range(200):
        c = rng.integers(0, 30, size=(rng.integers(1, 6), rng.integers(1, 6)))
        counts, lines = _table(c)
        hidden = {s.key for s in suppress_cells(counts, lines, 8)}
        assert _derivable(counts, lines, hidden) == []
        assert all(k in hidden for k, n in counts.items() if 0 < n < 8)


def test_one_dimensional_table_and_results_list_suppression(births):
    df = births.copy()
    spec = _spec(
        group_by=["ftype"],
        levels={"ftype": ["hospital", "clinic", "midwife"]},
        measures=["count", "mean"],
    )
    summed, layout = _three_nodes(df.iloc[:400], spec)
    res = stats_finalize(summed, layout, spec, min_cell_count=20)
    reasons = {s["group"]["ftype"]: s["reason"] for s in res.suppressed}
    assert reasons["midwife"] == "primary"
    assert reasons["clinic"] == "complementary"
    assert "n" not in res.cell(ftype="midwife") and res.cell(ftype="midwife")["suppressed"]
    assert res.cell()["n"] == 400  # the total stays: two hidden cells cannot be split


def test_few_events_suppress_a_proportion_cell(births):
    spec = _spec()
    summed, layout = _three_nodes(births, spec)
    res = stats_finalize(summed, layout, spec, min_cell_count=10)
    flagged = [s for s in res.suppressed if "events" in s["detail"]]
    assert flagged and all(s["reason"] == "primary" for s in flagged)


# ---- differential privacy -------------------------------------------------------------


def test_gaussian_noise_has_calibrated_scale():
    sigma = calibrate_gaussian(1.0, 1.0, 1e-5)

    # independent check with the exact (analytic) Gaussian mechanism (Balle & Wang 2018):
    # delta(eps) <= 1e-5 at this sigma, and a 10 % smaller sigma would not be enough
    def delta_at(s, eps=1.0):
        a, b = 1 / (2 * s), eps * s
        return sps.norm.cdf(a - b) - math.exp(eps) * sps.norm.cdf(-a - b)

    assert delta_at(sigma) <= 1e-5 * 1.001
    assert delta_at(0.9 * sigma) > 1e-5
    assert epsilon_for_gaussian(sigma, 1.0, 1e-5) <= 1.0 + 1e-9
    draws = gaussian_noise(6000, sigma)
    assert_unit_normal(draws / sigma, off=1.1)
    assert abs(draws.mean()) < 5.5 * sigma / math.sqrt(6000)  # false alarm 4e-8
    b = calibrate_laplace(2.0, 0.5)
    assert b == pytest.approx(4.0, rel=1e-3)
    lap = laplace_noise(20_000, b)
    assert abs(lap.std() / (b * math.sqrt(2)) - 1) < 0.1  # 12 standard errors
    disc = discrete_gaussian_noise(2000, 30.0)
    assert disc.dtype == np.int64 and abs(disc.std() / 30 - 1) < 0.1  # 6 standard errors


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_dp_release_noise_matches_calibration(births, mode):
    spec = _spec(group_by=[], measures=["count", "sum", "mean", "proportion"])
    cfg = DpConfig(epsilon=1.0, delta=1e-6, mode=mode, n_nodes=3)
    exact, layout = _three_nodes(births, spec)
    counts = []
    for _ in range(300):
        noisy, _ = _three_nodes(births, spec, dp=cfg) if mode == "distributed" else (exact, None)
        res = stats_finalize(noisy, layout, spec, 10, dp=cfg)
        counts.append(res.cell()["n"] - len(births))
    sigma = res.dp["noise_scale"]
    assert sigma == pytest.approx(calibrate_gaussian(math.sqrt(res.dp["blocks"]), 1.0, 1e-6))
    counts = np.array(counts, dtype=np.float64)
    # 300 draws: the scale within 1.5x either way, not one node's share (1/√3) alone; the
    # sampler's own test checks it within 10 %.
    assert_unit_normal(counts / sigma, off=1.5)
    assert abs(counts.mean()) < 5.5 * sigma / math.sqrt(len(counts))  # false alarm 4e-8
    assert res.dp["mode"] == mode and res.dp["epsilon_charged_per_node"] == 1.0
    lbw = res.cell()["variables"]["lbw"]
    lo, hi = lbw["proportion_ci"]
    p = births.lbw.mean()
    se_data = math.sqrt(p * (1 - p) / len(births))
    assert (hi - lo) / 2 > 1.96 * se_data  # the interval is widened by the noise


def test_distributed_dropout_raises_effective_epsilon(births):
    spec = _spec(group_by=[], measures=["count"])
    cfg = DpConfig(epsilon=1.0, mode="distributed", n_nodes=3)
    noisy, layout = _three_nodes(births, spec, dp=cfg)
    res = stats_finalize(noisy, layout, spec, 10, dp=cfg, n_contributing=2)
    assert res.dp["epsilon_effective"] > 1.0


def test_dp_needs_bounds_and_rejects_distributed_laplace(births):
    spec = _spec(bounds={"lbw": [0, 1]})
    with pytest.raises(StatsError, match="bounds"):
        stats_local(births, spec, dp=DpConfig(epsilon=1.0))
    with pytest.raises(ValueError, match="distributed"):
        DpConfig(epsilon=1.0, mechanism="laplace", mode="distributed")
