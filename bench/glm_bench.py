"""GLM bench: one federated Newton iteration (3 nodes + server step) vs a pooled statsmodels fit.

Run: .venv/bin/python bench/glm_bench.py  (writes bench/results/glm.json)
"""

import json
import platform
import time
from pathlib import Path

import numpy as np
import statsmodels.api as sm

from federation.analytics.glm import (
    glm_fit,
    glm_local_statistics,
    glm_newton_step,
    glm_public_scale,
)
from federation.analytics.scaling import scale_for_secagg, simulate_secure_sum, unscale

ROWS, TERMS, NODES, REPEATS = 30_000, 10, 3, 5


def main() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(ROWS), rng.normal(size=(ROWS, TERMS - 1)).clip(-5, 5)])
    beta_true = np.r_[-2.3, rng.normal(0, 0.3, TERMS - 1)]
    y = rng.binomial(1, 1 / (1 + np.exp(-x @ beta_true))).astype(float)
    parts = [(x[p], y[p]) for p in np.array_split(np.arange(ROWS), NODES)]
    names = [f"t{i}" for i in range(TERMS)]

    def one_iteration(beta, info=None):
        summed = sum(glm_local_statistics(xx, yy, beta, "binomial") for xx, yy in parts)
        return glm_newton_step(summed, beta, "binomial", previous=info)

    one_iteration(np.zeros(TERMS))  # warm-up
    t0 = time.perf_counter()
    for _ in range(REPEATS):
        one_iteration(np.zeros(TERMS))
    per_iter = (time.perf_counter() - t0) / REPEATS

    bounds = np.full(TERMS, 5.0)
    bounds[0] = 1.0

    def secure_iteration(beta):
        scale = glm_public_scale("binomial", bounds, ROWS // NODES + 1, beta, 8.0)
        sent = [
            scale_for_secagg(glm_local_statistics(xx, yy, beta, "binomial"), scale, 8.0)
            for xx, yy in parts
        ]
        return unscale(simulate_secure_sum(sent, 8.0, 2**30, rng), scale)

    t0 = time.perf_counter()
    for _ in range(REPEATS):
        glm_newton_step(secure_iteration(np.zeros(TERMS)), np.zeros(TERMS), "binomial")
    per_iter_q = (time.perf_counter() - t0) / REPEATS

    t0 = time.perf_counter()
    fed = glm_fit(
        lambda b: sum(glm_local_statistics(xx, yy, b, "binomial") for xx, yy in parts),
        TERMS,
        "binomial",
        names,
    )
    fed_total = time.perf_counter() - t0

    t0 = time.perf_counter()
    for _ in range(REPEATS):
        ref = sm.GLM(y, x, family=sm.families.Binomial()).fit()
    pooled = (time.perf_counter() - t0) / REPEATS
    est = np.array([r.estimate for r in fed.coefficients.values()])
    out = {
        "rows": ROWS,
        "terms": TERMS,
        "nodes": NODES,
        "family": "binomial",
        "federated_seconds_per_iteration": per_iter,
        "federated_seconds_per_iteration_with_simulated_secagg_quantisation": per_iter_q,
        "federated_iterations": fed.iterations + 1,
        "federated_fit_seconds_total_math_only": fed_total,
        "pooled_statsmodels_fit_seconds": pooled,
        "pooled_statsmodels_iterations": int(ref.fit_history["iteration"]),
        "ratio_iteration_to_pooled_fit": per_iter / pooled,
        "ratio_federated_fit_to_pooled_fit": fed_total / pooled,
        "max_abs_coefficient_difference": float(np.max(np.abs(est - ref.params))),
        "note": "pure maths on one machine; a real round adds SecAgg+ and network time "
        "(about 1.5 s per round on the embedded engine, FLOWER-NOTES.md)",
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for k, v in out.items():
        print(f"{k:70s} {v}")
    path = Path(__file__).parent / "results" / "glm.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
