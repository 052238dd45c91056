"""Identities and properties of the matrix-based Rényi entropy and MI (Eq. 3, 5)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minilib.estimator.entropy import (
    constant_columns,
    gram_matrix,
    gram_matrices,
    joint_entropy,
    mutual_information,
    renyi_entropy,
)

ALPHAS = [0.5, 1.0, 1.01, 2.0, 3.0]


def _data(n=40, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    X[:, 1] = X[:, 0] + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)  # a dependent pair
    X[:, 2] = torch.sin(2 * X[:, 0])
    return X


def test_rbf_convention_is_sigma_not_sigma_squared():
    K = gram_matrix([0.0, 2.0], sigma=2.0)
    assert K[0, 1].item() == pytest.approx(math.exp(-4.0 / 8.0))  # exp(-d²/(2σ²))
    assert torch.all(K.diagonal() == 1)


def test_vector_gram_matches_sum_of_squares():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert gram_matrix(x, 5.0)[0, 1].item() == pytest.approx(math.exp(-25.0 / 50.0))


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("n", [2, 7, 64])
def test_identity_has_maximal_entropy_log2_n(alpha, n):
    assert renyi_entropy(torch.eye(n) / n, alpha).item() == pytest.approx(math.log2(n), abs=1e-10)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_rank_one_has_zero_entropy(alpha):
    v = torch.rand(20, dtype=torch.float64) + 0.1
    assert renyi_entropy(torch.outer(v, v), alpha).item() == pytest.approx(0.0, abs=1e-9)


def test_entropy_is_in_bits_for_a_known_spectrum():
    # eigenvalues (1/2, 1/4, 1/4): von Neumann = 1.5 bits, collision (α=2) = -log2(3/8)
    A = torch.diag(torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert renyi_entropy(A, 1.0).item() == pytest.approx(1.5)
    assert renyi_entropy(A, 2.0).item() == pytest.approx(-math.log2(0.375))
    assert renyi_entropy(A, 3.0).item() == pytest.approx(-0.5 * math.log2(0.125 + 2 / 64))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_discrete_variable_matches_shannon_and_self_information(alpha):
    # A 0/1 kernel (K_ab = 1 iff x_a = x_b) has eigenvalues n_c/N: S_α is the Rényi
    # entropy of the class proportions, and K∘K = K gives I(X;X) = S(X) exactly.
    x = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    K = (x[:, None] == x[None, :]).double()
    p = torch.tensor([3, 2, 5], dtype=torch.float64) / 10
    expected = -(p * p.log2()).sum() if alpha == 1.0 else torch.log2((p**alpha).sum()) / (1 - alpha)
    assert renyi_entropy(K, alpha).item() == pytest.approx(expected.item(), abs=1e-10)
    assert mutual_information(K, K, alpha).item() == pytest.approx(expected.item(), abs=1e-10)


def test_entropy_is_invariant_to_trace_scaling():
    K = gram_matrix(_data()[:, 0], 0.7)
    assert renyi_entropy(K).item() == pytest.approx(renyi_entropy(5.0 * K).item(), abs=1e-12)


def test_alpha_two_frobenius_path_equals_eigenvalue_path():
    K = gram_matrix(_data()[:, 0], 0.5)
    A = K / K.trace()
    lam = torch.linalg.eigvalsh(A).clamp(min=0)
    assert renyi_entropy(K, 2.0).item() == pytest.approx(-math.log2((lam**2).sum().item()), abs=1e-10)


def test_alpha_one_is_the_continuous_limit():
    K = gram_matrix(_data()[:, 0], 0.5)
    s1 = renyi_entropy(K, 1.0).item()
    for eps in [1e-3, 1e-5]:
        assert renyi_entropy(K, 1 - eps).item() == pytest.approx(s1, abs=20 * eps)
        assert renyi_entropy(K, 1 + eps).item() == pytest.approx(s1, abs=20 * eps)
    assert renyi_entropy(K, 1.0 + 1e-6).item() < s1 < renyi_entropy(K, 1.0 - 1e-6).item()  # S_α decreasing in α


def test_tiny_negative_eigenvalues_are_clamped():
    x = torch.linspace(0, 1, 80, dtype=torch.float64)
    K = gram_matrix(x, 5.0)  # numerically rank-deficient: eigvalsh returns round-off negatives
    assert torch.linalg.eigvalsh(K).min() < 0
    s = renyi_entropy(K, 1.5)
    assert torch.isfinite(s) and s >= 0


@pytest.mark.parametrize("alpha", ALPHAS)
def test_mi_identities(alpha):
    X = _data()
    Kx, Ky = gram_matrix(X[:, 0], 0.8), gram_matrix(X[:, 1], 0.6)
    sx, sy = renyi_entropy(Kx, alpha), renyi_entropy(Ky, alpha)
    assert mutual_information(Kx, Ky, alpha).item() == pytest.approx(mutual_information(Ky, Kx, alpha).item(), abs=1e-12)
    # for an RBF kernel A∘A is the kernel at σ/√2: I(X;X) = 2S(A) − S(A∘A) < S(A)
    assert mutual_information(Kx, Kx, alpha).item() < sx.item()
    joint = joint_entropy(Kx, Ky, alpha=alpha)
    assert joint >= sx - 1e-9 and joint >= sy - 1e-9  # joint ≥ each marginal
    assert joint <= math.log2(len(X)) + 1e-9


def test_mi_sees_dependence_and_is_small_for_independence():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, generator=g, dtype=torch.float64)
    indep = torch.randn(200, generator=g, dtype=torch.float64)
    dep = x**2  # uncorrelated with x, but a function of it
    mi_dep = mutual_information(gram_matrix(x, 0.5), gram_matrix(dep, 0.5)).item()
    mi_ind = mutual_information(gram_matrix(x, 0.5), gram_matrix(indep, 0.5)).item()
    assert mi_dep > 3 * mi_ind


def test_gram_matrices_match_single_calls():
    X = _data(n=12, d=3)
    K = gram_matrices(X, [0.5, 1.0, 2.0])
    for i, s in enumerate([0.5, 1.0, 2.0]):
        torch.testing.assert_close(K[i], gram_matrix(X[:, i], s))


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float64, st.integers(2, 30), elements=finite),
    sigma=st.floats(0.05, 50.0),
    alpha=st.sampled_from([0.5, 1.0, 1.01, 2.0, 4.0]),
)
def test_entropy_bounds_property(x, sigma, alpha):
    if np.ptp(x) <= 1e-9 * np.abs(x).max():
        return  # constant samples are rejected; tested separately
    s = renyi_entropy(gram_matrix(x, sigma), alpha).item()
    assert -1e-9 <= s <= math.log2(len(x)) + 1e-9


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(3, 25), alpha=st.sampled_from([1.0, 1.01, 2.0]))
def test_mi_bounded_by_marginals_property(seed, n, alpha):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    Kx, Ky = gram_matrix(x, 0.7), gram_matrix(x + 0.5 * y, 0.7)
    mi = mutual_information(Kx, Ky, alpha).item()
    sx, sy = renyi_entropy(Kx, alpha).item(), renyi_entropy(Ky, alpha).item()
    assert mi <= min(sx, sy) + 1e-9
    if alpha == 1.0:
        assert mi >= -1e-9  # von Neumann MI of Hadamard-product joints is non-negative


# --- bad input: one clear error each -------------------------------------------------


def test_nan_is_rejected_with_its_position():
    with pytest.raises(ValueError, match="NaN or infinite.*index \\[2\\]"):
        gram_matrix([0.0, 1.0, float("nan")], 1.0)


def test_constant_variable_is_rejected():
    with pytest.raises(ValueError, match="x is constant over its 5 samples"):
        gram_matrix(np.ones(5), 1.0)
    X = _data(n=10, d=4)
    X[:, 2] = 3.0
    with pytest.raises(ValueError, match=r"1 constant column\(s\) \(2\)"):
        gram_matrices(X, 1.0)
    assert constant_columns(X).tolist() == [False, False, True, False]


def test_too_few_samples():
    with pytest.raises(ValueError, match="at least 2"):
        gram_matrix([1.0], 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        gram_matrices(torch.zeros(1, 3), 1.0)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        renyi_entropy(torch.eye(3), alpha)


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="x has 4 samples but y has 3"):
        mutual_information(torch.eye(4), torch.eye(3))
    with pytest.raises(ValueError, match="different sample counts"):
        joint_entropy(torch.eye(4), torch.eye(3))


def test_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        gram_matrix([0.0, 1.0], 0.0)
    with pytest.raises(ValueError, match="3 values but there are 2 variables"):
        gram_matrices(torch.randn(5, 2), [1.0, 1.0, 1.0])


def test_non_square_gram():
    with pytest.raises(ValueError, match="square"):
        renyi_entropy(torch.ones(3, 4))


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_non_symmetric_gram_is_rejected_on_every_path(alpha):
    """α = 2 reads ‖A‖_F², the other orders the symmetric part's eigenvalues: they would disagree."""
    K = gram_matrix(_data()[:, 0], 1.0) + 0.5 * torch.eye(40, dtype=torch.float64)  # well conditioned
    K[0, 1] += 0.2
    with pytest.raises(ValueError, match="K is not symmetric"):
        renyi_entropy(K, alpha)
    with pytest.raises(ValueError, match="Kx is not symmetric"):
        mutual_information(K, gram_matrix(_data()[:, 1], 1.0), alpha)
    renyi_entropy((K + K.T) / 2, alpha)  # the fix the message names is accepted


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_indefinite_gram_is_rejected(alpha):
    K = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.9], [0.0, 0.9, 1.0]], dtype=torch.float64)  # eigenvalue 1 − 0.9√2 < 0
    assert torch.linalg.eigvalsh(K).min() < -0.2
    with pytest.raises(ValueError, match="not positive semi-definite"):
        renyi_entropy(K, alpha)
    with pytest.raises(ValueError, match="K1 is not positive semi-definite"):
        joint_entropy(gram_matrix(torch.arange(3.0), 1.0), K, alpha=alpha)


def test_zero_trace_gram_is_rejected():
    with pytest.raises(ValueError, match="trace ≤ 0"):
        renyi_entropy(torch.zeros(3, 3))
