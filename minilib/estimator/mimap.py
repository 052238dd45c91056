"""The MI map of a layer: mutual information between every pair of its FFN neurons (§3.3.2, §3.4).

For each encoder layer, on a calibration sample (the paper: a random 1% of the task's
training set) cut into mini-batches of 100 samples:

1. the per-neuron kernel widths are fitted batch by batch (alignment, Eq. 7) and smoothed
   across batches (EMA, Eq. 8) by :class:`~minilib.estimator.kernel_width.NeuronKernelWidth`;
2. on each batch, the all-pairs MI matrix (Eq. 3) is computed with the widths as they stand
   after that batch (the running EMA), and the matrices are averaged over batches;
3. the Pearson correlation matrix of the same sample is kept beside it.

**Dead neurons** (near-constant on some batch: standard deviation at most ``dead_tol`` times
the layer's median) have no usable kernel width. They are not given NaNs: they are left out
of the estimation and get entropy 0 and MI 0 with every other neuron (the exact values for a
constant variable), and :attr:`MIMap.alive` marks them, so a pruning method can drop them first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from minilib.cache import atomic_file, read_json, write_json
from minilib.estimator.pairwise import DEFAULT_TOL, pairwise_mutual_information
from minilib.estimator.kernel_width import NeuronKernelWidth, normalize, scott_sigma

__all__ = ["MIMap", "split_batches", "dead_neurons", "compute_mi_map", "pairs_table"]


@dataclass
class MIMap:
    """MI and Pearson maps of every layer (arrays indexed ``[layer, neuron, neuron]``)."""

    mi: np.ndarray  # (L, D, D) bits, averaged over batches; diagonal = marginal entropy
    pearson: np.ndarray  # (L, D, D) correlation over the whole calibration sample
    alive: np.ndarray  # (L, D) False for dead neurons
    sigma: np.ndarray  # (L, D) final EMA kernel widths (z-scored units); 0 for dead neurons
    meta: dict = field(default_factory=dict)  # how it was computed (model, data, parameters)

    @property
    def n_layers(self) -> int:
        return self.mi.shape[0]

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_file(path, lambda p: np.savez_compressed(p, mi=self.mi, pearson=self.pearson, alive=self.alive,
                                                         sigma=self.sigma))
        write_json(path.with_suffix(".json"), self.meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MIMap":
        path = Path(path)
        with np.load(path) as z:
            return cls(z["mi"], z["pearson"], z["alive"], z["sigma"], read_json(path.with_suffix(".json")))

    def top_pairs(self, layer: int, k: int = 10, by: str = "mi") -> list[tuple[int, int, float]]:
        """The ``k`` most redundant pairs of alive neurons ``(i, j, value)`` by MI or |Pearson|."""
        m = self.mi[layer] if by == "mi" else np.abs(self.pearson[layer])
        iu = np.triu_indices(m.shape[0], 1)
        vals = m[iu]
        order = np.argsort(-vals, kind="stable")[:k]
        return [(int(iu[0][o]), int(iu[1][o]), float(vals[o])) for o in order]


def split_batches(n: int, batch_size: int = 100) -> list[slice]:
    """Consecutive batches of ``batch_size``; a shorter remainder is dropped unless it is the only batch."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 samples, got {batch_size}")
    if n < 2:
        raise ValueError(f"need at least 2 calibration samples for a kernel, got {n}")
    full = n // batch_size
    return [slice(i * batch_size, (i + 1) * batch_size) for i in range(full)] or [slice(0, n)]


def dead_neurons(X: torch.Tensor, batches: list[slice], dead_tol: float = 1e-6) -> torch.Tensor:
    """Mask of neurons whose std on some batch is at most ``dead_tol`` × the layer's median std there."""
    dead = torch.zeros(X.shape[1], dtype=torch.bool)
    for s in batches:
        std = X[s].double().std(0, correction=0)
        dead |= std <= dead_tol * std.median().clamp(min=torch.finfo(torch.float64).tiny)
    return dead


def compute_mi_map(activations: list[torch.Tensor], batch_size: int = 100, alpha: float = 1.01,
                   normalization: str = "zscore", dead_tol: float = 1e-6, max_batches: int | None = None,
                   widths: str = "aligned", tol: float | None = DEFAULT_TOL, progress: bool = False,
                   **width_kwargs) -> MIMap:
    """MI and Pearson maps from per-layer activations (samples × neurons, samples in random order).

    ``widths="aligned"`` (default) fits per-neuron widths by alignment and EMA (§3.4);
    ``widths="scott"`` gives every neuron Scott's one-dimensional width ``γ N^(−1/5)`` in
    normalised units (the plain estimator of the paper's Fig. 3). ``width_kwargs`` go to
    :class:`~minilib.estimator.kernel_width.NeuronKernelWidth` (``gamma``, ``beta``…). ``tol`` is the certified
    error bound in bits of every MI entry of every batch (so of their average), on the low-rank path of
    :func:`~minilib.estimator.pairwise.pairwise_mutual_information`; ``None`` computes every joint spectrum exactly.
    """
    if widths not in ("aligned", "scott"):
        raise ValueError(f"widths must be 'aligned' or 'scott', got {widths!r}")
    if not activations:
        raise ValueError("no layers given; pass one (samples, neurons) tensor per layer")
    n = activations[0].shape[0]
    if any(a.shape != activations[0].shape for a in activations):
        raise ValueError("every layer needs the same (samples, neurons) shape")
    if not all(torch.isfinite(a).all() for a in activations):
        raise ValueError("activations contain NaN or inf (a float16 overflow?); load the model in float32")
    batches = split_batches(n, batch_size)[:max_batches]
    L, D = len(activations), activations[0].shape[1]
    mi, pearson = np.zeros((L, D, D)), np.zeros((L, D, D))
    alive, sigma = np.zeros((L, D), dtype=bool), np.zeros((L, D))
    bar = tqdm(total=L * len(batches), desc="MI map", unit="batch", disable=not progress)
    for layer, X in enumerate(activations):
        X = X.double()
        keep = ~dead_neurons(X, batches, dead_tol)
        idx = np.flatnonzero(keep.numpy())
        if len(idx) < 2:
            raise ValueError(f"layer {layer} has {len(idx)} live neurons; nothing to compare (check the model)")
        Xa = X[:, keep]
        fitter = NeuronKernelWidth(normalization=normalization, **width_kwargs)
        acc = torch.zeros(len(idx), len(idx), dtype=torch.float64)
        for s in batches:
            if widths == "scott":
                sig = torch.full((len(idx),), scott_sigma(s.stop - s.start, 1, width_kwargs.get("gamma", 1.0)))
                acc += pairwise_mutual_information(normalize(Xa[s], normalization), sig, alpha, tol=tol)
            else:
                fitter.partial_fit(Xa[s])
                acc += fitter.mutual_information(Xa[s], alpha, tol=tol)
            bar.update()
        used = Xa[: batches[-1].stop]
        mi[layer][np.ix_(idx, idx)] = (acc / len(batches)).numpy()
        pearson[layer][np.ix_(idx, idx)] = np.corrcoef(used.numpy(), rowvar=False)
        alive[layer, idx] = True
        sigma[layer, idx] = sig.numpy() if widths == "scott" else fitter.sigma_.numpy()
    bar.close()
    meta = {"samples": int(batches[-1].stop), "batches": len(batches), "batch_size": batch_size, "alpha": alpha,
            "normalization": normalization, "dead_tol": dead_tol, "widths": widths,
            "tol": tol, **width_kwargs}
    return MIMap(mi, pearson, alive, sigma, meta)


def pairs_table(m: MIMap, layer: int, k: int = 10, by: str = "mi") -> "pd.DataFrame":
    """The ``k`` most redundant neuron pairs of a layer with their MI, Pearson r and entropies."""
    import pandas as pd

    rows = [{"layer": layer + 1, "neuron i": i, "neuron j": j, "MI (bits)": m.mi[layer, i, j],
             "Pearson r": m.pearson[layer, i, j], "H(i)": m.mi[layer, i, i], "H(j)": m.mi[layer, j, j]}
            for i, j, _ in m.top_pairs(layer, k, by)]
    return pd.DataFrame(rows)
