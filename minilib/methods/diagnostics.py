"""Does a keep-set remove the redundant neurons? A check of any keep-set against an MI map (chapters 4, 8).

The paper's premise is that a neuron can go when a kept neuron carries its information. For one
layer with MI map ``I`` (bits; :class:`~minilib.estimator.mimap.MIMap`), live neurons ``V``, kept
``K ⊆ V`` and removed ``R = V \\ K``, two statistics say how far a keep-set follows it:

* **best kept match** ``median_{r ∈ R} max_{k ∈ K} I(r; k)``: how much of each removed neuron the
  kept neuron closest to it shares. A redundancy method should make it *larger* than chance;
* **mean MI ratio** ``mean_{r ∈ R} m_r / median_{j ∈ V} m_j`` with ``m_j = mean_{i ∈ V, i ≠ j} I(i; j)``:
  whether the removed neurons share more with the layer than its typical neuron (> 1) or less.

Chance is measured, not assumed: the same statistics of ``draws`` seeded random keep-sets of the
same size among the live neurons (their mean), and each statistic's ratio to it. A ratio below 1
on the best kept match means the keep-set removed neurons that the kept ones explain *worse* than a
random removal would (chapter 8 finds this for ``mi-mds`` on real models).

:func:`mds_fidelity` asks why: how well the distances of Eq. 1 survive an embedding in few MDS
dimensions, the input of the paper's k-means (chapter 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from minilib.methods.compensation import partners_from_similarity
from minilib.methods.selection import distances, mds_embedding

__all__ = ["removed_redundancy", "mds_fidelity"]


def _statistics(mi: np.ndarray, live: np.ndarray, kept: np.ndarray, typical: float) -> tuple[float, float]:
    removed = np.setdiff1d(live, kept)
    if len(removed) == 0 or len(kept) == 0:
        return np.nan, np.nan
    best = np.median(mi[removed, partners_from_similarity(mi, kept)[removed]])  # each one's closest kept neuron
    off = mi[np.ix_(removed, live)]
    row_mean = (off.sum(1) - mi[removed, removed]) / (len(live) - 1)  # without I(r; r)
    return float(best), float(row_mean.mean() / typical) if typical > 0 else np.nan


def removed_redundancy(mi: np.ndarray, keep: Sequence[np.ndarray], alive: np.ndarray | None = None,
                       draws: int = 20, seed: int = 0) -> pd.DataFrame:
    """Per layer: the best kept match and mean MI ratio of the removed neurons, beside Random's.

    ``mi`` is ``(L, D, D)`` (a map's ``.mi``); ``keep`` one array of kept indices per layer;
    ``alive`` ``(L, D)`` (dead neurons are left out of every statistic); ``draws`` random keep-sets
    of the same live size per layer, from ``seed``. Columns: ``layer``, ``kept``, ``removed`` (live
    neurons), ``best_match``, ``random_best_match``, ``best_match_ratio``, ``mean_mi_ratio``,
    ``random_mean_mi_ratio`` (module docstring).
    """
    mi = np.asarray(mi, dtype=np.float64)
    if mi.ndim != 3 or mi.shape[1] != mi.shape[2]:
        raise ValueError(f"mi must be (layers, D, D), got shape {mi.shape}")
    if len(keep) != len(mi):
        raise ValueError(f"keep has {len(keep)} layers but the map has {len(mi)}; give one keep-set per layer")
    if draws < 1:
        raise ValueError(f"draws is the number of random keep-sets to compare with, at least 1; got {draws}")
    alive = np.ones(mi.shape[:2], bool) if alive is None else np.asarray(alive, bool)
    rng = np.random.default_rng(seed)
    rows = []
    for layer, (m, k) in enumerate(zip(mi, keep)):
        live = np.flatnonzero(alive[layer])
        kept = np.intersect1d(np.asarray(k, dtype=np.int64), live)
        if len(live) < 2:
            raise ValueError(f"layer {layer} has {len(live)} live neurons; the diagnostic needs at least 2")
        off = m[np.ix_(live, live)]
        typical = float(np.median((off.sum(1) - np.diag(off)) / (len(live) - 1)))
        best, ratio = _statistics(m, live, kept, typical)
        chance = np.array([_statistics(m, live, np.sort(rng.choice(live, len(kept), replace=False)), typical)
                           for _ in range(draws)])
        random_best, random_ratio = np.nanmean(chance, 0) if np.isfinite(chance).any() else (np.nan, np.nan)
        rows.append({"layer": layer, "kept": len(kept), "removed": len(live) - len(kept), "best_match": best,
                     "random_best_match": random_best,
                     "best_match_ratio": best / random_best if random_best > 0 else np.nan,
                     "mean_mi_ratio": ratio, "random_mean_mi_ratio": random_ratio})
    return pd.DataFrame(rows)


def mds_fidelity(similarity: np.ndarray, dims: Sequence[int] = (2, 8, 32, 128, 512), scale: float = 1.0
                 ) -> pd.DataFrame:
    """How faithful classical MDS is to the distances ``d = A·exp(−S)`` (Eq. 1) at each number of axes.

    One eigendecomposition of the double-centred ``B = −½ J d² J``; for each entry of ``dims``:
    ``dims``, ``used_dims`` (capped at the positive axes, at most n − 1), ``mass`` (the share of the
    positive eigenvalue mass those axes hold) and ``pearson`` (the correlation of the embedded
    distances with ``d`` over all pairs). n equidistant points need n − 1 axes: with most pairs at
    nearly the same distance, the top axes hold the few tight groups and put every other point near
    the origin (chapter 4).
    """
    S = np.asarray(similarity, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or len(S) < 3:
        raise ValueError(f"similarity must be a square matrix of at least 3 neurons, got shape {S.shape}")
    if any(int(k) < 1 for k in dims):
        raise ValueError(f"dims are numbers of MDS axes, each at least 1; got {list(dims)}")
    X = mds_embedding(S, scale=scale, solver="classical", mass=1.0)  # every positive axis, largest first
    lam = (X**2).sum(0)  # the axes' eigenvalues
    upper = np.triu_indices(len(S), 1)
    target = distances(S, scale)[upper]
    rows = []
    for want in sorted({int(k) for k in dims}):
        k = min(want, X.shape[1])
        Y = X[:, :k]
        sq = (Y**2).sum(1)
        embedded = np.sqrt(np.clip(sq[:, None] + sq[None] - 2 * Y @ Y.T, 0.0, None))[upper]
        rows.append({"dims": want, "used_dims": k, "mass": float(lam[:k].sum() / lam.sum()),
                     "pearson": float(np.corrcoef(embedded, target)[0, 1])})
    return pd.DataFrame(rows)
