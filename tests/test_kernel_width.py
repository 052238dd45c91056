"""Kernel-width selection: Scott's rule, alignment, Eq. 7 optimum, EMA, normalisation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.data import toydata
from minilib.estimator.entropy import gram_matrix
from minilib.estimator.kernel_width import (
    NeuronKernelWidth,
    aligned_sigmas,
    ema,
    kernel_alignment,
    layer_gram,
    normalize,
    scott_sigma,
)


def _layer(n=60, d=32, seed=0):
    """GELU activations of a random layer fed by clustered inputs (like sentences)."""
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(4, 16, generator=g)
    h = torch.randn(n, 16, generator=g) + centres[torch.randint(0, 4, (n,), generator=g)]
    return torch.nn.functional.gelu(h @ torch.randn(16, d, generator=g)).double()


def test_scott_rule_eq4_and_its_degeneracy_at_d512():
    assert scott_sigma(100, 1) == pytest.approx(100 ** (-1 / 5))
    assert scott_sigma(100, 512, gamma=2.0) == pytest.approx(2 * 100 ** (-1 / 516))
    assert 0.99 < scott_sigma(100, 512) < 1.0  # ≈ 1 whatever the data: open decision 3


def test_alignment_eq6_properties():
    K = gram_matrix(torch.linspace(0, 1, 10), 0.3)
    assert kernel_alignment(K, K).item() == pytest.approx(1.0)
    assert kernel_alignment(K, 3 * K).item() == pytest.approx(1.0)  # scale-free
    I = torch.eye(10, dtype=torch.float64)
    assert kernel_alignment(I, torch.ones(10, 10)).item() == pytest.approx(10 / (math.sqrt(10) * 10))


@settings(max_examples=15, deadline=None)
@given(sigma0=st.floats(0.05, 20.0), seed=st.integers(0, 1000))
def test_aligned_sigma_recovers_the_width_of_a_matching_reference(sigma0, seed):
    # The reference is the variable's own RBF kernel at σ0: alignment is 1 at σ0 and only there.
    x = torch.randn(50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    sigma, align = aligned_sigmas(x[:, None], gram_matrix(x, sigma0))
    assert sigma.item() == pytest.approx(sigma0, rel=1e-4)
    assert align.item() == pytest.approx(1.0, abs=1e-9)


def test_aligned_sigma_is_in_data_units():
    x = torch.randn(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    R = gram_matrix(x, 0.5)
    s1, _ = aligned_sigmas(x[:, None], R)
    s2, _ = aligned_sigmas(1000 * x[:, None], R)  # same structure, 1000× the units
    assert s2.item() == pytest.approx(1000 * s1.item(), rel=1e-4)


def test_ema_eq8():
    s = ema(None, torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(s, torch.tensor([2.0, 4.0], dtype=torch.float64))
    s = ema(s, torch.tensor([4.0, 0.0]), beta=0.75)
    torch.testing.assert_close(s, torch.tensor([2.5, 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="beta"):
        ema(s, s, beta=1.5)
    with pytest.raises(ValueError, match="shape"):
        ema(s, torch.ones(3))


def test_zscore_normalisation_removes_units():
    X = _layer()
    Z = normalize(X)
    torch.testing.assert_close(Z.mean(0), torch.zeros(X.shape[1], dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(Z.std(0, correction=0), torch.ones(X.shape[1], dtype=torch.float64))
    torch.testing.assert_close(normalize(7 * X + 3), Z)
    torch.testing.assert_close(normalize(X, "none"), X)


def test_raw_layer_kernel_is_degenerate_and_zscore_fixes_it():
    X = 10 * _layer(d=256)  # raw activations on a realistic scale
    s_l = scott_sigma(*X.shape)
    off = ~torch.eye(X.shape[0], dtype=torch.bool)
    K_raw = layer_gram(X, s_l, "none")
    assert K_raw[off].max() < 1e-6  # ≈ identity
    K_z = layer_gram(normalize(X), s_l, "zscore")
    assert K_z[off].min() > 1e-3 and K_z[off].std() > 0.01  # graded similarities
    raw = NeuronKernelWidth("none").partial_fit(X)
    fixed = NeuronKernelWidth("zscore").partial_fit(X)
    std = X.std(0, correction=0)
    assert (raw.sigma_ / std).max() < 0.01  # every width collapses towards 0
    assert (fixed.sigma_ > 0.1).all()


def test_estimator_ema_over_batches_and_history():
    X = _layer(n=120, d=16)
    est = NeuronKernelWidth(beta=0.5).fit([X[:60], X[60:]])
    a, b = est.history_
    torch.testing.assert_close(est.sigma_, 0.5 * a + 0.5 * b)
    assert est.layer_sigma_ == pytest.approx(scott_sigma(60, 16))
    again = NeuronKernelWidth(beta=0.5).fit([X[:60], X[60:]])
    assert torch.equal(again.sigma_, est.sigma_)  # deterministic


def test_estimator_mutual_information_uses_fitted_widths():
    X = _layer(n=50, d=8)
    est = NeuronKernelWidth().fit([X])
    M = est.mutual_information(X, alpha=2.0)
    assert M.shape == (8, 8) and torch.equal(M, M.T)
    Z = normalize(X)
    from minilib.estimator.entropy import mutual_information

    ref = mutual_information(gram_matrix(Z[:, 0], est.sigma_[0]), gram_matrix(Z[:, 3], est.sigma_[3]), 2.0)
    assert M[0, 3].item() == pytest.approx(ref.item(), abs=1e-10)


def test_bad_inputs():
    X = _layer(n=20, d=4)
    with pytest.raises(ValueError, match="normalization must be one of"):
        NeuronKernelWidth("minmax")
    with pytest.raises(ValueError, match="not fitted"):
        NeuronKernelWidth().mutual_information(X)
    with pytest.raises(ValueError, match="no batches"):
        NeuronKernelWidth().fit([])
    with pytest.raises(ValueError, match="batch has 3 neurons but earlier batches had 4"):
        NeuronKernelWidth().partial_fit(X).partial_fit(X[:, :3])
    X[:, 1] = 0.0
    with pytest.raises(ValueError, match=r"constant column\(s\) \(1\)"):
        NeuronKernelWidth().partial_fit(X)
    with pytest.raises(ValueError, match="reference kernel must be 20×20"):
        aligned_sigmas(X[:, [0]], torch.eye(5))
    with pytest.raises(ValueError, match="N ≥ 2"):
        scott_sigma(1, 10)


def test_alignment_curves_peak_where_the_fit_puts_each_width():
    from minilib.estimator.kernel_width import alignment_curves

    Z = normalize(toydata.gelu_layer(100, n_neurons=16, seed=1))
    K = layer_gram(Z, scott_sigma(100, 16))
    sigma, _ = aligned_sigmas(Z, K)
    grid = np.logspace(-2, 2, 161)
    curves = alignment_curves(Z, K, [0, 5], grid)
    assert len(curves) == 2 * len(grid)
    for n in (0, 5):
        c = curves[curves.neuron == n]
        best = c["σ / std"].iloc[c.alignment.argmax()]
        assert abs(np.log10(best) - np.log10(sigma[n].item())) <= np.log10(grid[1] / grid[0]) + 1e-9


def test_duplicate_recovery_counts_copies_matched_to_their_original():
    S = torch.rand(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    S = S + S.T
    S[4, 0] = S[0, 4] = 1.0  # copy 4 of neuron 0 is found
    S[5, 2] = S[2, 5] = 1.0  # copy 5 of neuron 1 points at neuron 2 instead
    assert toydata.duplicate_recovery(S, 2) == 0.5
    with pytest.raises(ValueError, match="0 < n_duplicates < D"):
        toydata.duplicate_recovery(S, 0)
