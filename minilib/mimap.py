"""The MI map of a layer: mutual information between every pair of its FFN neurons (§3.3.2, §3.4).

For each encoder layer, on a calibration sample (the paper: a random 1% of the task's
training set) cut into mini-batches of 100 samples:

1. the per-neuron kernel widths are fitted batch by batch (alignment, Eq. 7) and smoothed
   across batches (EMA, Eq. 8) by :class:`~minilib.kernel_width.NeuronKernelWidth`;
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

from . import glue
from .hooks import capture_activations
from .cache import atomic_file, cache_dir, read_json, short_hash, write_json
from .finetune import load_finetuned, read_result
from .entropy import pairwise_mutual_information
from .kernel_width import NeuronKernelWidth, normalize, scott_sigma
from .models import load_tokenizer

__all__ = ["MIMap", "calibration_indices", "split_batches", "dead_neurons", "compute_mi_map", "calibration_activations",
           "pairs_table", "neuron_mi_map"]


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


def calibration_indices(n: int, fraction: float = 0.01, seed: int = 0, minimum: int = 2) -> np.ndarray:
    """A random ``fraction`` of ``range(n)`` (at least ``minimum`` rows), in random order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}; the paper uses 0.01")
    size = min(n, max(minimum, round(fraction * n)))
    return np.random.default_rng(seed).choice(n, size, replace=False)


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
                   widths: str = "aligned", rank_tol: float | None = None, progress: bool = False,
                   **width_kwargs) -> MIMap:
    """MI and Pearson maps from per-layer activations (samples × neurons, samples in random order).

    ``widths="aligned"`` (default) fits per-neuron widths by alignment and EMA (§3.4);
    ``widths="scott"`` gives every neuron Scott's one-dimensional width ``γ N^(−1/5)`` in
    normalised units (the plain estimator of the paper's Fig. 3). ``width_kwargs`` go to
    :class:`~minilib.kernel_width.NeuronKernelWidth` (``gamma``, ``beta``…); ``rank_tol`` to
    :func:`~minilib.entropy.pairwise_mutual_information` (``None``: the exact joint spectra).
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
                acc += pairwise_mutual_information(normalize(Xa[s], normalization), sig, alpha, rank_tol=rank_tol)
            else:
                fitter.partial_fit(Xa[s])
                acc += fitter.mutual_information(Xa[s], alpha, rank_tol=rank_tol)
            bar.update()
        used = Xa[: batches[-1].stop]
        mi[layer][np.ix_(idx, idx)] = (acc / len(batches)).numpy()
        pearson[layer][np.ix_(idx, idx)] = np.corrcoef(used.numpy(), rowvar=False)
        alive[layer, idx] = True
        sigma[layer, idx] = sig.numpy() if widths == "scott" else fitter.sigma_.numpy()
    bar.close()
    meta = {"samples": int(batches[-1].stop), "batches": len(batches), "batch_size": batch_size, "alpha": alpha,
            "normalization": normalization, "dead_tol": dead_tol, "widths": widths,
            **({"rank_tol": rank_tol} if rank_tol is not None else {}), **width_kwargs}
    return MIMap(mi, pearson, alive, sigma, meta)


def calibration_activations(run: str | os.PathLike, fraction: float = 0.01, reduction: str = "mean",
                            seed: int = 0, data_dir: str | os.PathLike | None = None, progress: bool = False
                            ) -> list[torch.Tensor]:
    """FFN activations (per layer, samples × neurons) of a fine-tuned run on its calibration sample.

    The sample is a random ``fraction`` of the task's training set; the rows come back in a
    seeded random order, so consecutive batches of them are random draws.
    """
    model = load_finetuned(run)
    task = glue.get_task(read_result(run)["task"])
    train = glue.load_split(task, "train", data_dir)
    encoded = glue.encode(train.select(calibration_indices(len(train), fraction, seed)), load_tokenizer())
    acts = capture_activations(model, glue.Batches(encoded, batch_size=64), reduction,
                               progress=progress)  # length-sorted batches: fast; shuffled below
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(acts[0].shape[0]))
    return [a[perm] for a in acts]


def pairs_table(m: MIMap, layer: int, k: int = 10, by: str = "mi") -> "pd.DataFrame":
    """The ``k`` most redundant neuron pairs of a layer with their MI, Pearson r and entropies."""
    import pandas as pd

    rows = [{"layer": layer + 1, "neuron i": i, "neuron j": j, "MI (bits)": m.mi[layer, i, j],
             "Pearson r": m.pearson[layer, i, j], "H(i)": m.mi[layer, i, i], "H(j)": m.mi[layer, j, j]}
            for i, j, _ in m.top_pairs(layer, k, by)]
    return pd.DataFrame(rows)


def neuron_mi_map(run: str | os.PathLike, fraction: float = 0.01, batch_size: int = 100,
                  reduction: str = "mean", alpha: float = 1.01, seed: int = 0, max_batches: int | None = None,
                  widths: str = "aligned", data_dir: str | os.PathLike | None = None,
                  cache: str | os.PathLike | None = None, progress: bool = True) -> MIMap:
    """The (cached) MI map of a fine-tuned run's FFN neurons on its task's calibration sample.

    ``run`` is a folder from :func:`minilib.finetune.finetune`. The calibration sample is a
    random ``fraction`` of the task's training set (``seed``), reduced per sentence with
    ``reduction`` (see :mod:`minilib.hooks`).
    """
    run = Path(run).resolve()
    result = read_result(run)
    key = (f"{fraction:g}-b{batch_size}-{reduction}-a{alpha:g}-s{seed}" + (f"-m{max_batches}" if max_batches else "")
           + ("" if widths == "aligned" else f"-{widths}"))
    runs = cache_dir(cache).resolve() / "finetuned"
    rel = run.relative_to(runs) if run.is_relative_to(runs) else Path("other", short_hash(str(run)))
    path = cache_dir(cache) / "mimaps" / rel / f"{key}.npz"
    if path.is_file() and path.with_suffix(".json").is_file():
        return MIMap.load(path)
    task = glue.get_task(result["task"])
    acts = calibration_activations(run, fraction, reduction, seed, data_dir, progress)
    mimap = compute_mi_map(acts, batch_size, alpha, max_batches=max_batches, widths=widths, progress=progress)
    mimap.meta.update({"task": task.name, "model": result["model"], "init": result["init"], "run": str(rel),
                       "fraction": fraction, "reduction": reduction, "seed": seed,
                       "calibration_samples": int(acts[0].shape[0])})
    mimap.save(path)
    return mimap
