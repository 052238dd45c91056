"""The paper's selection of FFN neurons by redundancy (§3.3.2–3.3.4).

Every function works on one layer's symmetric *similarity* matrix ``S`` (the MI map of
:mod:`minilib.estimator.mimap`, or ``|Pearson r|`` for the PCC ablation) and returns the sorted indices of
the neurons to **keep**. Dead neurons (``alive=False``) carry no information and are removed
first; the methods choose among the live ones.

* :func:`algorithm1`: Algorithm 1. Draw random pairs ``(k, ℓ)`` of remaining neurons; when
  ``S[k, ℓ] ≥ T_r`` remove ``ℓ``; stop after ``max_iter`` draws or when ``keep`` neurons remain.
  The paper sets a threshold ``T_r``; to hit a compression level we calibrate it
  (:func:`calibrate_threshold`): the largest ``T_r`` whose run reaches the target count.
* :func:`mds_select`: the clustering variant (§3.3.3). Distances ``d = A·exp(−S)`` (Eq. 1),
  metric MDS to ``n_components`` dimensions, k-means with one cluster per kept neuron, and the
  neuron nearest each centroid kept.
* :func:`gaussian_kl` and :func:`choose_by_kl`: the subsidiary condition (§3.3.4, Eq. 2). MDS and
  k-means depend on the seed, so ``M`` seeds give ``M`` candidate keep-sets, and the one whose
  pruned model's representation distribution is closest to the original's in KL wins. The paper
  leaves "representation" open (open decision 8 in the book's introduction): here it is the sentence representation
  the task head reads (BERT's pooler output) over the calibration sentences, modelled as a
  Gaussian, which serves classification and STS-B regression alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import eigsh
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.manifold import MDS

__all__ = ["algorithm1", "calibrate_threshold", "MDS_SOLVERS", "CLUSTERINGS", "distances", "distance_clusters", "mds_embedding", "kmeans_clusters", "cluster_representatives", "mds_select",
           "gaussian_kl", "choose_by_kl", "kl_dims_table"]


def _check(similarity: np.ndarray, keep: int, alive: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    S = np.asarray(similarity, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"similarity must be a square (neurons × neurons) matrix, got shape {S.shape}")
    if not np.isfinite(S).all():
        raise ValueError("similarity has NaN or infinite entries; mark dead neurons with `alive` instead")
    n = S.shape[0]
    alive = np.ones(n, bool) if alive is None else np.asarray(alive, bool)
    if alive.shape != (n,):
        raise ValueError(f"alive must have one entry per neuron ({n}), got shape {alive.shape}")
    if not 1 <= keep <= n:
        raise ValueError(f"keep must be between 1 and the number of neurons ({n}), got {keep}")
    return S, alive


def _with_dead(keep_alive: np.ndarray, alive: np.ndarray, keep: int) -> np.ndarray:
    """Top up with dead neurons (lowest index first) only when more are kept than are alive."""
    dead = np.flatnonzero(~alive)[: max(0, keep - len(keep_alive))]
    return np.sort(np.concatenate([keep_alive, dead]).astype(int))


def _run_algorithm1(S: np.ndarray, live: np.ndarray, keep: int, threshold: float, max_iter: float,
                    seed: int) -> np.ndarray:
    """Algorithm 1 simulated event by event, exactly in distribution.

    Drawing ordered pairs of remaining neurons one at a time wastes almost every draw once few
    pairs qualify. Draws that miss change nothing, so we sample how many draws pass until the next
    hit (geometric, with the current fraction of qualifying pairs), then a uniformly random
    qualifying pair, and remove its second neuron; ``max_iter`` still bounds the number of draws.
    """
    rng = np.random.default_rng(seed)
    hits = S[np.ix_(live, live)] >= threshold
    np.fill_diagonal(hits, False)
    remaining = np.ones(len(live), bool)
    partners = hits.sum(1).astype(np.float64)  # qualifying partners among the remaining neurons
    r, draws = len(live), 0
    while r > keep:
        weight = np.where(remaining, partners, 0.0)
        total = weight.sum()  # ordered qualifying pairs
        if total == 0:
            break
        draws += rng.geometric(total / (r * (r - 1)))
        if draws > max_iter:
            break
        k = rng.choice(len(live), p=weight / total)
        ell = rng.choice(np.flatnonzero(hits[k] & remaining))
        remaining[ell] = False  # "turn off one of the similar features": the second of the pair
        partners -= hits[:, ell]
        r -= 1
    return live[remaining]


def calibrate_threshold(similarity: np.ndarray, keep: int, max_iter: int | None = None, seed: int = 0,
                        alive: np.ndarray | None = None, steps: int = 40) -> float:
    """The largest ``T_r`` for which Algorithm 1 (same seed) ends with ``keep`` live neurons.

    Bisection between the smallest and largest off-diagonal similarity of live neurons; the
    removal count grows as ``T_r`` falls (more pairs qualify).
    """
    S, alive = _check(similarity, keep, alive)
    live = np.flatnonzero(alive)
    if keep >= len(live):
        return float("inf")  # nothing to remove among the live ones
    max_iter = max_iter or 10 * S.shape[0] ** 2
    if max_iter < len(live) - keep:
        raise ValueError(f"max_iter={max_iter} draws cannot remove {len(live) - keep} neurons; raise max_iter")
    off = S[np.ix_(live, live)][~np.eye(len(live), dtype=bool)]
    lo, hi = float(off.min()), float(off.max())  # at lo every pair qualifies: each draw removes one
    if len(_run_algorithm1(S, live, keep, hi, max_iter, seed)) <= keep:
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        if len(_run_algorithm1(S, live, keep, mid, max_iter, seed)) <= keep:
            lo = mid
        else:
            hi = mid
    return lo


def algorithm1(similarity: np.ndarray, keep: int, threshold: float | None = None, max_iter: int | None = None,
               seed: int = 0, alive: np.ndarray | None = None) -> np.ndarray:
    """Algorithm 1: prune one neuron of every random pair with ``S ≥ T_r``; returns the kept indices.

    ``threshold=None`` calibrates ``T_r`` so that exactly ``keep`` neurons remain. With a given
    threshold, fewer than ``max_iter`` qualifying draws can leave more than ``keep`` neurons
    (the paper's behaviour). ``max_iter`` (the paper's MAX_ITR, not stated there) defaults to
    ``10·n²`` draws: every ordered pair is looked at about ten times.
    """
    S, alive = _check(similarity, keep, alive)
    max_iter = max_iter or 10 * S.shape[0] ** 2
    if threshold is None:
        threshold = calibrate_threshold(S, keep, max_iter, seed, alive)
    kept = _run_algorithm1(S, np.flatnonzero(alive), keep, threshold, max_iter, seed)
    return _with_dead(kept, alive, keep)


MDS_SOLVERS = ("smacof", "classical")
# the cluster step: k-means on the MDS coordinates (the paper), or on the distances themselves
CLUSTERINGS = ("kmeans", "kmedoids", "agglomerative")


def distances(similarity: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``d = A·exp(−S)`` (Eq. 1, ``A`` = ``scale``), symmetric with a zero diagonal."""
    d = scale * np.exp(-np.asarray(similarity, dtype=np.float64))
    np.fill_diagonal(d, 0.0)
    return (d + d.T) / 2


def distance_clusters(d: np.ndarray, keep: int, method: str, seed: int = 0,
                      importance: np.ndarray | None = None) -> np.ndarray:
    """``keep`` representatives, sorted, from clustering the distance matrix ``d`` itself (no MDS).

    ``"kmedoids"``: FasterPAM (the ``kmedoids`` package) from a seeded random start; the medoids are
    the representatives. ``"agglomerative"``: average linkage cut at ``keep`` clusters (seed-free);
    each cluster keeps its medoid (the member with the least total distance to the others). With
    ``importance``, every cluster keeps its most important member instead (ties: the lowest index).
    """
    if method not in CLUSTERINGS[1:]:
        raise ValueError(f"distance clustering is 'kmedoids' or 'agglomerative', got {method!r}")
    if not 1 <= keep <= len(d):
        raise ValueError(f"keep must be between 1 and the number of points ({len(d)}), got {keep}")
    if method == "kmedoids":
        import kmedoids  # only this option needs it

        result = kmedoids.fasterpam(d, keep, init="random", random_state=seed, n_cpu=1)
        labels, medoids = np.asarray(result.labels), np.sort(np.asarray(result.medoids))
        if importance is None:
            return medoids
    else:
        labels = AgglomerativeClustering(n_clusters=keep, metric="precomputed", linkage="average").fit_predict(d)
    kept = []
    for c in range(keep):
        members = np.flatnonzero(labels == c)
        inner = d[np.ix_(members, members)].sum(1) if importance is None else -np.asarray(importance)[members]
        kept.append(members[np.argmin(inner)])
    return np.sort(np.asarray(kept))


def mds_embedding(similarity: np.ndarray, n_components: int = 8, scale: float = 1.0, seed: int = 0,
                  max_iter: int = 300, solver: str = "smacof", mass: float | None = None) -> np.ndarray:
    """Coordinates whose distances approximate ``d = A·exp(−S)`` (Eq. 1; ``A`` = ``scale``).

    ``solver="smacof"`` (the book's default) is metric MDS from a random start (``seed``);
    ``"classical"`` is Torgerson's MDS: the top eigenvectors of ``B = −½ J d² J`` (``J`` the centring
    matrix) scaled by the square roots of their eigenvalues, by a Lanczos solver (ARPACK, a fixed start,
    converged to machine precision) above ``8 × n_components`` points and ``eigh`` below, with no
    MDS iterations (deterministic: ``seed`` is not used; signs are fixed so the largest entry of each
    axis is positive). Classical MDS is exact when ``d`` is Euclidean in ``n_components`` dimensions
    and the usual starting point of SMACOF otherwise; it is the cheap choice for thousands of neurons.

    ``mass`` (classical only) replaces ``n_components`` by the fewest axes whose eigenvalues hold that
    share of the positive eigenvalue mass of ``B`` (at most n − 1): n nearly equidistant points need
    nearly n − 1 axes, and 8 axes keep only the few tight groups (chapter 4).
    """
    if solver not in MDS_SOLVERS:
        raise ValueError(f"solver must be one of {MDS_SOLVERS}, got {solver!r}")
    if mass is not None and (solver != "classical" or not 0 < mass <= 1):
        raise ValueError(f"mass is a share of classical MDS's eigenvalue mass, in (0, 1], with solver='classical'; "
                         f"got mass={mass} with solver={solver!r}")
    d = distances(similarity, scale)
    if solver == "classical":
        d2 = d**2
        B = -0.5 * (d2 - d2.mean(0) - d2.mean(1)[:, None] + d2.mean())
        if mass is not None:
            lam, U = np.linalg.eigh(B)
            lam, U = lam[::-1], U[:, ::-1]
            positive = np.clip(lam, 0.0, None)
            n_components = min(len(B) - 1, int(np.searchsorted(np.cumsum(positive) / positive.sum(), mass)) + 1)
            lam, U = lam[:n_components], U[:, :n_components]
        elif len(B) > 8 * n_components:  # Lanczos for the top eigenpairs: 1 s instead of 224 s at 11,008 neurons
            start = np.random.default_rng(0).standard_normal(len(B))  # fixed: B·1 = 0, so not the ones vector
            lam, U = eigsh(B, k=n_components, which="LA", v0=start, tol=0)
            order = np.argsort(lam)[::-1]
            lam, U = lam[order], U[:, order]
        else:
            lam, U = np.linalg.eigh(B)
            lam, U = lam[::-1][:n_components], U[:, ::-1][:, :n_components]
        U = U * np.sign(U[np.abs(U).argmax(0), np.arange(U.shape[1])])
        return U * np.sqrt(np.clip(lam, 0.0, None))
    mds = MDS(n_components=n_components, metric="precomputed", init="random", n_init=1, max_iter=max_iter,
              random_state=seed, normalized_stress="auto")
    return mds.fit_transform(d)


def kmeans_clusters(embedding: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means on the rows of ``embedding``: (cluster label of every point, centroids)."""
    X = np.asarray(embedding, dtype=np.float64)
    if not 1 <= k <= len(X):
        raise ValueError(f"keep must be between 1 and the number of points ({len(X)}), got {k}")
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(X)
    return km.labels_, km.cluster_centers_


def cluster_representatives(embedding: np.ndarray, keep: int, seed: int = 0,
                            importance: np.ndarray | None = None) -> np.ndarray:
    """k-means with ``keep`` clusters; returns exactly ``keep`` distinct points, sorted.

    Every non-empty cluster gives its member nearest the centroid (the paper), or with
    ``importance`` (one score per point, higher = more important) its most important member: the
    clusters say which neurons are redundant with each other, the score which of them matters
    (ties: the lowest index). A cluster left empty (k-means does that when points coincide) gives
    the point nearest its centroid among those not yet kept. Clusters are disjoint, so the first
    pass never collides, and the second always finds a free point since ``keep`` is at most the
    number of points.
    """
    X = np.asarray(embedding, dtype=np.float64)
    if importance is not None and np.shape(importance) != (len(X),):
        raise ValueError(f"importance has shape {np.shape(importance)}; give one score per point ({len(X)})")
    labels, centres = kmeans_clusters(X, keep, seed)
    order = np.argsort(labels, kind="stable")  # members of each cluster, in index order
    bounds = np.searchsorted(labels[order], np.arange(keep + 1))
    taken = np.zeros(len(X), bool)
    for c in range(keep):
        members = order[bounds[c] : bounds[c + 1]]
        if len(members):  # argmin/argmax take the first extremum: the lowest index
            best = np.argmin(((X[members] - centres[c]) ** 2).sum(1)) if importance is None \
                else np.argmax(np.asarray(importance)[members])
            taken[members[best]] = True
    for c in np.flatnonzero(bounds[1:] == bounds[:-1]):  # the empty clusters
        free = np.flatnonzero(~taken)
        taken[free[np.argmin(((X[free] - centres[c]) ** 2).sum(1))]] = True
    return np.flatnonzero(taken)


def mds_select(similarity: np.ndarray, keep: int, seed: int = 0, n_components: int = 8, scale: float = 1.0,
               alive: np.ndarray | None = None, embedding: np.ndarray | None = None,
               importance: np.ndarray | None = None, cluster: str = "kmeans") -> np.ndarray:
    """The clustering variant (§3.3.3) on the live neurons; returns the kept indices.

    ``cluster="kmeans"`` (the paper): MDS, then k-means. ``embedding`` may pass in the MDS
    coordinates of the live neurons (:func:`mds_embedding` of their block with the same ``seed``),
    so that several keep counts share one MDS fit. ``"kmedoids"`` and ``"agglomerative"`` cluster the
    distances of Eq. 1 themselves (:func:`distance_clusters`; no MDS). ``importance`` (one score per
    neuron of the block) keeps each cluster's most important member instead of its centre.
    """
    if cluster not in CLUSTERINGS:
        raise ValueError(f"cluster must be one of {CLUSTERINGS}, got {cluster!r}")
    S, alive = _check(similarity, keep, alive)
    live = np.flatnonzero(alive)
    if keep >= len(live):
        return _with_dead(live, alive, keep)
    if cluster != "kmeans":
        weights = None if importance is None else np.asarray(importance)[live]
        chosen = distance_clusters(distances(S[np.ix_(live, live)], scale), keep, cluster, seed, weights)
        return _with_dead(live[chosen], alive, keep)
    if embedding is None:
        embedding = mds_embedding(S[np.ix_(live, live)], n_components, scale, seed)
    elif len(embedding) != len(live):
        raise ValueError(f"embedding has {len(embedding)} rows for {len(live)} live neurons")
    weights = None if importance is None else np.asarray(importance)[live]
    return _with_dead(live[cluster_representatives(embedding, keep, seed, weights)], alive, keep)


def gaussian_kl(z_original: torch.Tensor | np.ndarray, z_pruned: torch.Tensor | np.ndarray,
                dims: int | None = None, ridge: float = 1e-9) -> float:
    """KL(N_o ‖ N_p) between Gaussians fitted to two sets of representations (rows = samples), in nats.

    Both sets are projected on the ``dims`` leading principal axes of the original before the
    Gaussians are fitted. By default ``dims = min(d, ⌊(n − 1) / 2⌋)`` for n samples of d dimensions:
    each covariance is then estimated from at least twice as many samples as it has dimensions, so
    the divergence is finite and set by the data. With n > 2d every axis is kept, the projection is
    a rotation and the value is the full d-dimensional KL (KL is invariant under an invertible linear
    map of both). Fitting all d dimensions from n < d samples, as the paper's Eq. 2 reads, gives
    singular covariances whose regulariser, not the data, would decide the choice among seeds
    (book, chapter 4). ``ridge`` (times the mean variance of the projected original) only guards the
    Cholesky factorisation.
    """
    zo = torch.as_tensor(z_original, dtype=torch.float64)
    zp = torch.as_tensor(z_pruned, dtype=torch.float64)
    if zo.ndim != 2 or zo.shape != zp.shape:
        raise ValueError(f"representations must be two (samples × dims) arrays of one shape, got "
                         f"{tuple(zo.shape)} and {tuple(zp.shape)}")
    n, d = zo.shape
    if n < 3:
        raise ValueError(f"need at least 3 samples to fit a Gaussian on a principal axis, got {n}")
    k = min(d, (n - 1) // 2) if dims is None else int(dims)
    if not 1 <= k <= min(d, n - 1):
        raise ValueError(f"dims must be between 1 and min(d, n − 1) = {min(d, n - 1)}, got {dims}")
    V = torch.linalg.svd(zo - zo.mean(0), full_matrices=False)[2][:k].T  # (d, k) leading principal axes
    yo, yp = zo @ V, zp @ V
    eps = ridge * yo.var(0).mean().clamp(min=1e-300) * torch.eye(k, dtype=torch.float64)
    mo, mp = yo.mean(0), yp.mean(0)
    co, cp = torch.cov(yo.T).reshape(k, k) + eps, torch.cov(yp.T).reshape(k, k) + eps
    lp = torch.linalg.cholesky(cp)
    trace = torch.cholesky_solve(co, lp).diagonal().sum()
    diff = (mp - mo)[:, None]
    maha = (diff.T @ torch.cholesky_solve(diff, lp)).squeeze()
    logdet = 2 * torch.log(lp.diagonal()).sum() - torch.linalg.slogdet(co)[1]
    return float(0.5 * (trace + maha - k + logdet))


def choose_by_kl(candidates: Sequence[Sequence[np.ndarray]], represent: Callable[[Sequence[np.ndarray]], torch.Tensor],
                 original: torch.Tensor, dims: int | None = None) -> tuple[int, list[float]]:
    """The subsidiary condition (Eq. 2): the candidate whose representations are closest in KL.

    ``candidates`` are keep-sets (one index array per layer), e.g. from ``M`` seeds of
    :func:`mds_select`; ``represent(keep)`` returns the pruned model's representations of the
    calibration sample and ``original`` the dense model's; ``dims`` is passed to :func:`gaussian_kl`.
    Returns the winner's position and every candidate's KL.
    """
    if not candidates:
        raise ValueError("no candidates to choose from; pass at least one keep-set")
    kls = [gaussian_kl(original, represent(keep), dims) for keep in candidates]
    return int(np.argmin(kls)), kls


def kl_dims_table(original: torch.Tensor, representations: Sequence[torch.Tensor],
                  dims: Sequence[int | None] = (1, 2, 4, 8, 16, None)) -> pd.DataFrame:
    """How the KL choice among candidates depends on the principal axes kept (:func:`gaussian_kl`).

    One row per entry of ``dims`` that the sample allows (``None``: the default): the axes used, the
    candidate chosen, whether it is the default's choice, and the Spearman correlation of the
    candidates' KLs with the default's.
    """
    n, d = original.shape
    default = [gaussian_kl(original, z) for z in representations]
    rows = []
    for k in dims:
        if k is not None and k > min(d, n - 1):
            continue
        kls = default if k is None else [gaussian_kl(original, z, k) for z in representations]
        rows.append({"axes": min(d, (n - 1) // 2) if k is None else k, "default": k is None,
                     "chosen": int(np.argmin(kls)), "same choice": int(np.argmin(kls)) == int(np.argmin(default)),
                     "rank corr. with default": float(pd.Series(kls).corr(pd.Series(default), method="spearman"))})
    return pd.DataFrame(rows)
