"""Per-neuron kernel width by kernel alignment (paper §3.4, Eq. 4 and 6–8).

The recipe of the paper, one neuron ``n`` of a layer with d neurons at a time:

1. Scott's rule gives a width for the whole layer, ``σ_ℓ = γ N^(−1/(4+d))`` (Eq. 4);
2. the layer's RBF Gram matrix ``K_ℓ`` uses it on the d-dimensional activations (Eq. 5);
3. the neuron's width maximises the kernel alignment with it (Eq. 6–7),
   ``σ_n* = argmax_σ ⟨K_σ(z_n), K_ℓ⟩_F / (‖K_σ(z_n)‖_F ‖K_ℓ‖_F)``;
4. across mini-batches the widths are smoothed by an EMA (Eq. 8),
   ``σ_{n,t} = β σ_{n,t−1} + (1 − β) σ*_{n,t}``.

**The degeneracy (open decision 3 in the book's introduction; chapter 2).** With γ = 1 and d = 512, Eq. 4 gives
σ_ℓ ≈ 0.99 whatever the scale of the activations. On raw activations the squared
distances between samples summed over 512 neurons dwarf 2σ_ℓ², ``K_ℓ`` is close to
the identity, and the alignment then pushes every σ_n towards 0, where every
neuron's Gram matrix is the identity too and every MI is log2 N. The parameter
``normalization`` makes the fix explicit:

* ``"zscore"`` (default): each neuron is standardised over the batch, and the
  layer's squared distances are divided by d (a per-neuron mean), so σ_ℓ and σ_n
  are both in units of one standard deviation;
* ``"none"``: the equations exactly as printed, degenerate on real activations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch

from minilib.estimator import _checks
from minilib.estimator._checks import ArrayLike
from minilib.estimator.entropy import gram_matrix, squared_distances
from minilib.estimator.pairwise import pairwise_mutual_information

Normalization = Literal["zscore", "none"]
NORMALIZATIONS: tuple[str, ...] = ("zscore", "none")

#: Candidate widths, in units of each variable's standard deviation, searched
#: before the golden-section refinement of Eq. 7.
DEFAULT_GRID = torch.logspace(-3, 2, 26, dtype=torch.float64)

__all__ = [
    "scott_sigma",
    "kernel_alignment",
    "normalize",
    "layer_gram",
    "aligned_sigmas",
    "ema",
    "alignment_curves",
    "NeuronKernelWidth",
]


def scott_sigma(n_samples: int, n_dims: int, gamma: float = 1.0) -> float:
    """Scott's rule for the layer's kernel width, ``σ_ℓ = γ N^(−1/(4+d))`` (Eq. 4)."""
    if int(n_samples) < 2 or int(n_dims) < 1:
        raise ValueError(f"Scott's rule needs N ≥ 2 samples and d ≥ 1 dimensions, got N={n_samples}, d={n_dims}")
    gamma = _checks.positive(gamma, "gamma")
    return gamma * float(n_samples) ** (-1.0 / (4.0 + n_dims))


def kernel_alignment(K1: ArrayLike, K2: ArrayLike) -> torch.Tensor:
    """Kernel alignment ``⟨K1, K2⟩_F / (‖K1‖_F ‖K2‖_F)`` (Eq. 6), batched over leading dims."""
    K1 = _checks.as_float64(K1, "K1")
    K2 = _checks.as_float64(K2, "K2")
    if K1.shape[-2:] != K2.shape[-2:]:
        raise ValueError(f"kernel matrices differ in shape: {tuple(K1.shape[-2:])} vs {tuple(K2.shape[-2:])}")
    num = (K1 * K2).sum((-2, -1))
    return num / (torch.linalg.matrix_norm(K1) * torch.linalg.matrix_norm(K2))


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def normalize(X: ArrayLike, normalization: Normalization = "zscore") -> torch.Tensor:
    """Put a batch of activations (N, D) in the units the kernel widths refer to.

    ``"zscore"`` standardises every column over the batch (population std);
    ``"none"`` returns the values unchanged. Constant columns are rejected.
    """
    _check_normalization(normalization)
    X = _checks.sample_matrix(X, "X")
    _checks.no_constant_columns(X, "X")
    if normalization == "none":
        return X
    return (X - X.mean(0)) / X.std(0, correction=0)


def layer_gram(X: ArrayLike, sigma: float, normalization: Normalization = "zscore") -> torch.Tensor:
    """The layer's RBF Gram matrix ``K_ℓ`` on the D-dimensional activation vectors (Eq. 5).

    ``X`` is already normalised (see :func:`normalize`). With ``"zscore"`` the
    squared distances are divided by D, so a width of about 1 is meaningful
    whatever the layer size; with ``"none"`` they are used as printed.
    """
    _check_normalization(normalization)
    X = _checks.sample_matrix(X, "X")
    sigma = _checks.positive(sigma, "sigma (the layer's kernel width)")
    d2 = squared_distances(X)
    if normalization == "zscore":
        d2 /= X.shape[1]
    return torch.exp(d2 / (-2.0 * sigma**2))


def _alignment_upper(d2u: torch.Tensor, sigma: torch.Tensor, ref_u: torch.Tensor, ref_tr: float, ref_norm: float,
                     n: int, buf: torch.Tensor) -> torch.Tensor:
    """Alignment of RBF kernels with the reference, from strict upper triangles.

    ``d2u`` (c, P) squared distances of c variables, ``sigma`` (c, G) widths;
    the diagonal of an RBF kernel is 1, and symmetry counts the triangle twice.
    The kernels are written into ``buf`` (at least c·G·P elements): a fresh tensor of
    that size is page-faulted in on every call and made the exponential 4× slower.
    """
    c, G = sigma.shape
    K = torch.mul(d2u[:, None, :], (-0.5 / sigma.square())[:, :, None], out=buf[: c * G * d2u.shape[1]].view(c, G, -1))
    K.exp_()
    num = ref_tr + 2.0 * (K @ ref_u)
    norm = torch.sqrt(n + 2.0 * torch.einsum("cgp,cgp->cg", K, K))  # a batched GEMM: 6× faster than vecdot here
    return num / (norm * ref_norm)


def aligned_sigmas(
    X: ArrayLike,
    reference: ArrayLike,
    *,
    grid: ArrayLike = DEFAULT_GRID,
    refine_steps: int = 30,
    chunk: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-variable kernel width maximising alignment with a reference kernel (Eq. 7).

    For every column ``x_n`` of ``X`` (N, D):
    ``σ_n* = argmax_σ A(K_σ(x_n), reference)`` with ``A`` the alignment of Eq. 6.
    The search evaluates ``grid`` (multiples of the column's standard deviation),
    then narrows the bracket around the best grid point by ``refine_steps``
    golden-section steps in log σ.

    Returns
    -------
    sigma : (D,) widths, in the units of ``X``.
    alignment : (D,) the alignment reached at ``sigma``.
    """
    X = _checks.sample_matrix(X, "X")
    _checks.no_constant_columns(X, "X")
    R = _checks.as_float64(reference, "reference")
    N, D = X.shape
    if R.shape != (N, N):
        raise ValueError(f"reference kernel must be {N}×{N} to match X's {N} samples, got {tuple(R.shape)}")
    g = torch.as_tensor(grid, dtype=torch.float64).flatten()
    if g.numel() < 3 or not (g > 0).all():
        raise ValueError("grid must hold at least 3 positive widths (multiples of each variable's std)")
    g = g.sort().values
    iu = torch.triu_indices(N, N, offset=1)
    ref_u, ref_tr, ref_norm = R[iu[0], iu[1]], float(R.diagonal().sum()), float(torch.linalg.matrix_norm(R))
    std = X.std(0, correction=0)
    log_g = g.log()
    out_sigma, out_align = torch.empty(D, dtype=torch.float64), torch.empty(D, dtype=torch.float64)
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    buf = torch.empty(min(chunk, D) * len(g) * iu.shape[1], dtype=torch.float64)
    for s in range(0, D, chunk):
        cols = X[:, s : s + chunk].T  # (c, N)
        d2u = ((cols[:, :, None] - cols[:, None, :]) ** 2)[:, iu[0], iu[1]]  # (c, P)
        scale = std[s : s + chunk, None].log()
        score = _alignment_upper(d2u, (scale + log_g).exp(), ref_u, ref_tr, ref_norm, N, buf)
        best = score.argmax(1)
        lo = log_g[(best - 1).clamp(min=0)] + scale[:, 0]
        hi = log_g[(best + 1).clamp(max=len(g) - 1)] + scale[:, 0]
        # golden section on log σ, vectorised over columns: one new evaluation per step
        a, b = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
        fa, fb = _alignment_upper(d2u, torch.stack([a, b], 1).exp(), ref_u, ref_tr, ref_norm, N, buf).unbind(1)
        for _ in range(refine_steps):
            left = fa >= fb  # the maximum lies in [lo, b]: b becomes hi, a becomes b
            hi, lo = torch.where(left, b, hi), torch.where(left, lo, a)
            new = torch.where(left, hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo))
            fn = _alignment_upper(d2u, new[:, None].exp(), ref_u, ref_tr, ref_norm, N, buf)[:, 0]
            a, b, fa, fb = (torch.where(left, new, b), torch.where(left, a, new),
                            torch.where(left, fn, fb), torch.where(left, fa, fn))
        mid = 0.5 * (lo + hi)
        cand = torch.stack([mid, log_g[best] + scale[:, 0]], 1)
        f = _alignment_upper(d2u, cand.exp(), ref_u, ref_tr, ref_norm, N, buf)
        pick = f.argmax(1, keepdim=True)  # keep the grid point if refinement did not improve on it
        out_sigma[s : s + chunk] = cand.gather(1, pick).squeeze(1).exp()
        out_align[s : s + chunk] = f.gather(1, pick).squeeze(1)
    return out_sigma, out_align


def alignment_curves(X: ArrayLike, reference: ArrayLike, neurons: list[int], grid: ArrayLike) -> "pd.DataFrame":
    """The alignment (Eq. 6) of each listed column's kernel with ``reference`` at ``grid`` × its std.

    The objective that :func:`aligned_sigmas` maximises, on a grid (chapter 2): one row per
    ``(neuron, σ / std)``.
    """
    import pandas as pd

    X = _checks.sample_matrix(X, "X")
    std = X.std(0, correction=0)
    g = torch.as_tensor(grid, dtype=torch.float64).flatten()
    rows = [{"neuron": n, "σ / std": float(w),
             "alignment": kernel_alignment(gram_matrix(X[:, n], float(w * std[n])), reference).item()}
            for n in neurons for w in g]
    return pd.DataFrame(rows)


def ema(previous: ArrayLike | None, current: ArrayLike, beta: float = 0.9) -> torch.Tensor:
    """Exponential moving average of widths, ``β σ_{t−1} + (1 − β) σ*_t`` (Eq. 8).

    ``previous=None`` starts the average: ``σ_1 = σ*_1``.
    """
    beta = _checks.unit_interval(beta, "beta")
    cur = _checks.as_float64(current, "current")
    if previous is None:
        return cur.clone()
    prev = _checks.as_float64(previous, "previous")
    if prev.shape != cur.shape:
        raise ValueError(f"previous widths have shape {tuple(prev.shape)} but the new ones {tuple(cur.shape)}")
    return beta * prev + (1.0 - beta) * cur


class NeuronKernelWidth:
    """Per-neuron kernel widths for one layer, fitted over mini-batches (§3.4).

    Each call to :meth:`partial_fit` with a batch (N, D) of activations normalises
    it, builds the layer kernel with Scott's width (or ``layer_sigma``), picks
    each neuron's width by alignment (Eq. 7) and folds it into the EMA (Eq. 8).

    Parameters
    ----------
    normalization : ``"zscore"`` (default) or ``"none"``; see the module docstring.
    gamma : Scott's constant γ in Eq. 4 (the paper: 1).
    beta : EMA factor β in Eq. 8 (the paper leaves it open; 0.9 is the usual value).
    layer_sigma : override σ_ℓ instead of Scott's rule.
    grid, refine_steps : passed to :func:`aligned_sigmas`.

    Attributes
    ----------
    sigma_ : (D,) the smoothed widths, in normalised units.
    layer_sigma_ : σ_ℓ used on the last batch.
    alignment_ : (D,) alignment reached on the last batch.
    history_ : list of the per-batch optimal widths σ*_t, one (D,) tensor per batch.
    """

    def __init__(
        self,
        normalization: Normalization = "zscore",
        gamma: float = 1.0,
        beta: float = 0.9,
        layer_sigma: float | None = None,
        grid: ArrayLike = DEFAULT_GRID,
        refine_steps: int = 30,
    ) -> None:
        _check_normalization(normalization)
        self.normalization = normalization
        self.gamma = _checks.positive(gamma, "gamma")
        self.beta = _checks.unit_interval(beta, "beta")
        self.layer_sigma = None if layer_sigma is None else _checks.positive(layer_sigma, "layer_sigma")
        self.grid = grid
        self.refine_steps = refine_steps
        self.sigma_: torch.Tensor | None = None
        self.history_: list[torch.Tensor] = []

    def partial_fit(self, X: ArrayLike) -> "NeuronKernelWidth":
        """Update the widths with one batch of activations, shape (N, D)."""
        Z = normalize(X, self.normalization)
        if self.sigma_ is not None and Z.shape[1] != self.sigma_.numel():
            raise ValueError(f"batch has {Z.shape[1]} neurons but earlier batches had {self.sigma_.numel()}")
        self.layer_sigma_ = self.layer_sigma or scott_sigma(Z.shape[0], Z.shape[1], self.gamma)
        K_layer = layer_gram(Z, self.layer_sigma_, self.normalization)
        best, self.alignment_ = aligned_sigmas(Z, K_layer, grid=self.grid, refine_steps=self.refine_steps)
        self.history_.append(best)
        self.sigma_ = ema(self.sigma_, best, self.beta)
        return self

    def fit(self, batches: Iterable[ArrayLike]) -> "NeuronKernelWidth":
        """Fit from scratch on an iterable of batches (each (N, D))."""
        self.sigma_, self.history_ = None, []
        for batch in batches:
            self.partial_fit(batch)
        if self.sigma_ is None:
            raise ValueError("fit() got no batches; pass at least one (N, D) batch of activations")
        return self

    def mutual_information(self, X: ArrayLike, alpha: float = 1.01, **kwargs) -> torch.Tensor:
        """All-pairs MI (D, D) of a batch, normalised like the fit and with the fitted widths."""
        if self.sigma_ is None:
            raise ValueError("NeuronKernelWidth is not fitted; call fit() or partial_fit() first")
        return pairwise_mutual_information(normalize(X, self.normalization), self.sigma_, alpha, **kwargs)
