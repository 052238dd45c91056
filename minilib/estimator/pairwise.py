"""All-pairs mutual information between the D neurons of a layer, at the scale of real models.

Eq. 3 for every pair, ``I(X_i; X_j) = S_α(A_i) + S_α(A_j) − S_α(A_i∘A_j / tr)``, costs one N × N
eigenproblem per pair: D(D−1)/2 of them, 1.18 M at D = 1,536. Three paths compute it (book,
chapter 3, "the all-pairs matrix at scale"):

* **α = 2, exact, no eigenvalues.** ``‖A_i∘A_j‖_F² = ⟨A_i∘A_i, A_j∘A_j⟩``: every joint term of a
  layer comes out of one D × D matrix product of the squared kernels (open decision 5 in the book's introduction).
* **Exact** (``tol=None``): the joint Gram matrices in chunks, batched ``eigvalsh``, chunks spread
  over threads each running LAPACK single-threaded.
* **Certified low rank** (the default for α ≠ 2, ``tol`` bits), in torch below: the reference, the
  fallback without numba, and the GPU path. On the CPU with numba (``kernel="numba"``, the default
  there) every pair goes to a compiled kernel (:mod:`minilib.estimator._kernel`): a greedy pivoted
  Cholesky factor grows until its residual trace is within the same budget ε, then its small
  eigenproblem gives the entropy. The residual is positive semi-definite, so the certificate is the
  one below, at a rank close to the smallest any factor reaches, where the hyperbolic cross keeps
  up to two to three times as many columns. Pairs whose marginals both have rank ≤ 8 factor the
  small ``MᵀM`` of all their R_i R_j columns (its entries from the block GEMM below); the others
  factor the joint matrix ``P = B_i∘B_j`` itself and give up to the exact path at N/2 columns,
  where one ``eigvalsh`` is cheaper (full-rank joints, from narrow kernel widths).

  The torch path: write each marginal in its
  eigenbasis, ``A_i = Σ_k λ_k u_k u_kᵀ``. Then ``A_i∘A_j = Σ_{k,l} m_kl m_klᵀ`` with columns
  ``m_kl = √(λ_k λ'_l) u_k ⊙ u'_l``, and keeping a set of them gives ``P̃ = M Mᵀ ⪯ P``, whose
  non-zero spectrum is that of the small m × m matrix ``MᵀM``. The columns kept for a pair are
  the largest by ``‖m_kl‖²`` (a "hyperbolic cross" of the two spectra, chosen per pair) until the
  discarded trace ``ε = 1 − tr P̃ / tr P`` is within the budget; ranks are first cut per variable
  where its own eigenvalue tail is below ε/4. Because the discarded part ``P − P̃`` is positive
  semi-definite its trace is its trace norm, and the error of the joint entropy obeys
  :func:`joint_error_bound` (a bound, not an estimate; derived in its docstring). ``tol`` is
  converted to ``ε`` once (:func:`trace_budget`), and a pair whose kept set would be N or more
  columns takes the exact path. Marginal entropies are always exact.

All ``MᵀM`` entries of a block of pairs come from one matrix product ``W_Iᵀ W_J`` of the
per-variable products ``W_i[a, (k, k')] = L_i[a, k] L_i[a, k']`` (``L_i = U_i Λ_i^½``), so the
costly part is a GEMM and small batched ``eigvalsh`` calls. Variables are sorted by rank and
cut into blocks, and the work is the list of block pairs: it is fixed by the data alone, so
the result does not depend on the thread count (chunk sizes move only the last bits: vectorised
kernels round a batch of one differently). The compiled kernels compute each pair alone by the
same instructions on any thread, and what they give up is fixed by the data: the result is bit
for bit the same at any thread count.

**Memory** (:func:`memory_bytes`), in bytes: ``8 (D N² + D N (64 + R + T) + D²)`` for the marginal
matrices, the factors while they are built (at most 64 columns) and trimmed to the largest kept rank R,
the products W (T ≤ 36 columns per variable: only ranks up to 8 use them) and the output; plus, per
thread, ``3 × max_chunk_mb + 16 MB + 2 × 8 × 2048²`` for a chunk with its operands and LAPACK's copy,
LAPACK's workspaces, and a block product. Exact path: ``8 (D N² + D²)`` plus the per-thread chunks.
With the compiled kernels, add ``8 max(3 N²/4 + 5 N, 2 × 64² + 5 × 64)`` of scratch per thread.
α = 2: ``8 (D P + D² + 3 × 256 P + 2 × 1024 D)`` with ``P = N(N−1)/2``. At D = 11,008 and N = 100
the worst case (R = 64) is under 4 GB. Chunks are 2 MB: from 8 MB up, glibc keeps freed chunks
mapped on top of the live ones.

On a CUDA tensor everything runs on the GPU, with larger chunks and no thread pool.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from minilib.estimator import _checks, _kernel
from minilib.estimator._checks import ArrayLike
from minilib.estimator.entropy import entropy_from_spectrum, gram_matrices

__all__ = ["pairwise_mutual_information", "joint_error_bound", "trace_budget", "memory_bytes", "resolve_kernel",
           "KERNELS", "DEFAULT_TOL"]

#: Default certified error bound (bits) of each joint entropy on the low-rank path.
DEFAULT_TOL = 1e-6
_CPU_CHUNK_MB = 2.0  # measured as fast as 8 MB on 2 cores, and small enough for glibc to reuse rather than retain
_THREAD_SLACK = 16 * 2**20  # per thread: LAPACK workspaces and allocator slack (measured, bench_pairwise_mi.py)
_BLOCK_COLS = 2048  # columns of W_I in one block: the W_Iᵀ W_J product stays ≤ 32 MB
_MAX_RANK = 64  # a variable's factor keeps at most this many eigenpairs (32 sent a third of SmolLM2's first layer to the exact path)
_TAIL_SHARE = 0.25  # each variable's own eigenvalue tail may take this share of the budget ε
_GEMM_RANK = 8  # blocks up to this rank get all their small Gram entries from one GEMM; above, per pair
_ALPHA2_ROWS = 1024  # rows of the α = 2 product per step (CPU)
_ALPHA2_COLS = 256  # variables whose squared kernels are built at a time
_BUCKET = 4  # kept columns are rounded up to a multiple of this: fewer distinct batch shapes for eigvalsh
_CAP_SHARE = 0.5  # the compiled kernel gives a pair up to eigvalsh past this share of N pivots

#: The implementations of the certified low-rank path: "auto" (compiled where numba is installed and
#: the data are on the CPU, else torch), "numba" (compiled, an error without numba) and "torch".
KERNELS = ("auto", "numba", "torch")


def resolve_kernel(kernel: str, device: torch.device | str = "cpu") -> str:
    """The implementation ``kernel`` names on ``device``: "numba" or "torch" (:data:`KERNELS`)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose from {', '.join(KERNELS)}")
    cpu = torch.device(device).type == "cpu"
    if kernel == "numba" and not (_kernel.AVAILABLE and cpu):
        raise ValueError("kernel='numba' runs on the CPU with numba installed (pip install 'numba>=0.59'); "
                         "use kernel='torch' or 'auto'")
    return "numba" if kernel == "numba" or (kernel == "auto" and _kernel.AVAILABLE and cpu) else "torch"


def joint_error_bound(eps: float, alpha: float, n: int) -> float:
    """Bound (bits) on ``|S_α(ρ) − S_α(σ)|`` when ``σ`` drops a PSD part of trace ``ε`` from ``ρ``.

    ``ρ = P / tr P`` and ``σ = P̃ / tr P̃`` with ``P = P̃ + Δ``, ``Δ ⪰ 0``, ``tr Δ = ε tr P`` and N × N
    matrices. By Weyl the sorted eigenvalues satisfy ``λ_k(P) ≥ λ_k(P̃)`` and differ by ε in total.
    With ``p = Σ λ_k(ρ)^α``, ``q = Σ λ_k(σ)^α``:

    * α > 1: ``f(x) = x^α`` is convex and superadditive on [0, 1], so the unnormalised difference
      ``F`` lies in ``[N^{1−α} ε^α, α ε]``; renormalising by ``1 − ε`` subtracts ``q (1 − (1−ε)^α)
      ∈ [0, α ε]``. Hence ``|p − q| ≤ α ε − N^{1−α} ε^α + α(α−1) ε²/2`` and, since ``p, q ≥ N^{1−α}``,
      ``|ΔS| ≤ |p − q| / ((α − 1) ln 2 · N^{1−α})``.
    * α < 1: the same steps with ``f`` concave and subadditive give ``F ∈ [α ε, N^{1−α} ε^α]``
      and ``|ΔS| ≤ (N^{1−α} ε^α + α ε²) / ((1 − α) ln 2)`` (``p, q ≥ 1``).
    * α = 1: ``‖ρ − σ‖₁ ≤ 2ε``, and the Fannes–Audenaert inequality gives
      ``|ΔS| ≤ ε log2(N − 1) + h₂(ε)``.
    """
    if eps <= 0:
        return 0.0
    if alpha == 1.0:
        h2 = -eps * math.log2(eps) - (1 - eps) * math.log2(1 - eps) if eps < 1 else 0.0
        return eps * math.log2(max(n - 1, 1)) + h2
    floor = n ** (1.0 - alpha)
    if alpha > 1.0:
        gap = alpha * eps - floor * eps**alpha + alpha * (alpha - 1.0) * eps**2 / 2.0
        return max(gap, 0.0) / ((alpha - 1.0) * math.log(2.0) * floor)
    return (floor * eps**alpha + alpha * eps**2) / ((1.0 - alpha) * math.log(2.0))


def trace_budget(tol: float, alpha: float, n: int) -> float:
    """The largest discarded trace ε with ``joint_error_bound(ε, α, n) ≤ tol`` (bisection in log ε)."""
    tol = _checks.positive(tol, "tol (the error bound in bits)")
    lo, hi = -60.0, 0.0  # log10 ε; the bound is increasing in ε
    if joint_error_bound(10**lo, alpha, n) > tol:
        raise ValueError(f"tol={tol:g} bits is below what float64 spectra can certify; use tol ≥ 1e-12 or tol=None")
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if joint_error_bound(10**mid, alpha, n) <= tol else (lo, mid)
    return min(10**lo, 0.5)


def memory_bytes(n_vars: int, n_samples: int, alpha: float = 1.01, tol: float | None = DEFAULT_TOL,
                 rank: int | None = None, n_jobs: int = 1, max_chunk_mb: float = _CPU_CHUNK_MB,
                 kernel: str = "auto") -> int:
    """Peak memory (bytes) of :func:`pairwise_mutual_information` by the formula in the module docstring.

    ``rank`` is the largest per-variable rank kept on the low-rank path (default: the cap, the worst
    case); ``kernel`` the low-rank path's implementation (:func:`resolve_kernel`).
    """
    D, N = int(n_vars), int(n_samples)
    if alpha == 2.0:
        P = N * (N - 1) // 2
        return 8 * (D * P + D * D + 3 * P * min(_ALPHA2_COLS, D) + 2 * _ALPHA2_ROWS * D)
    chunks = n_jobs * (3 * int(max_chunk_mb * 2**20) + _THREAD_SLACK)  # a chunk, its operands, LAPACK's copy
    if tol is None:
        return 8 * (D * N * N + D * D) + chunks
    R = min(N, _MAX_RANK) if rank is None else int(rank)
    T = min(R, _GEMM_RANK) * (min(R, _GEMM_RANK) + 1) // 2
    factors = D * N * (min(N, _MAX_RANK) + R + T)  # L while it is built, L trimmed, the products W
    S = _GEMM_RANK**2  # the compiled kernels' scratch: factor, Gram matrix, five vectors
    cap = max(1, int(_CAP_SHARE * N))
    scratch = 8 * max(cap * N + cap * cap + 5 * N, 2 * S * S + 5 * S)
    scratch = n_jobs * scratch if resolve_kernel(kernel) == "numba" else 0
    return 8 * (D * N * N + factors + D * D) + chunks + n_jobs * 2 * 8 * _BLOCK_COLS**2 + scratch


def _alpha2(X: torch.Tensor, s: torch.Tensor, rows: int) -> torch.Tensor:
    """α = 2 from one product of the squared kernels (the RBF diagonal is 1: ``tr(K_i∘K_j) = N``).

    ``‖K_i∘K_j‖_F² = N + 2 ⟨U_i, U_j⟩`` with ``U_i`` the strict upper triangle of ``K_i∘K_i``,
    which is the RBF kernel at width ``σ_i/√2``. Row blocks of the product fill the upper
    triangle only and are mirrored.
    """
    N, D = X.shape
    iu = torch.triu_indices(N, N, 1, device=X.device)
    U = torch.empty(iu.shape[1], D, dtype=torch.float64, device=X.device)  # column i: the entries of K_i²
    for a in range(0, D, _ALPHA2_COLS):
        x, w = X[:, a : a + _ALPHA2_COLS], -(1.0 / s[a : a + _ALPHA2_COLS].square())
        U[:, a : a + _ALPHA2_COLS] = torch.exp((x[iu[0]] - x[iu[1]]).square_().mul_(w))
    U = U.T
    marg = -torch.log2((N + 2.0 * U.sum(1)) / N**2)
    mi = torch.empty(D, D, dtype=torch.float64, device=X.device)
    for a in range(0, D, rows):
        b = min(a + rows, D)
        blk = (U[a:b] @ U[a:].T).mul_(2.0).add_(N).div_(N**2).log2_()  # in place: one (rows, D) block alive
        blk.add_(marg[a:b, None]).add_(marg[None, a:])
        sq = blk[:, : b - a].triu(1)
        blk[:, : b - a] = sq + sq.T  # the product is symmetric up to round-off: make it exact
        mi[a:b, a:] = blk
        mi[b:, a:b] = blk[:, b - a :].T
    mi.diagonal().copy_(marg)
    return mi


@dataclass
class _Spectra:
    """Per-variable marginal matrices, their exact entropies and the truncated factors."""

    B: torch.Tensor  # (D, N, N) Gram matrices K_i / √N: every B_i∘B_j has unit trace (the RBF diagonal is 1)
    marg: torch.Tensor  # (D,) exact marginal entropies
    L: torch.Tensor | None  # (D, N, R) factors U_i Λ_i^½, zero beyond each variable's rank (None: exact path)
    rank: torch.Tensor | None  # (D,) kept rank per variable


def _spectra(X: torch.Tensor, s: torch.Tensor, alpha: float, eps: float | None, chunk: int,
             pool: ThreadPoolExecutor | None = None) -> _Spectra:
    """Gram matrices and exact marginal entropies; with a budget ``eps`` also the factors cut at tail ε/4.

    Chunks of ``chunk`` variables run on ``pool``'s threads where one is given (each its own slice:
    the result does not depend on the thread count).
    """
    N, D = X.shape
    B = torch.empty(D, N, N, dtype=torch.float64, device=X.device)
    marg = torch.empty(D, dtype=torch.float64, device=X.device)
    cap = min(N, _MAX_RANK)
    L = None if eps is None else torch.empty(D, N, cap, dtype=torch.float64, device=X.device)
    rank = None if eps is None else torch.empty(D, dtype=torch.long, device=X.device)

    def fill(a: int) -> None:
        c = slice(a, a + chunk)
        B[c] = gram_matrices(X[:, c], s[c]).div_(math.sqrt(N))
        if eps is None:
            marg[c] = entropy_from_spectrum(torch.linalg.eigvalsh(B[c]), alpha)  # scale-free
            return
        lam, U = torch.linalg.eigh(B[c])
        marg[c] = entropy_from_spectrum(lam, alpha)
        lam, U = lam.flip(-1).clamp(min=0) / math.sqrt(N), U.flip(-1)  # descending spectrum of A_i = K_i / N
        tail = lam.flip(-1).cumsum(-1).flip(-1)  # tail[:, k] = Σ_{m ≥ k} λ_m
        r = (tail > eps * _TAIL_SHARE).sum(1).clamp(min=1, max=cap)  # above the cap the budget decides per pair
        keep = torch.arange(cap, device=X.device) < r[:, None]
        L[c] = U[:, :, :cap] * (lam[:, :cap] * keep).sqrt()[:, None, :]
        rank[c] = r

    starts = range(0, D, chunk)
    for _ in (pool.map(fill, starts) if pool is not None else map(fill, starts)):
        pass
    if eps is None:
        return _Spectra(B, marg, None, None)
    return _Spectra(B, marg, L[:, :, : int(rank.max())].clone(), rank)


def _blocks(rank: torch.Tensor | None, n_vars: int, max_vars: int = 64) -> list[torch.Tensor]:
    """Variables sorted by rank, cut so that a block's W (or L) has at most ``_BLOCK_COLS`` columns.

    ``rank=None`` (the exact path) cuts ``range(n_vars)`` into blocks of ``max_vars``.
    """
    if rank is None:
        return list(torch.arange(n_vars).split(max_vars))
    order = torch.argsort(rank.cpu(), stable=True)
    r = rank.cpu()[order].tolist()
    blocks, start = [], 0
    for end in range(1, len(r) + 1):
        R = r[end - 1]
        cols = R * (R + 1) // 2 if R <= _GEMM_RANK else R  # columns of W (GEMM blocks) or of L
        if end == len(r) or end - start >= max_vars or (end - start + 1) * cols > _BLOCK_COLS:
            blocks.append(order[start:end])
            start = end
    return blocks


def _tri(R: int, device: torch.device) -> torch.Tensor:
    """(R, R) symmetric lookup of the position of (k, k') with k ≤ k' in the packed upper triangle."""
    iu = torch.triu_indices(R, R, device=device)
    t = torch.empty(R, R, dtype=torch.long, device=device)
    t[iu[0], iu[1]] = torch.arange(iu.shape[1], device=device)
    t[iu[1], iu[0]] = t[iu[0], iu[1]]
    return t


def _gather_table(RI: int, RJ: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ``(MᵀM)[c, c']`` sits in a pair's (T_I, T_J) block, for columns ``c = k RJ + l``.

    Returns the row (packed ``(k, k')``) and the column (packed ``(l, l')``) of each of the
    ``(RI RJ)²`` entries, flattened.
    """
    tI, tJ = _tri(RI, device), _tri(RJ, device)
    k, l = torch.arange(RI * RJ, device=device).div(RJ, rounding_mode="floor"), torch.arange(RI * RJ, device=device) % RJ
    return tI[k[:, None], k[None, :]].flatten(), tJ[l[:, None], l[None, :]].flatten()


class _Work:
    """One run of the all-pairs computation: the spectra, the blocks, the budget and the output."""

    def __init__(self, sp: _Spectra, blocks: list[torch.Tensor], alpha: float, eps: float | None,
                 chunk_bytes: int, kernel: str = "torch") -> None:
        self.sp, self.alpha, self.eps, self.chunk_bytes, self.kernel = sp, alpha, eps, chunk_bytes, kernel
        D, self.n = sp.B.shape[0], sp.B.shape[-1]
        dev = sp.B.device
        self.mi = torch.empty(D, D, dtype=torch.float64, device=dev)
        self.blocks = [b.to(dev) for b in blocks]
        self.R = [] if eps is None else [int(sp.rank[I].max()) for I in self.blocks]
        self.tables: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.W: dict[int, torch.Tensor] = {}  # low-rank blocks: (N, |I| T_I) products L_i[:, k] L_i[:, k'], k ≤ k'
        for a, (I, R) in enumerate(zip(self.blocks, self.R)):
            if R <= _GEMM_RANK:
                u = torch.triu_indices(R, R, device=dev)
                L = sp.L[I, :, :R]
                self.W[a] = (L[:, :, u[0]] * L[:, :, u[1]]).permute(1, 0, 2).reshape(self.n, -1)
        for RI in {R for R in self.R if R <= _GEMM_RANK}:
            for RJ in {R for R in self.R if R <= _GEMM_RANK}:
                self.tables[RI, RJ] = _gather_table(RI, RJ, dev)

    def _store(self, i: torch.Tensor, j: torch.Tensor, joint: torch.Tensor) -> None:
        v = self.sp.marg[i] + self.sp.marg[j] - joint
        self.mi[i, j] = v
        self.mi[j, i] = v

    def _exact(self, i: torch.Tensor, j: torch.Tensor) -> None:
        B, n = self.sp.B, self.n
        step = max(1, self.chunk_bytes // (8 * n * n))
        for a in range(0, len(i), step):
            H = B[i[a : a + step]].mul_(B[j[a : a + step]])  # unit trace up to round-off, which the spectrum's renormalisation absorbs
            self._store(i[a : a + step], j[a : a + step], entropy_from_spectrum(torch.linalg.eigvalsh(H), self.alpha))

    def _gram_entries(self, a: int, b: int, pi: torch.Tensor, pj: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A GEMM block pair's ``MᵀM`` entries: entry (c, c') of pair t is ``Q[base[t] + table[c S + c']]``.

        ``Q[(i, t), (j, t')] = ⟨W_i[:, t], W_j[:, t']⟩`` is one product, read in place by flat
        offsets (no permuted copy); columns are ``c = k R_J + l`` (:func:`_gather_table`).
        """
        RI, RJ, nJ = self.R[a], self.R[b], len(self.blocks[b])
        TI, TJ = RI * (RI + 1) // 2, RJ * (RJ + 1) // 2
        row, col = self.tables[RI, RJ]
        return (self.W[a].T @ self.W[b]).reshape(-1), row * (nJ * TJ) + col, pi * (TI * nJ * TJ) + pj * TJ

    def _compiled(self, a: int, b: int, pi: torch.Tensor, pj: torch.Tensor) -> None:
        """The pairs (``pi``, ``pj``) of block pair (a, b) through the compiled kernels: GEMM blocks
        factor ``MᵀM`` from their block product, the others ``P`` itself; the pairs a kernel gives up
        take the exact path."""
        I, J = self.blocks[a], self.blocks[b]
        if a in self.W and b in self.W:
            Q, table, base = self._gram_entries(a, b, pi, pj)
            joint = _kernel.gram_entropies(Q.numpy(), table.view(self.R[a] * self.R[b], -1).numpy(), base.numpy(),
                                           self.n, self.alpha, self.eps)
        else:
            joint = _kernel.hadamard_entropies(self.sp.B.numpy(), I[pi].numpy(), J[pj].numpy(), self.alpha,
                                               self.eps, max(1, int(_CAP_SHARE * self.n)))
        joint = torch.from_numpy(joint)
        done = ~joint.isnan()
        self._store(I[pi[done]], J[pj[done]], joint[done])
        if not done.all():
            self._exact(I[pi[~done]], J[pj[~done]])

    def unit(self, a: int, b: int) -> None:
        """Every pair (i ∈ block a, j ∈ block b), each unordered pair once when ``a == b``."""
        I, J = self.blocks[a], self.blocks[b]
        dev, n = I.device, self.n
        pi, pj = (torch.triu_indices(len(I), len(I), 1, device=dev) if a == b else
                  torch.cartesian_prod(torch.arange(len(I), device=dev), torch.arange(len(J), device=dev)).T)
        if pi.numel() == 0:
            return
        if self.eps is None:
            return self._exact(I[pi], J[pj])
        if self.kernel == "numba":
            return self._compiled(a, b, pi, pj)
        RI, RJ = self.R[a], self.R[b]
        S = RI * RJ
        LI, LJ = self.sp.L[I, :, :RI], self.sp.L[J, :, :RJ]
        # column norms ‖m_kl‖² = Σ_a L_i[a,k]² L_j[a,l]² of every pair, from one product
        norms = (LI.square().permute(1, 0, 2).reshape(n, -1).T @ LJ.square().permute(1, 0, 2).reshape(n, -1))
        norms = norms.reshape(len(I), RI, len(J), RJ).permute(0, 2, 1, 3)[pi, pj].reshape(len(pi), S)
        C, order = torch.sort(norms * n, dim=1, descending=True, stable=True)
        left = 1.0 - C.cumsum(1)  # discarded trace after keeping the first m columns
        m = (left > self.eps).sum(1) + 1
        exact = (m >= n) | (m > S)  # too many columns, or a capped rank left too much out
        if exact.any():
            self._exact(I[pi[exact]], J[pj[exact]])
        size = torch.clamp((m + _BUCKET - 1) // _BUCKET * _BUCKET, max=S)
        size[exact] = 0
        gemm = a in self.W and b in self.W
        if gemm:
            Q, table, base = self._gram_entries(a, b, pi, pj)
        for w in torch.unique(size[~exact]).tolist():
            sel = (size == w).nonzero().flatten()
            step = max(1, self.chunk_bytes // (8 * (w * w if gemm else n * (RI + RJ + 3 * w))))
            for s in range(0, len(sel), step):
                p = sel[s : s + step]
                o = order[p, :w]  # (c, w) kept columns c = k RJ + l
                if gemm:
                    G = Q.take(table.take(o[:, :, None] * S + o[:, None, :]).add_(base[p, None, None]))
                else:  # higher ranks: gather the kept columns m_kl and form MᵀM directly
                    k, l = (o.div(RJ, rounding_mode="floor"), o % RJ)
                    M = (LI[pi[p]].gather(2, k[:, None, :].expand(-1, n, -1)) *
                         LJ[pj[p]].gather(2, l[:, None, :].expand(-1, n, -1)))
                    G = M.transpose(1, 2) @ M
                G /= torch.diagonal(G, dim1=-2, dim2=-1).sum(-1)[:, None, None]
                self._store(I[pi[p]], J[pj[p]], entropy_from_spectrum(torch.linalg.eigvalsh(G), self.alpha))


def pairwise_mutual_information(
    X: ArrayLike,
    sigma: ArrayLike,
    alpha: float = 1.01,
    *,
    tol: float | None = DEFAULT_TOL,
    max_chunk_mb: float | None = None,
    n_jobs: int | None = None,
    progress: bool = False,
    kernel: str = "auto",
) -> torch.Tensor:
    """All-pairs MI matrix between D scalar variables (Eq. 3 for every pair), in bits.

    Entry ``(i, j)`` is ``mutual_information(gram_matrix(X[:, i], σ_i), gram_matrix(X[:, j], σ_j),
    alpha)``; the diagonal holds the marginal entropies ``S_α(X_i)`` (Shannon's ``I(X; X) = H(X)``).
    The paths, the error bound and the memory formula are in the module docstring.

    Parameters
    ----------
    X : (N, D) samples of D scalar variables; no NaN, no constant column. A CUDA tensor keeps
        the whole computation on its GPU.
    sigma : one kernel width or one per variable, in the units of ``X``.
    alpha : Rényi order (> 0). α = 2 is always exact.
    tol : certified bound, in bits, on the error of every joint entropy (hence of every MI
        entry) on the low-rank path; ``None`` computes every joint spectrum exactly.
    max_chunk_mb : memory of one chunk of matrices (default 2 MB on CPU, 512 MB on a GPU).
    n_jobs : CPU threads (default: torch's thread count), each running LAPACK single-threaded.
    progress : show a tqdm bar over the blocks of pairs.
    kernel : the low-rank path's implementation, ``"auto"`` (compiled with numba on the CPU, else
        torch), ``"numba"`` or ``"torch"`` (:data:`KERNELS`); both keep the certified bound.

    Returns
    -------
    (D, D) symmetric float64 tensor on the device of ``X``.
    """
    alpha = _checks.alpha_order(alpha)
    X = _checks.sample_matrix(X, "X", keep_device=True)
    _checks.no_constant_columns(X, "X")
    s = _checks.sigmas(sigma, X.shape[1]).to(X.device)
    kernel = resolve_kernel(kernel, X.device)  # refused before any work
    N, D = X.shape
    cuda = X.device.type == "cuda"
    chunk_bytes = int((max_chunk_mb or (512.0 if cuda else _CPU_CHUNK_MB)) * 2**20)
    if alpha == 2.0:
        return _alpha2(X, s, rows=max(1, chunk_bytes // (8 * D)) if cuda else _ALPHA2_ROWS)
    eps = None if tol is None else trace_budget(tol, alpha, N)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same single-threaded kernels however many workers: results do not depend on n_jobs
    try:  # a GPU takes one stream of work: one worker keeps its kernels in order
        with ThreadPoolExecutor(max_workers=1 if cuda else n_jobs or threads) as pool:
            sp = _spectra(X, s, alpha, eps, max(1, chunk_bytes // (8 * N * N)), pool)
            work = _Work(sp, _blocks(sp.rank, D), alpha, eps, chunk_bytes, kernel)
            units = [(a, b) for a in range(len(work.blocks)) for b in range(a, len(work.blocks))]
            with tqdm(total=len(units), desc="MI pairs", unit="block", disable=not progress) as bar:
                for _ in pool.map(lambda u: work.unit(*u), units):
                    bar.update()
    finally:
        torch.set_num_threads(threads)
    work.mi.diagonal().copy_(sp.marg)
    return work.mi
