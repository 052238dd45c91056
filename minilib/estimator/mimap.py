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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from minilib.cache import atomic_file, read_json, write_json
from minilib.estimator.pairwise import DEFAULT_TOL, pairwise_mutual_information, resolve_kernel
from minilib.estimator.kernel_width import NeuronKernelWidth, normalize, scott_sigma

__all__ = ["MIMap", "split_batches", "dead_neurons", "compute_mi_map", "pairs_table", "live_pairs", "live_neurons", "layer_summary",
           "redundancy_check", "contrast_pairs"]


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

    @classmethod
    def cached(cls, path: str | os.PathLike | None, compute: Callable[[], "MIMap"]) -> "MIMap":
        """The map saved at ``path``, or ``compute()`` saved there (a map can take an hour); ``None``: no cache.

        A map counts as saved only with its ``.json`` beside it, which :meth:`save` writes last.
        """
        if path is not None and Path(path).is_file() and Path(path).with_suffix(".json").is_file():
            return cls.load(path)
        m = compute()
        if path is not None:
            m.save(path)
        return m

    def top_pairs(self, layer: int, k: int = 10, by: str = "mi") -> list[tuple[int, int, float]]:
        """The ``k`` most redundant pairs of alive neurons ``(i, j, value)`` by MI or ``|Pearson r|``."""
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


@dataclass(frozen=True)
class _LayerJob:
    """Everything one layer's MI map depends on besides its activations (picklable, for worker processes)."""

    batches: tuple[slice, ...]
    alpha: float
    normalization: str
    dead_tol: float
    widths: str
    tol: float | None
    device: str
    kernel: str
    threads: int | None
    width_kwargs: tuple[tuple[str, object], ...]

    def __call__(self, args: tuple[int, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(mi, pearson, alive, sigma) of one layer: widths by batch (Eqs. 4–8), MI averaged over batches."""
        layer, X = args
        if self.threads:
            torch.set_num_threads(self.threads)
        X = X.double()
        D = X.shape[1]
        keep = ~dead_neurons(X, list(self.batches), self.dead_tol)
        idx = np.flatnonzero(keep.numpy())
        if len(idx) < 2:
            raise ValueError(f"layer {layer} has {len(idx)} live neurons; nothing to compare (check the model)")
        Xa, kw = X[:, keep], dict(self.width_kwargs)
        fitter = NeuronKernelWidth(normalization=self.normalization, **kw)
        acc = torch.zeros(len(idx), len(idx), dtype=torch.float64, device=self.device)
        for s in self.batches:
            if self.widths == "scott":
                sig = torch.full((len(idx),), scott_sigma(s.stop - s.start, 1, kw.get("gamma", 1.0)), dtype=torch.float64)
            else:
                sig = fitter.partial_fit(Xa[s]).sigma_
            Z = normalize(Xa[s], self.normalization)
            acc += pairwise_mutual_information(Z.to(self.device), sig.to(self.device), self.alpha, tol=self.tol,
                                               kernel=self.kernel)
        mi, pearson = np.zeros((D, D)), np.zeros((D, D))
        mi[np.ix_(idx, idx)] = (acc / len(self.batches)).cpu().numpy()
        pearson[np.ix_(idx, idx)] = np.corrcoef(Xa[: self.batches[-1].stop].numpy(), rowvar=False)
        alive, sigma = np.zeros(D, dtype=bool), np.zeros(D)
        alive[idx], sigma[idx] = True, sig.numpy()
        return mi, pearson, alive, sigma


def compute_mi_map(activations: list[torch.Tensor], batch_size: int = 100, alpha: float = 1.01,
                   normalization: str = "zscore", dead_tol: float = 1e-6, max_batches: int | None = None,
                   widths: str = "aligned", tol: float | None = DEFAULT_TOL, device: str | torch.device = "cpu",
                   workers: int = 1, distributed: bool = False, progress: bool = False, kernel: str = "auto",
                   **width_kwargs) -> MIMap:
    """MI and Pearson maps from per-layer activations (samples × neurons, samples in random order).

    ``widths="aligned"`` (default) fits per-neuron widths by alignment and EMA (§3.4);
    ``widths="scott"`` gives every neuron Scott's one-dimensional width ``γ N^(−1/5)`` in
    normalised units (the plain estimator of the paper's Fig. 3). ``width_kwargs`` go to
    :class:`~minilib.estimator.kernel_width.NeuronKernelWidth` (``gamma``, ``beta``…). ``tol`` is the certified
    error bound in bits of every MI entry of every batch (so of their average), on the low-rank path of
    :func:`~minilib.estimator.pairwise.pairwise_mutual_information`; ``None`` computes every joint spectrum exactly.
    ``device="cuda"`` runs the all-pairs MI on the GPU (widths stay on the CPU). ``kernel`` picks the
    low-rank path's implementation (:func:`~minilib.estimator.pairwise.resolve_kernel`: compiled on
    the CPU where numba is installed); the map's ``meta["kernel"]`` records the one that ran.

    Layers are independent, so they can run in parallel:

    * ``workers > 1``: that many local processes (``concurrent.futures``, spawned), each with
      ``torch.get_num_threads() // workers`` threads. Each layer's numbers are bit for bit those of a
      serial run with that many threads.
    * ``distributed=True``: inside an initialised ``torch.distributed`` process group (``torchrun``,
      several GPUs or machines), rank r computes layers r, r + world, … on ``device`` and every rank
      receives the whole map (``all_gather_object``).
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
    if workers < 1 or (workers > 1 and distributed):
        raise ValueError(f"workers must be ≥ 1 and cannot be combined with distributed=True, got workers={workers}")
    if distributed and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ValueError("distributed=True needs an initialised torch.distributed process group (run under torchrun)")
    batches = split_batches(n, batch_size)[:max_batches]
    kernel = resolve_kernel(kernel, device)  # one implementation for every layer and worker
    job = _LayerJob(tuple(batches), alpha, normalization, dead_tol, widths, tol, str(device), kernel,
                    max(1, torch.get_num_threads() // workers) if workers > 1 else None,
                    tuple(sorted(width_kwargs.items())))
    layers = list(enumerate(activations))
    if distributed:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        mine = {item[0]: job(item) for item in tqdm(layers[rank::world], desc=f"MI map (rank {rank})",
                                                      unit="layer", disable=not progress)}
        gathered: list[dict] = [None] * world  # type: ignore[list-item]
        torch.distributed.all_gather_object(gathered, mine)
        results = [next(g[i] for g in gathered if i in g) for i in range(len(layers))]
    elif workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = list(tqdm(pool.map(job, layers), total=len(layers), desc="MI map", unit="layer",
                                disable=not progress))
    else:
        results = [job(item) for item in tqdm(layers, desc="MI map", unit="layer", disable=not progress)]
    mi, pearson, alive, sigma = (np.stack(x) for x in zip(*results))
    meta = {"samples": int(batches[-1].stop), "batches": len(batches), "batch_size": batch_size, "alpha": alpha,
            "normalization": normalization, "dead_tol": dead_tol, "widths": widths, "tol": tol,
            "kernel": None if tol is None or alpha == 2.0 else kernel, **width_kwargs}
    return MIMap(mi, pearson, alive, sigma, meta)


def pairs_table(m: MIMap, layer: int, k: int = 10, by: str = "mi") -> "pd.DataFrame":
    """The ``k`` most redundant neuron pairs of a layer with their MI, Pearson r and entropies."""
    import pandas as pd

    rows = [{"layer": layer + 1, "neuron i": i, "neuron j": j, "MI (bits)": m.mi[layer, i, j],
             "Pearson r": m.pearson[layer, i, j], "H(i)": m.mi[layer, i, i], "H(j)": m.mi[layer, j, j]}
            for i, j, _ in m.top_pairs(layer, k, by)]
    return pd.DataFrame(rows)


def live_pairs(m: MIMap, layers: "list[int] | None" = None) -> "pd.DataFrame":
    """Every pair ``i < j`` of live neurons: its layer (from 1), MI, |Pearson r| and both entropies.

    The one place the book reads a map's pairs from (chapter 3): dead neurons and the diagonal are left out.
    """
    import pandas as pd

    iu = np.triu_indices(m.mi.shape[1], 1)
    frames = []
    for layer in range(m.n_layers) if layers is None else layers:
        both = m.alive[layer][iu[0]] & m.alive[layer][iu[1]]
        i, j = iu[0][both], iu[1][both]
        H = np.diag(m.mi[layer])
        frames.append(pd.DataFrame({"layer": layer + 1, "neuron i": i, "neuron j": j, "MI (bits)": m.mi[layer][i, j],
                                    "|Pearson r|": np.abs(m.pearson[layer][i, j]), "H(i)": H[i], "H(j)": H[j]}))
    return pd.concat(frames, ignore_index=True)


def live_neurons(m: MIMap) -> "pd.DataFrame":
    """Every live neuron: its layer (from 1), index, entropy ``S(X_i)`` (the map's diagonal) and kernel width."""
    import pandas as pd

    return pd.concat([pd.DataFrame({"layer": layer + 1, "neuron": np.flatnonzero(m.alive[layer]),
                                    "entropy (bits)": np.diag(m.mi[layer])[m.alive[layer]],
                                    "σ (std units)": m.sigma[layer][m.alive[layer]]})
                      for layer in range(m.n_layers)], ignore_index=True)


def layer_summary(m: MIMap) -> "pd.DataFrame":
    """Per layer: live neurons, the median and 99th percentile of pairwise MI, the share of pairs
    with |r| > 0.5, the mean entropy and the median kernel width of the live neurons."""
    import pandas as pd

    pairs, neurons = live_pairs(m).groupby("layer"), live_neurons(m).groupby("layer")
    return pd.DataFrame({"live neurons": neurons.size(), "median pairwise MI": pairs["MI (bits)"].median(),
                         "99th pct MI": pairs["MI (bits)"].quantile(0.99),
                         "pairs with |r| > 0.5": pairs["|Pearson r|"].apply(lambda r: (r > 0.5).mean()),
                         "mean entropy (bits)": neurons["entropy (bits)"].mean(),
                         "median σ (std units)": neurons["σ (std units)"].median()})


def redundancy_check(m: MIMap, low: float = 0.05) -> "pd.DataFrame":
    """Per layer: the largest ``I(i; j) / min(H_i, H_j)`` (at most 1 for a consistent estimate), and the
    median smaller entropy of a pair among the ``low`` fraction of pairs with the least MI and elsewhere."""
    import pandas as pd

    pairs = live_pairs(m)
    rows = []
    for layer, d in pairs.groupby("layer"):
        h_min = np.minimum(d["H(i)"], d["H(j)"]).to_numpy()
        mi = d["MI (bits)"].to_numpy()
        bottom = mi < np.quantile(mi, low)
        rows.append({"layer": layer, "max MI / min(H_i, H_j)": float(np.max(mi / h_min)),
                     f"median min(H) in the bottom {low:.0%} of MI": float(np.median(h_min[bottom])),
                     "median min(H) elsewhere": float(np.median(h_min[~bottom]))})
    return pd.DataFrame(rows).set_index("layer")


def contrast_pairs(m: MIMap, layer: int) -> dict[str, tuple[int, int]]:
    """Three pairs of live neurons where MI and |Pearson r| agree or disagree most (by their ranks).

    ``"high MI, low |r|"`` maximises ``rank(MI) − rank(|r|)``, ``"high |r|, lower MI"`` the opposite, and
    ``"top of both"`` their sum; ranks are fractions of the layer's live pairs.
    """
    from scipy import stats

    d = live_pairs(m, [layer])
    mi_rank = stats.rankdata(d["MI (bits)"]) / len(d)
    r_rank = stats.rankdata(d["|Pearson r|"]) / len(d)
    picks = {"high MI, low |r|": np.argmax(mi_rank - r_rank), "high |r|, lower MI": np.argmax(r_rank - mi_rank),
             "top of both": np.argmax(mi_rank + r_rank)}
    return {name: (int(d["neuron i"].iloc[p]), int(d["neuron j"].iloc[p])) for name, p in picks.items()}
