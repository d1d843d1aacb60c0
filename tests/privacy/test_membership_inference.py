"""Issue 8, empirical audit: the membership-inference machinery of bench/mia_bench.py.

On a toy where membership is obvious (random labels a wide MLP memorises) both attacks must
find the members; the same data trained with DP-SGD at ε = 1 must leave the attack near
chance. The scenario figures themselves come from ``bench/mia_bench.py`` (minutes, not a test).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "mia_bench.py"


@pytest.fixture(scope="module")
def mia():
    spec = importlib.util.spec_from_file_location("mia_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mia_bench"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")  # pytest restores the filters after each test phase
    yield module
    # Undo what this module set, so later tests in the same worker see their own logs.
    logging.disable(logging.NOTSET)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2400, 12))
    y = rng.integers(0, 2, 2400).astype(np.float64)  # random labels: only memorisation helps
    return x, y


def test_attack_metrics_on_known_scores(mia):
    member = np.r_[np.ones(1000, bool), np.zeros(4000, bool)]
    perfect = mia.attack_metrics(member.astype(float), member)
    assert perfect["auc"] == 1.0 and perfect["tpr_at_0.1%_fpr"] == 1.0
    chance = mia.attack_metrics(np.random.default_rng(0).normal(size=5000), member)
    assert abs(chance["auc"] - 0.5) < 3 * chance["auc_se"] + 0.01
    assert chance["tpr_at_0.1%_fpr"] < 0.02
    assert (chance["members"], chance["non_members"]) == (1000, 4000)


def test_attacks_find_members_of_an_overfit_model(mia, toy):
    x, y = toy
    members, non, population = np.arange(100), np.arange(100, 1100), np.arange(1200, 2400)
    recipe = mia.Recipe("mlp", 128, None, 0.5, 16, 300)
    model, eps = mia.train(recipe, x[members], y[members], seed=1)
    ev = np.r_[members, non]
    is_member = np.r_[np.ones(100, bool), np.zeros(1000, bool)]
    target = mia.confidence_logit(model, x[ev], y[ev])
    loss = mia.attack_metrics(target, is_member)
    assert eps == float("inf")
    assert loss["auc"] > 0.75, loss
    shadows = []
    for k in range(3):
        sample = np.random.default_rng(k).choice(population, 100, replace=False)
        shadow, _ = mia.train(recipe, x[sample], y[sample], seed=10 + k)
        shadows.append(mia.confidence_logit(shadow, x[ev], y[ev]))
    lira = mia.attack_metrics(mia.lira_offline(target, np.array(shadows)), is_member)
    assert lira["auc"] > 0.75, lira
    assert lira["tpr_at_1%_fpr"] > 0.02, lira  # chance: 0.01


def test_dp_sgd_leaves_the_attack_near_chance(mia, toy):
    x, y = toy
    members, non = np.arange(1000), np.arange(1000, 2400)
    recipe = mia.Recipe("mlp", 128, 1.0, 2.0, 128, 20)
    model, eps = mia.train(recipe, x[members], y[members], seed=1)
    assert eps <= 1.0 + 1e-3
    ev = np.r_[members, non]
    is_member = np.r_[np.ones(len(members), bool), np.zeros(len(non), bool)]
    res = mia.attack_metrics(mia.confidence_logit(model, x[ev], y[ev]), is_member)
    assert abs(res["auc"] - 0.5) < 0.04, res
