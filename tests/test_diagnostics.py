"""The redundancy diagnostic of a keep-set against an MI map, and MDS fidelity (minilib.methods.diagnostics)."""

import numpy as np
import pytest

from minilib.methods.diagnostics import mds_fidelity, removed_redundancy

D, PAIRS = 40, 10  # neurons i and 20 + i share 2 bits for i < 10; every other pair shares < 0.05


def _map() -> np.ndarray:
    rng = np.random.default_rng(0)
    m = rng.uniform(0.0, 0.05, (D, D))
    m = (m + m.T) / 2
    for i in range(PAIRS):
        m[i, 20 + i] = m[20 + i, i] = 2.0
    np.fill_diagonal(m, 3.0)  # the marginal entropies
    return m[None]


def test_removing_one_of_each_duplicate_pair_beats_random_and_removing_unique_neurons_does_not():
    mi = _map()
    partners_out = np.r_[0:20, 30:35]  # removes 20-29 (each the copy of a kept neuron) and 35-39
    uniques_out = np.r_[0:15, 20:30]  # keeps both members of every pair, removes 15-19 and 30-39
    good = removed_redundancy(mi, [partners_out], draws=50).iloc[0]
    bad = removed_redundancy(mi, [uniques_out], draws=50).iloc[0]
    assert good.removed == bad.removed == 15 and good.kept == 25
    assert good.best_match == pytest.approx(2.0) and good.best_match_ratio > 1.5
    assert good.mean_mi_ratio > 1 > bad.mean_mi_ratio  # the removed share more (less) with the layer
    assert bad.best_match < 0.05 and bad.best_match_ratio < good.best_match_ratio
    assert good.random_best_match == pytest.approx(bad.random_best_match)  # chance depends on sizes only


def test_dead_neurons_are_left_out_and_the_draws_are_seeded():
    mi, alive = _map(), np.ones((1, D), bool)
    alive[0, 35:] = False  # five dead neurons, never kept: not counted as removed
    out = removed_redundancy(mi, [np.r_[0:20, 30:35]], alive, draws=5, seed=3)
    assert out.removed.iloc[0] == 10 and out.kept.iloc[0] == 25
    again = removed_redundancy(mi, [np.r_[0:20, 30:35]], alive, draws=5, seed=3)
    assert out.equals(again)


@pytest.mark.parametrize("args, message", [
    ((np.zeros((4, 4)), [np.arange(2)]), "mi must be"),
    ((np.zeros((2, 4, 4)), [np.arange(2)]), "give one keep-set per layer"),
])
def test_bad_input_is_one_clear_error(args, message):
    with pytest.raises(ValueError, match=message):
        removed_redundancy(*args)


def test_few_mds_axes_lose_near_equidistant_neurons_and_all_of_them_keep_the_distances():
    rng = np.random.default_rng(0)
    n = 300
    S = rng.uniform(0.0, 0.05, (n, n))
    S = (S + S.T) / 2
    for i in range(10):  # ten tight pairs among near-equidistant neurons
        S[i, n - 1 - i] = S[n - 1 - i, i] = 3.0
    np.fill_diagonal(S, 4.0)
    fid = mds_fidelity(S, (2, 8, 64, 10_000))
    assert list(fid.dims) == [2, 8, 64, 10_000] and list(fid.used_dims) == [2, 8, 64, n - 1]  # at most n − 1
    assert fid.mass.is_monotonic_increasing and fid.mass.iloc[-1] == pytest.approx(1.0)
    assert fid.pearson.iloc[1] < 0.2 < 0.9 < fid.pearson.iloc[-1]  # 8 axes keep the pairs, not the rest
    with pytest.raises(ValueError, match="each at least 1"):
        mds_fidelity(S, (0, 8))
    with pytest.raises(ValueError, match="square matrix"):
        mds_fidelity(S[:, :5])
