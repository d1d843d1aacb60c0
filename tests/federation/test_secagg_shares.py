"""SecAgg+ neighbour count k and reconstruction threshold t derived by our settings layer."""

import math

import pytest

from federation.secagg import ALL_SHARE_BELOW, SecAggSettings, make_workflow, num_shares_for

Q = 2**20


@pytest.mark.parametrize("n", [2, 3, 5, ALL_SHARE_BELOW - 1])
def test_small_federations_share_with_everyone(n):
    assert num_shares_for(n) == n
    s = SecAggSettings(n_nodes=n, max_weight=8)
    assert s.shares == n
    assert make_workflow(s).num_shares == 1.0  # Flower's "all sampled nodes"


@pytest.mark.parametrize(("n", "k"), [(20, 11), (50, 13), (200, 17), (1000, 21), (100_000, 35)])
def test_large_federations_share_with_log_n_neighbours(n, k):
    assert num_shares_for(n) == k
    assert k % 2 == 1 and k >= 2 * math.log2(n)


@pytest.mark.parametrize("n", [20, 50, 200, 1000])
@pytest.mark.parametrize("frac", [0.5, 0.6, 0.9, 1.0])
def test_threshold_is_valid_for_flower(n, frac):
    s = SecAggSettings(n_nodes=n, max_weight=8, quantization_range=Q, reconstruction_threshold=frac)
    assert 2 <= s.threshold <= s.shares
    wf = make_workflow(s)  # Flower validates k > 2 and an int t < k
    assert wf.num_shares == s.shares
    if frac >= 0.6:  # a majority of neighbours is needed to rebuild a node's seeds
        assert s.threshold > s.shares / 2


def test_explicit_num_shares_is_made_odd_and_checked():
    assert SecAggSettings(n_nodes=100, max_weight=8, quantization_range=Q, num_shares=8).shares == 9
    everyone = SecAggSettings(n_nodes=100, max_weight=8, quantization_range=Q, num_shares=100)
    assert everyone.shares == 100
    for bad in (2, 101):
        with pytest.raises(ValueError, match="num_shares"):
            SecAggSettings(n_nodes=100, max_weight=8, quantization_range=Q, num_shares=bad)
    with pytest.raises(ValueError):
        num_shares_for(1)
