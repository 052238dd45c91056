"""The compiled per-pair kernels of the all-pairs MI matrix (numba; :mod:`minilib.estimator.pairwise`
calls them on every block pair of its low-rank path).

For a pair (i, j) the joint matrix ``P = B_i∘B_j`` has unit trace. A greedy pivoted Cholesky
factorisation ``P ≈ L Lᵀ`` adds the column of the largest residual diagonal until the discarded
trace ``tr(P − L Lᵀ)`` is within the budget ε. The residual is positive semi-definite, so its
trace is its trace norm and the error of the joint entropy obeys
:func:`~minilib.estimator.pairwise.joint_error_bound`: the certificate of the torch path, at a rank
close to the smallest any factor reaches (the number of eigenvalues of ``P`` above its ε tail).
The non-zero spectrum of ``L Lᵀ`` is that of the small ``k × k`` matrix ``LᵀL``. Two kernels:

* :func:`hadamard_entropies` factors ``P`` itself, reading its columns from ``B_i`` and ``B_j``
  (N per column). It gives up (NaN) at ``cap`` columns, where the exact ``eigvalsh`` of ``P`` is
  the cheaper way, or where the budget is below round-off (N machine epsilons of the trace).
* :func:`gram_entropies` factors ``MᵀM`` instead, for marginals of low rank: with
  ``A_i = L_i L_iᵀ`` truncated to R_i columns, ``P̃ = M Mᵀ`` has the R_i R_j columns
  ``m_kl = L_i[:, k] ⊙ L_j[:, l]``, and the entries of ``MᵀM`` are read from the block product
  ``Q = W_Iᵀ W_J`` of the torch path. The trace the marginal cut left out counts against the
  same budget; by Weyl a factor of ``MᵀM`` has eigenvalues below those of ``P̃``, hence below
  those of ``P``, so the certificate is unchanged.

The small symmetric eigenproblems are solved here (Householder tridiagonalisation, implicit QL):
LAPACK called from numba (``dsytrd`` + ``dsterf``, or ``eigvalsh``) measured no faster at these
sizes (6–10 µs at k = 16–20, chapter 3b). Each pair is computed alone, by the same operations in
the same order on any thread, so the result does not depend on the number of threads. The
kernels release the GIL; the caller's thread pool runs them in parallel. numba is a dependency;
where it cannot be installed :data:`AVAILABLE` is False and the torch path runs.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba
    from numba import njit
except ImportError:  # the torch path stays the fallback
    numba = None
AVAILABLE = numba is not None

__all__ = ["AVAILABLE", "hadamard_entropies", "gram_entropies"]

_LOG2 = math.log(2.0)
_EPS64 = float(np.finfo(np.float64).eps)
# reassociation lets LLVM vectorise the dot products; the same machine code runs on every thread,
# so results still do not depend on the thread count
_FAST = {"reassoc", "contract"}


def _require() -> None:
    if not AVAILABLE:
        raise RuntimeError("the compiled MI kernel needs numba: pip install 'numba>=0.59', or use kernel='torch'")


def hadamard_entropies(B: np.ndarray, i: np.ndarray, j: np.ndarray, alpha: float, eps: float,
                       cap: int) -> np.ndarray:
    """The Rényi-α entropy (bits) of ``B[i[t]]∘B[j[t]]`` for every t, within the budget ``eps`` of
    discarded trace; NaN where that needs more than ``cap`` columns (or ``eps`` is below round-off).

    ``B``: (D, N, N) float64, C-contiguous, with unit-trace Hadamard products.
    """
    _require()
    out = np.empty(len(i))
    _hadamard_pairs(B, i.astype(np.int64), j.astype(np.int64), float(alpha), float(eps), int(cap), out)
    return out


def gram_entropies(Q: np.ndarray, table: np.ndarray, base: np.ndarray, scale: float, alpha: float,
                   eps: float) -> np.ndarray:
    """The entropy of ``M Mᵀ`` for every pair of a block pair, from the entries of ``MᵀM`` in ``Q``.

    Entry (c, c') of pair t's ``MᵀM`` is ``Q[base[t] + table[c, c']]`` (``Q``: the flat block
    product, ``table``: S × S offsets with S = R_I R_J); ``scale`` turns it into a share of
    ``tr P``. NaN where the budget is not met with all S columns (the marginals' cut took too much).
    """
    _require()
    out = np.empty(len(base))
    _gram_pairs(Q, table.astype(np.int64), base.astype(np.int64), float(scale), float(alpha), float(eps), out)
    return out


if AVAILABLE:
    @njit(cache=True, nogil=True)
    def _entropy(lam: np.ndarray, alpha: float) -> float:
        """:func:`minilib.estimator.entropy.entropy_from_spectrum` for one spectrum."""
        top = 0.0
        for v in lam:
            top = max(top, v)
        floor = len(lam) * _EPS64 * top  # below this a "λ" is eigvalsh's round-off
        total = 0.0
        for v in lam:
            if v > floor:
                total += v
        acc = 0.0
        for v in lam:
            if v > floor:
                p = v / total
                acc += -p * math.log(p) if alpha == 1.0 else p**alpha
        return acc / _LOG2 if alpha == 1.0 else math.log2(acc) / (1.0 - alpha)


    @njit(cache=True, nogil=True, fastmath=_FAST)
    def _tridiagonal(A: np.ndarray, n: int, d: np.ndarray, e: np.ndarray, u: np.ndarray, w: np.ndarray) -> None:
        """Householder reduction of the symmetric ``A[:n, :n]`` (overwritten) to tridiagonal: diagonal
        ``d``, sub-diagonal ``e[:n-1]``; eigenvalues only, so the reflections are not accumulated.
        ``u``, ``w``: scratch of length n (the reflector and ``A v``, contiguous for the inner loops)."""
        for c in range(n - 2):
            lo = c + 1
            norm = 0.0
            for a in range(lo, n):
                u[a] = A[a, c]
                norm += u[a] * u[a]
            norm = math.sqrt(norm)
            x0 = u[lo]
            beta = -norm if x0 >= 0.0 else norm  # the new sub-diagonal entry, signed against cancellation
            vv = norm * norm - x0 * x0 + (x0 - beta) ** 2  # vᵀv with v = x − beta·e1
            if vv == 0.0:
                e[c] = x0
                continue
            e[c] = beta
            u[lo] = x0 - beta
            scale = 2.0 / vv
            for a in range(lo, n):
                w[a] = 0.0
            for a in range(lo, n):  # w = A22 v from its lower triangle (the only one kept up to date)
                ua, acc = u[a], A[a, a] * u[a]
                for b in range(lo, a):
                    acc += A[a, b] * u[b]
                    w[b] += A[a, b] * ua
                w[a] += acc
            for a in range(lo, n):
                w[a] *= scale  # (2 / vᵀv) A22 v
            K = 0.0
            for a in range(lo, n):
                K += u[a] * w[a]
            K /= vv
            for a in range(lo, n):
                w[a] -= K * u[a]  # w − K v
            for a in range(lo, n):  # A22 −= v wᵀ + w vᵀ, lower triangle
                ua, wa = u[a], w[a]
                for b in range(lo, a + 1):
                    A[a, b] -= ua * w[b] + wa * u[b]
        for a in range(n):
            d[a] = A[a, a]
        if n > 1:
            e[n - 2] = A[n - 1, n - 2]
        e[n - 1] = 0.0

    @njit(cache=True, nogil=True)
    def _tridiagonal_eigenvalues(d: np.ndarray, e: np.ndarray, n: int) -> None:
        """Eigenvalues (into ``d[:n]``) of the symmetric tridiagonal (``d``, ``e``) by implicit QL with
        Wilkinson-type shifts; ``e`` is destroyed."""
        for l in range(n):
            for _ in range(64):
                m = l
                while m < n - 1:
                    if abs(e[m]) <= _EPS64 * (abs(d[m]) + abs(d[m + 1])):
                        break
                    m += 1
                if m == l:
                    break
                g = (d[l + 1] - d[l]) / (2.0 * e[l])
                r = math.sqrt(g * g + 1.0)  # no hypot: the deflation test keeps |g| below 1 / (4 eps), no overflow
                g = d[m] - d[l] + e[l] / (g + (r if g >= 0.0 else -r))
                s, c, p = 1.0, 1.0, 0.0
                i = m - 1
                deflated = False
                while i >= l:
                    f, b = s * e[i], c * e[i]
                    r = math.sqrt(f * f + g * g)
                    e[i + 1] = r
                    if r == 0.0:
                        d[i + 1] -= p
                        e[m] = 0.0
                        deflated = True
                        break
                    inv = 1.0 / r
                    s, c = f * inv, g * inv
                    g = d[i + 1] - p
                    r = (d[i] - g) * s + 2.0 * c * b
                    p = s * r
                    d[i + 1] = g + p
                    g = c * r - b
                    i -= 1
                if not deflated:
                    d[l] -= p
                    e[l] = g
                    e[m] = 0.0

    @njit(cache=True, nogil=True, fastmath=_FAST)
    def _add_column(col: np.ndarray, p: int, L: np.ndarray, k: int, r: np.ndarray) -> float:
        """Turn ``col``, column p of the matrix, into the factor's column ``L[k]`` (rows of ``L`` are
        columns, so the updates are contiguous axpys) and take it from the residual diagonal ``r``.

        Returns the residual trace ``Σ r``, or −1 where round-off has used the residual up (what is
        left is below any budget)."""
        n = col.shape[0]
        for t in range(k):
            f = L[t, p]
            for a in range(n):
                col[a] -= L[t, a] * f
        if col[p] <= 0.0:
            return -1.0
        scale = 1.0 / math.sqrt(col[p])
        left = 0.0
        for a in range(n):
            x = col[a] * scale
            L[k, a] = x
            ra = max(r[a] - x * x, 0.0)
            r[a] = ra
            left += ra
        left -= r[p]
        r[p] = 0.0
        return left

    @njit(cache=True, nogil=True, fastmath=_FAST)
    def _factor_entropy(L: np.ndarray, k: int, alpha: float, G: np.ndarray, v: np.ndarray) -> float:
        """The entropy of ``L[:k]ᵀ``'s Gram matrix, from the spectrum of the k × k ``L Lᵀ`` (scratch
        ``G`` and ``v[1:5]``)."""
        n = L.shape[1]
        for s in range(k):  # in reverse pivot order: graded, its large entries at the bottom right,
            for t in range(s, k):  # where QL converges fastest (lower triangle only)
                acc = 0.0
                for a in range(n):
                    acc += L[s, a] * L[t, a]
                G[k - 1 - s, k - 1 - t] = acc
        d, e = v[1], v[2]
        _tridiagonal(G, k, d, e, v[3], v[4])
        _tridiagonal_eigenvalues(d, e, k)
        return _entropy(d[:k], alpha)

    @njit(cache=True, nogil=True, fastmath=_FAST)
    def _hadamard(Bi: np.ndarray, Bj: np.ndarray, alpha: float, eps: float, cap: int, L: np.ndarray,
                  G: np.ndarray, v: np.ndarray) -> float:
        """One pair of :func:`hadamard_entropies`; ``L``, ``G`` (cap × N, cap × cap) and ``v``
        (5 × N) are scratch."""
        r, col = v[0], v[1]
        n = Bi.shape[0]
        for a in range(n):
            r[a] = Bi[a, a] * Bj[a, a]
        total = r.sum()
        left, budget = total, eps * total
        if budget <= n * _EPS64 * total:
            return np.nan
        k = 0
        while left > budget and k < cap:
            p = np.argmax(r)  # r[p] > 0: the residual trace is above a positive budget
            for a in range(n):  # column p of P (= row p: B is symmetric)
                col[a] = Bi[p, a] * Bj[p, a]
            rest = _add_column(col, p, L, k, r)
            if rest < 0.0:
                break
            k += 1
            left = rest
        return np.nan if left > budget else _factor_entropy(L, k, alpha, G, v)

    @njit(cache=True, nogil=True, fastmath=_FAST)
    def _gram(Q: np.ndarray, table: np.ndarray, scale: float, alpha: float, eps: float, L: np.ndarray,
              G: np.ndarray, v: np.ndarray) -> float:
        """One pair of :func:`gram_entropies`; ``Q`` starts at the pair's base offset."""
        S = table.shape[0]
        r, col = v[0], v[1]
        for c in range(S):
            r[c] = Q[table[c, c]] * scale
        left = 1.0  # tr P = 1: what the marginals' cut left out, plus the residual
        gap = 1.0 - r.sum()
        if eps <= S * _EPS64:
            return np.nan
        k = 0
        while left > eps and k < S:
            p = np.argmax(r)
            row = table[p]
            for c in range(S):  # column p = row p: MᵀM is symmetric
                col[c] = Q[row[c]] * scale
            rest = _add_column(col, p, L, k, r)
            if rest < 0.0:
                break
            k += 1
            left = gap + rest
        return np.nan if left > eps else _factor_entropy(L, k, alpha, G, v)

    @njit(cache=True, nogil=True)
    def _hadamard_pairs(B, i, j, alpha, eps, cap, out):  # pragma: no cover - compiled
        n = B.shape[1]
        L, G, v = np.zeros((cap, n)), np.empty((cap, cap)), np.empty((5, n))
        for t in range(len(i)):
            out[t] = _hadamard(B[i[t]], B[j[t]], alpha, eps, cap, L, G, v)

    @njit(cache=True, nogil=True)
    def _gram_pairs(Q, table, base, scale, alpha, eps, out):  # pragma: no cover - compiled
        S = table.shape[0]
        L, G, v = np.zeros((S, S)), np.empty((S, S)), np.empty((5, S))
        for t in range(len(base)):
            out[t] = _gram(Q[base[t]:], table, scale, alpha, eps, L, G, v)
