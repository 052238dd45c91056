"""Synthetic data with known structure, for the chapters on toy data (1–2).

Every generator takes a ``seed`` and returns float64 tensors, samples in rows.
"""

from __future__ import annotations

import math

import torch

__all__ = ["correlated_gaussians", "gaussian_mi_bits", "dependence_zoo", "gelu_layer", "duplicate_recovery"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def correlated_gaussians(n: int, rho: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of a standard bivariate Gaussian with correlation ``rho``."""
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must be in (-1, 1), got {rho}")
    g = _gen(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    e = torch.randn(n, generator=g, dtype=torch.float64)
    return x, rho * x + math.sqrt(1.0 - rho**2) * e


def gaussian_mi_bits(rho: float) -> float:
    """Shannon MI of a bivariate Gaussian, ``−½ log2(1 − ρ²)`` bits."""
    return -0.5 * math.log2(1.0 - rho**2)


def dependence_zoo(n: int, noise: float = 0.1, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pairs (x, y) with different kinds of dependence, several invisible to Pearson's r.

    ``linear``: y = x + noise; ``quadratic``: y = x² + noise (r ≈ 0);
    ``sine``: y = sin(3x) + noise (weak r); ``circle``: a noisy ring (r ≈ 0);
    ``independent``: unrelated Gaussians.
    """
    g = _gen(seed)

    def rnd() -> torch.Tensor:
        return torch.randn(n, generator=g, dtype=torch.float64)

    x = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    t = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    return {
        "linear": (x, x + noise * 2 * rnd()),
        "quadratic": (x, x**2 + noise * 2 * rnd()),
        "sine": (x, torch.sin(3 * x) + noise * rnd()),
        "circle": (torch.cos(t) + noise * rnd(), torch.sin(t) + noise * rnd()),
        "independent": (rnd(), rnd()),
    }


def gelu_layer(
    n: int,
    n_neurons: int = 512,
    n_inputs: int = 128,
    n_clusters: int = 5,
    n_duplicates: int = 0,
    scale: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """Activations (n, n_neurons) of a random GELU layer on clustered inputs.

    A stand-in for a transformer FFN layer (BERT-tiny: 128 → 512): inputs come
    from ``n_clusters`` Gaussian clusters (sentences are not i.i.d. noise), the
    weights are random with variance 1/n_inputs, and ``scale`` sets the size of the
    pre-activations. The last ``n_duplicates`` neurons are noisy copies of the
    first ones: planted redundancy that an MI criterion should find.
    """
    if not 0 <= n_duplicates < n_neurons:
        raise ValueError(f"n_duplicates must be in [0, n_neurons), got {n_duplicates}")
    g = _gen(seed)
    centres = 2.0 * torch.randn(n_clusters, n_inputs, generator=g, dtype=torch.float64)
    h = torch.randn(n, n_inputs, generator=g, dtype=torch.float64)
    h += centres[torch.randint(0, n_clusters, (n,), generator=g)]
    W = torch.randn(n_inputs, n_neurons, generator=g, dtype=torch.float64) / math.sqrt(n_inputs)
    pre = scale * (h @ W)
    k = n_duplicates
    if k:
        pre[:, -k:] = pre[:, :k] + 0.05 * scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    return torch.nn.functional.gelu(pre)


def duplicate_recovery(similarity: torch.Tensor, n_duplicates: int) -> float:
    """The fraction of :func:`gelu_layer`'s planted copies whose most similar other neuron is their original.

    ``similarity`` is a (D, D) map (the MI map of the layer); copy ``D − k + c`` duplicates neuron ``c``.
    """
    S = torch.as_tensor(similarity, dtype=torch.float64).clone()
    D = S.shape[0]
    if S.shape != (D, D) or not 0 < n_duplicates < D:
        raise ValueError(f"need a square map and 0 < n_duplicates < D, got shape {tuple(S.shape)} and {n_duplicates}")
    S.fill_diagonal_(-math.inf)
    best = S[D - n_duplicates:].argmax(1)
    return (best == torch.arange(n_duplicates)).double().mean().item()
