"""Matrix-based Rényi α-entropy and mutual information (paper §3.4, Eq. 3 and 5).

The estimator never builds a density. For N samples of a variable it forms the
RBF Gram matrix ``K`` (Eq. 5), normalises it to unit trace, ``A = K / tr(K)``,
and reads the entropy off the eigenvalues λ of ``A`` (they are ≥ 0 and sum to 1):

    S_α(A) = 1/(1-α) · log2 Σ_i λ_i^α              (α ≠ 1)
    S_1(A) = -Σ_i λ_i log2 λ_i                      (von Neumann, the α → 1 limit)
    S_2(A) = -log2 ‖A‖_F²                           (no eigenvalues needed)

Joint entropy uses the normalised Hadamard product, ``S_α(A, B) = S_α(A∘B / tr(A∘B))``,
and mutual information is Eq. 3: ``I(A; B) = S_α(A) + S_α(B) − S_α(A, B)``.
Entropies are in bits; ``0 ≤ S_α ≤ log2 N``.

Conventions pinned by the tests: the kernel is ``exp(−‖x−y‖² / (2σ²))`` (σ, not σ²),
logarithms are base 2, eigenvalues are computed in float64 with tiny negative
round-off clamped to 0 and the spectrum renormalised to sum 1.
"""

from __future__ import annotations

import math

import torch

from minilib.estimator import _checks
from minilib.estimator._checks import ArrayLike

__all__ = [
    "gram_matrix",
    "gram_matrices",
    "squared_distances",
    "renyi_entropy",
    "joint_entropy",
    "mutual_information",
    "entropy_from_spectrum",
    "constant_columns",
]


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """‖x_a − x_b‖² for samples in rows; exact zeros on the diagonal."""
    if x.ndim == 1:
        return (x[:, None] - x[None, :]) ** 2
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_(min=0.0)
    d2.fill_diagonal_(0.0)
    return d2


def gram_matrix(x: ArrayLike, sigma: float) -> torch.Tensor:
    """RBF Gram matrix of one variable, ``K_ab = exp(−‖x_a − x_b‖² / (2σ²))`` (Eq. 5).

    Parameters
    ----------
    x : array of shape (N,) for a scalar variable or (N, d) for a vector one.
    sigma : kernel width σ > 0, in the units of ``x``.

    Returns
    -------
    (N, N) float64 tensor with ones on the diagonal.
    """
    x = _checks.samples(x, "x")
    _checks.not_constant(x, "x")
    sigma = _checks.positive(sigma, "sigma (the kernel width)")
    return torch.exp(squared_distances(x) / (-2.0 * sigma**2))


def gram_matrices(X: ArrayLike, sigma: ArrayLike) -> torch.Tensor:
    """RBF Gram matrices of D scalar variables at once.

    Parameters
    ----------
    X : array of shape (N, D): N samples (rows) of D scalar variables (columns).
    sigma : one width for all variables or one per variable, shape (D,).

    Returns
    -------
    (D, N, N) float64 tensor on the device of ``X``; slice ``i`` is ``gram_matrix(X[:, i], sigma[i])``.
    """
    X = _checks.sample_matrix(X, "X", keep_device=True)
    _checks.no_constant_columns(X, "X")
    s = _checks.sigmas(sigma, X.shape[1]).to(X.device)
    Xt = X.T.contiguous()  # (D, N)
    d2 = (Xt[:, :, None] - Xt[:, None, :]) ** 2
    return torch.exp(d2.mul_((-0.5 / s**2)[:, None, None]))


_SYM_RTOL = 1e-10  # |K − Kᵀ| allowed, relative to max |K|: round-off, not a different matrix
_PSD_RTOL = 1e-8  # the PSD test shifts K by this times its mean diagonal before a Cholesky


def _as_gram(K: ArrayLike, name: str = "K") -> torch.Tensor:
    """``K`` as a float64 batch of Gram matrices: square, N ≥ 2, symmetric, positive trace and PSD.

    Symmetry matters because α = 2 reads ``‖A‖_F²`` and the other orders read the eigenvalues of
    the symmetric part: for a non-symmetric matrix the two would silently disagree. PSD is tested
    by a Cholesky factorisation of ``K + δ I`` with ``δ = 10⁻⁸ × mean diagonal``, which fails
    exactly when an eigenvalue is below ``−δ`` (a sixth of the cost of the eigenvalues).
    """
    K = _checks.as_float64(K, name)
    if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
        raise ValueError(f"{name} must be a square Gram matrix (or a batch of them), got shape {tuple(K.shape)}")
    n = K.shape[-1]
    if n < 2:
        raise ValueError(f"{name} is {n}×{n}; the estimators need at least 2 samples")
    asym = (K - K.mT).abs().amax((-2, -1))
    if (asym > _SYM_RTOL * K.abs().amax((-2, -1))).any():
        raise ValueError(f"{name} is not symmetric (max |K − Kᵀ| = {asym.max().item():.3g}); a Gram matrix is: "
                         "pass (K + K.T) / 2 if the difference is round-off, or fix the kernel")
    mean_diag = torch.diagonal(K, dim1=-2, dim2=-1).mean(-1)
    if not (mean_diag > 0).all():
        raise ValueError(f"{name} has trace ≤ 0; a Gram matrix is positive semi-definite with a positive diagonal")
    shifted = K + (_PSD_RTOL * mean_diag)[..., None, None] * torch.eye(n, dtype=K.dtype)
    if (torch.linalg.cholesky_ex(shifted).info != 0).any():
        raise ValueError(f"{name} is not positive semi-definite (an eigenvalue below −1e-8 × its mean diagonal); "
                         "build it from a positive-definite kernel, e.g. minilib.estimator.entropy.gram_matrix")
    return K


def _trace_normalise(K: torch.Tensor) -> torch.Tensor:
    """``K / tr K`` (the trace is positive: :func:`_as_gram` checked it)."""
    return K / torch.diagonal(K, dim1=-2, dim2=-1).sum(-1)[..., None, None]


def entropy_from_spectrum(lam: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rényi entropy (bits) from the eigenvalues (last dim) of unit-trace PSD matrices."""
    # eigvalsh is accurate to about N·eps·λ_max: below that a "λ" is round-off, and
    # λ^α with α < 1 would amplify it, so zero it and renormalise the spectrum.
    floor = lam.shape[-1] * torch.finfo(lam.dtype).eps * lam.amax(-1, keepdim=True)
    lam = torch.where(lam > floor, lam, torch.zeros((), dtype=lam.dtype))
    lam = lam / lam.sum(-1, keepdim=True)
    if alpha == 1.0:
        return -torch.special.xlogy(lam, lam).sum(-1) / math.log(2.0)
    return torch.log2(lam.pow(alpha).sum(-1)) / (1.0 - alpha)


def _entropy_of_gram(K: torch.Tensor, alpha: float) -> torch.Tensor:
    """Entropy of a Gram matrix that :func:`_as_gram` has already checked (or a Hadamard product of such)."""
    A = _trace_normalise(K)
    if alpha == 2.0:  # tr(A²) = ‖A‖_F² for symmetric A: no eigen-decomposition
        return -torch.log2((A * A).sum((-2, -1)))
    return entropy_from_spectrum(torch.linalg.eigvalsh(A), alpha)


def _hadamard(mats: list[torch.Tensor]) -> torch.Tensor:
    """``K1∘K2∘…`` of checked Gram matrices: PSD and symmetric again (Schur product theorem), so not re-checked."""
    n = {m.shape[-1] for m in mats}
    if len(n) > 1:
        raise ValueError(f"Gram matrices come from different sample counts {sorted(n)}; use the same N samples for every variable")
    H = mats[0]
    for m in mats[1:]:
        H = H * m
    return H


def renyi_entropy(K: ArrayLike, alpha: float = 1.01) -> torch.Tensor:
    """Matrix-based Rényi α-entropy in bits of a Gram matrix (the terms of Eq. 3).

    ``S_α(A) = 1/(1−α) log2 Σ λ_i(A)^α`` with ``A = K / tr(K)``; α = 1 is the
    von Neumann entropy ``−Σ λ log2 λ`` (exactly, not through 1.01) and α = 2 is
    ``−log2 ‖A‖_F²``, computed without eigenvalues.

    Parameters
    ----------
    K : PSD Gram matrix (N, N), or a batch (..., N, N). It need not be normalised.
    alpha : Rényi order α > 0. The paper uses 1.01.

    Returns
    -------
    Tensor of shape ``K.shape[:-2]`` (0-d for one matrix), between 0 and log2 N.
    """
    return _entropy_of_gram(_as_gram(K), _checks.alpha_order(alpha))


def joint_entropy(*Ks: ArrayLike, alpha: float = 1.01) -> torch.Tensor:
    """Joint entropy ``S_α(A∘B∘…  / tr(A∘B∘…))`` of two or more Gram matrices (§3.4)."""
    if len(Ks) < 2:
        raise ValueError("joint_entropy needs at least two Gram matrices")
    alpha = _checks.alpha_order(alpha)
    return _entropy_of_gram(_hadamard([_as_gram(K, f"K{i}") for i, K in enumerate(Ks)]), alpha)


def mutual_information(Kx: ArrayLike, Ky: ArrayLike, alpha: float = 1.01) -> torch.Tensor:
    """Mutual information in bits, ``I = S_α(A) + S_α(B) − S_α(A, B)`` (Eq. 3).

    ``Kx`` and ``Ky`` are Gram matrices of two variables on the same N samples
    (see :func:`gram_matrix`). The estimate is symmetric and at most
    ``min(S_α(A), S_α(B))``. ``I(X; X) = 2 S_α(A) − S_α(A∘A)`` equals ``S_α(X)``
    exactly when ``A∘A ∝ A`` (a 0/1 kernel of a discrete variable); for an RBF
    kernel ``A∘A`` is the kernel at width σ/√2 and ``I(X; X) < S_α(X)``.
    """
    Kx, Ky = _as_gram(Kx, "Kx"), _as_gram(Ky, "Ky")
    if Kx.shape[-1] != Ky.shape[-1]:
        raise ValueError(
            f"x has {Kx.shape[-1]} samples but y has {Ky.shape[-1]}; MI needs paired samples of equal length"
        )
    alpha = _checks.alpha_order(alpha)  # each matrix checked once, above: the entropies reuse them
    return _entropy_of_gram(Kx, alpha) + _entropy_of_gram(Ky, alpha) - _entropy_of_gram(_hadamard([Kx, Ky]), alpha)


def constant_columns(X: ArrayLike, rtol: float = 1e-12) -> torch.Tensor:
    """Boolean mask of the columns of ``X`` (N, D) that are constant (dead neurons)."""
    return _checks.constant_columns(_checks.sample_matrix(X, "X"), rtol)
