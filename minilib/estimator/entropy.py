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
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm.auto import tqdm

from minilib.estimator import _checks
from minilib.estimator._checks import ArrayLike

__all__ = [
    "gram_matrix",
    "gram_matrices",
    "squared_distances",
    "renyi_entropy",
    "joint_entropy",
    "mutual_information",
    "pairwise_mutual_information",
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
    (D, N, N) float64 tensor; slice ``i`` is ``gram_matrix(X[:, i], sigma[i])``.
    """
    X = _checks.sample_matrix(X, "X")
    _checks.no_constant_columns(X, "X")
    s = _checks.sigmas(sigma, X.shape[1])
    Xt = X.T.contiguous()  # (D, N)
    d2 = (Xt[:, :, None] - Xt[:, None, :]) ** 2
    return torch.exp(d2.mul_((-0.5 / s**2)[:, None, None]))


def _as_gram(K: ArrayLike, name: str = "K") -> torch.Tensor:
    K = _checks.as_float64(K, name)
    if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
        raise ValueError(f"{name} must be a square Gram matrix (or a batch of them), got shape {tuple(K.shape)}")
    if K.shape[-1] < 2:
        raise ValueError(f"{name} is {K.shape[-1]}×{K.shape[-1]}; the estimators need at least 2 samples")
    return K


def _trace_normalise(K: torch.Tensor) -> torch.Tensor:
    tr = torch.diagonal(K, dim1=-2, dim2=-1).sum(-1)
    if not (tr > 0).all():
        raise ValueError("a Gram matrix has trace ≤ 0; it must be positive semi-definite with a positive diagonal")
    return K / tr[..., None, None]


def _entropy_from_spectrum(lam: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rényi entropy (bits) from eigenvalues of unit-trace PSD matrices, last dim."""
    # eigvalsh is accurate to about N·eps·λ_max: below that a "λ" is round-off, and
    # λ^α with α < 1 would amplify it, so zero it and renormalise the spectrum.
    floor = lam.shape[-1] * torch.finfo(lam.dtype).eps * lam.amax(-1, keepdim=True)
    lam = torch.where(lam > floor, lam, torch.zeros((), dtype=lam.dtype))
    lam = lam / lam.sum(-1, keepdim=True)
    if alpha == 1.0:
        return -torch.special.xlogy(lam, lam).sum(-1) / math.log(2.0)
    return torch.log2(lam.pow(alpha).sum(-1)) / (1.0 - alpha)


def _entropy_normalised(A: torch.Tensor, alpha: float) -> torch.Tensor:
    if alpha == 2.0:  # tr(A²) = ‖A‖_F² for symmetric A: no eigen-decomposition
        return -torch.log2((A * A).sum((-2, -1)))
    return _entropy_from_spectrum(torch.linalg.eigvalsh(A), alpha)


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
    alpha = _checks.alpha_order(alpha)
    return _entropy_normalised(_trace_normalise(_as_gram(K)), alpha)


def joint_entropy(*Ks: ArrayLike, alpha: float = 1.01) -> torch.Tensor:
    """Joint entropy ``S_α(A∘B∘…  / tr(A∘B∘…))`` of two or more Gram matrices (§3.4)."""
    if len(Ks) < 2:
        raise ValueError("joint_entropy needs at least two Gram matrices")
    mats = [_as_gram(K, f"K{i}") for i, K in enumerate(Ks)]
    n = {m.shape[-1] for m in mats}
    if len(n) > 1:
        raise ValueError(f"Gram matrices come from different sample counts {sorted(n)}; use the same N samples for every variable")
    H = mats[0]
    for m in mats[1:]:
        H = H * m
    return renyi_entropy(H, alpha)


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
    return renyi_entropy(Kx, alpha) + renyi_entropy(Ky, alpha) - joint_entropy(Kx, Ky, alpha=alpha)


def constant_columns(X: ArrayLike, rtol: float = 1e-12) -> torch.Tensor:
    """Boolean mask of the columns of ``X`` (N, D) that are constant (dead neurons)."""
    return _checks.constant_columns(_checks.sample_matrix(X, "X"), rtol)


def _alpha2_pairwise(K: torch.Tensor) -> torch.Tensor:
    """All-pairs α = 2 MI from one matrix product (method notes, decision 5).

    ‖K_i∘K_j‖_F² = ⟨K_i∘K_i, K_j∘K_j⟩, so the Gram of the squared kernels gives
    every joint term. Each matrix is symmetric: use the strict upper triangle
    twice plus the diagonal, which halves the product.
    """
    D, N, _ = K.shape
    iu = torch.triu_indices(N, N, offset=1)
    Ku = K[:, iu[0], iu[1]]  # (D, N(N−1)/2)
    diag = torch.diagonal(K, dim1=-2, dim2=-1)  # (D, N)
    U, Q = Ku * Ku, diag * diag
    frob = 2.0 * (U @ U.T) + Q @ Q.T  # Σ_ab (K_i K_j)_ab²
    tr = diag @ diag.T  # tr(K_i∘K_j)
    joint = -torch.log2(frob / tr**2)
    marg = -torch.log2((2.0 * U.sum(1) + Q.sum(1)) / diag.sum(1) ** 2)
    joint = 0.5 * (joint + joint.T)  # the product is symmetric up to round-off; make it exact
    mi = marg[:, None] + marg[None, :] - joint
    mi.diagonal().copy_(marg)
    return mi


def _low_rank_factors(A: torch.Tensor, rank_tol: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``L_i`` (D, N, r) with ``A_i ≈ L_i L_iᵀ``, and the exact marginal entropies.

    Eigenpairs below ``rank_tol · λ_max`` are dropped; ``r`` is the largest kept
    rank over the variables (the others are padded with zero columns, which add
    only zero eigenvalues).
    """
    lam, U = torch.linalg.eigh(A)  # ascending
    keep = lam > rank_tol * lam[:, -1:]
    r = int(keep.sum(1).max())
    L = U[:, :, -r:] * torch.where(keep, lam, torch.zeros(())).clamp(min=0).sqrt()[:, None, -r:]
    return L, _entropy_from_spectrum(lam, alpha)


def pairwise_mutual_information(
    X: ArrayLike,
    sigma: ArrayLike,
    alpha: float = 1.01,
    *,
    max_chunk_mb: float = 8.0,
    n_jobs: int | None = None,
    rank_tol: float | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """All-pairs MI matrix between D scalar variables (Eq. 3 for every pair).

    Entry ``(i, j)`` equals ``mutual_information(gram_matrix(X[:, i], σ_i),
    gram_matrix(X[:, j], σ_j), alpha)``; the diagonal holds the marginal
    entropies ``S_α(X_i)`` (Shannon's ``I(X; X) = H(X)``, the natural scale for
    the off-diagonal values).

    For α = 2 everything comes out of one matrix product. Otherwise the
    D(D−1)/2 joint Gram matrices are formed in chunks of at most
    ``max_chunk_mb`` megabytes and their spectra computed with batched
    ``eigvalsh``, the chunks spread over ``n_jobs`` threads (each running
    LAPACK single-threaded, which is faster than one multi-threaded call on
    small matrices). Memory stays at D·N² doubles plus two chunks per thread;
    chunks of a few MB stay in cache (8 MB measured fastest on 2 cores).

    **Low-rank option** (``rank_tol``, off by default, an approximation): RBF Gram
    matrices of scalar variables have rapidly decaying spectra. Truncating each
    ``A_i ≈ L_i L_iᵀ`` to the eigenpairs above ``rank_tol · λ_max`` (rank ``r``),
    the joint matrix is ``A_i∘A_j ≈ M Mᵀ`` with ``M = L_i ⊙_rows L_j`` (N × r²), whose
    non-zero spectrum is that of the r² × r² matrix ``MᵀM``. With r ≈ 6 this is a
    36 × 36 eigenproblem instead of N × N. Marginal entropies stay exact; the
    error of the joint terms is measured in ``benchmarks/bench_pairwise_mi.py``
    and bounded in the tests.

    Parameters
    ----------
    X : (N, D) samples of D scalar variables; no NaN, no constant column.
    sigma : one kernel width or one per variable, in the units of ``X``.
    alpha : Rényi order (> 0).
    max_chunk_mb : memory bound for one chunk of joint Gram matrices.
    n_jobs : threads for the eigen-decompositions (default: torch's thread count).
    rank_tol : if set (e.g. 1e-10), use the low-rank joint spectra described above.
    progress : show a tqdm bar over the chunks.

    Returns
    -------
    (D, D) symmetric float64 tensor of MI values in bits.
    """
    alpha = _checks.alpha_order(alpha)
    K = gram_matrices(X, sigma)
    if alpha == 2.0:
        return _alpha2_pairwise(K)
    D, N, _ = K.shape
    A = K / torch.diagonal(K, dim1=-2, dim2=-1).sum(-1)[:, None, None]
    iu = torch.triu_indices(D, D, offset=1)
    joint = torch.empty(iu.shape[1], dtype=torch.float64)
    if rank_tol is None:
        marg = _entropy_from_spectrum(torch.linalg.eigvalsh(A), alpha)
        size = N * N

        def joint_spectra(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            H = A[i] * A[j]
            H /= torch.diagonal(H, dim1=-2, dim2=-1).sum(-1)[:, None, None]
            return torch.linalg.eigvalsh(H)

    else:
        L, marg = _low_rank_factors(A, _checks.positive(rank_tol, "rank_tol"), alpha)
        r2 = L.shape[-1] ** 2
        size = N * r2 + r2 * r2

        def joint_spectra(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            M = (L[i][:, :, :, None] * L[j][:, :, None, :]).flatten(2)  # (c, N, r²)
            G = M.transpose(1, 2) @ M  # shares the non-zero spectrum of A_i∘A_j
            G /= torch.diagonal(G, dim1=-2, dim2=-1).sum(-1)[:, None, None]
            return torch.linalg.eigvalsh(G)

    chunk = max(1, int(max_chunk_mb * 2**20 // (8 * size)))
    starts = range(0, iu.shape[1], chunk)

    def work(s: int) -> None:
        joint[s : s + chunk] = _entropy_from_spectrum(joint_spectra(iu[0, s : s + chunk], iu[1, s : s + chunk]), alpha)

    n_jobs = n_jobs or torch.get_num_threads()
    bar = tqdm(total=len(starts), desc="joint spectra", unit="chunk", disable=not progress)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            for _ in pool.map(work, starts):
                bar.update()
    finally:
        torch.set_num_threads(threads)
        bar.close()
    mi = torch.empty(D, D, dtype=torch.float64)
    mi[iu[0], iu[1]] = marg[iu[0]] + marg[iu[1]] - joint
    mi[iu[1], iu[0]] = mi[iu[0], iu[1]]
    mi.diagonal().copy_(marg)
    return mi
