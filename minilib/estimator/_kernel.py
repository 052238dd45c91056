"""The compiled per-pair kernel of the all-pairs MI matrix (numba; :mod:`minilib.estimator.pairwise`
sends it the pairs outside its GEMM blocks).

For a pair (i, j) the joint matrix is ``P = B_i∘B_j`` (unit trace). A greedy pivoted Cholesky
factorisation ``P ≈ L Lᵀ`` adds the column of the largest residual diagonal until the residual
trace ``tr(P − L Lᵀ)`` is within the budget ε. The residual is positive semi-definite, so its
trace is its trace norm and the error of the joint entropy obeys
:func:`~minilib.estimator.pairwise.joint_error_bound`: the same certificate as the torch path, at a
rank close to the smallest any factor reaches (the number of eigenvalues of ``P`` above its ε tail).
The non-zero spectrum of ``L Lᵀ`` is that of the small ``k × k`` matrix ``LᵀL``. A budget below
round-off (N machine epsilons of the trace), or a factor that round-off ends before the budget, takes
the exact spectrum of ``P`` instead, as the torch path's exact fallback does. The small symmetric
eigenproblems are solved here (Householder tridiagonalisation, implicit QL): LAPACK called from
numba (``dsytrd`` + ``dsterf``, or ``eigvalsh``) measured no faster at these sizes (6–10 µs at
k = 16–20, chapter 3b), and an own solver keeps every thread's arithmetic the same.

Each pair is computed alone, by the same operations in the same order on any thread, so the
result does not depend on the number of threads. numba is a dependency; where it cannot be
installed :data:`AVAILABLE` is False and the torch path runs.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # the torch path stays the fallback
    numba = None
AVAILABLE = numba is not None

__all__ = ["AVAILABLE", "joint_entropies"]

_LOG2 = math.log(2.0)
_EPS64 = float(np.finfo(np.float64).eps)
# reassociation lets LLVM vectorise the dot products; the same machine code runs on every thread,
# so results still do not depend on the thread count
_FAST = {"reassoc", "contract"}


def joint_entropies(B: np.ndarray, i: np.ndarray, j: np.ndarray, alpha: float, eps: float,
                    threads: int) -> np.ndarray:
    """The Rényi-α entropy (bits) of ``B[i[t]]∘B[j[t]]`` for every t, each within the budget ``eps`` of
    discarded trace, in parallel over the pairs on ``threads`` threads.

    ``B``: (D, N, N) float64, C-contiguous, with unit-trace Hadamard products.
    """
    if not AVAILABLE:
        raise RuntimeError("the compiled MI kernel needs numba: pip install 'numba>=0.59', or use kernel='torch'")
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        out = np.empty(len(i))
        _pairs(B, i.astype(np.int64), j.astype(np.int64), float(alpha), float(eps), out)
    finally:
        numba.set_num_threads(previous)
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
    def _joint(Bi: np.ndarray, Bj: np.ndarray, alpha: float, eps: float, L: np.ndarray, G: np.ndarray,
               v: np.ndarray) -> float:
        """The entropy of one pair's ``Bi∘Bj`` from its pivoted Cholesky factor.

        ``L[t]`` is the factor's column t (rows of length N: the updates are contiguous axpys); ``G``
        (N × N) and ``v`` (5 × N) are scratch."""
        r, col, e, u, w = v[0], v[1], v[2], v[3], v[4]
        n = Bi.shape[0]
        for a in range(n):
            r[a] = Bi[a, a] * Bj[a, a]
        left = r.sum()
        budget = eps * left
        k = 0
        while k < n and left > budget and budget > n * _EPS64 * left:
            p = np.argmax(r)  # r[p] > 0: the residual trace is above a positive budget
            for a in range(n):  # column p of P (= row p: B is symmetric)
                col[a] = Bi[p, a] * Bj[p, a]
            for t in range(k):
                f = L[t, p]
                for a in range(n):
                    col[a] -= L[t, a] * f
            if col[p] <= 0.0:  # round-off has used up the residual: what is left is below any budget
                break
            scale = 1.0 / math.sqrt(col[p])
            left = 0.0
            for a in range(n):
                x = col[a] * scale
                L[k, a] = x
                r[a] = max(r[a] - x * x, 0.0)
                left += r[a]
            r[p] = 0.0
            k += 1
        if left > budget:  # a budget below round-off, or round-off ended the factor early: the exact spectrum
            k = n
            for s in range(n):
                for t in range(s + 1):
                    G[s, t] = Bi[s, t] * Bj[s, t]
        else:
            for s in range(k):  # LᵀL in reverse pivot order: graded, its large entries at the bottom right,
                for t in range(s, k):  # where QL converges fastest (lower triangle only)
                    acc = 0.0
                    for a in range(n):
                        acc += L[s, a] * L[t, a]
                    G[k - 1 - s, k - 1 - t] = acc
        d = col  # free now
        _tridiagonal(G, k, d, e, u, w)
        _tridiagonal_eigenvalues(d, e, k)
        return _entropy(d[:k], alpha)

    @njit(parallel=True, cache=True, nogil=True)
    def _pairs(B, i, j, alpha, eps, out):  # pragma: no cover - compiled
        n, m = B.shape[1], len(i)
        chunk = 64  # pairs per task, which allocates its scratch once
        for c in prange((m + chunk - 1) // chunk):
            L, G, v = np.zeros((n, n)), np.empty((n, n)), np.empty((5, n))
            for t in range(c * chunk, min(m, (c + 1) * chunk)):
                out[t] = _joint(B[i[t]], B[j[t]], alpha, eps, L, G, v)
