"""The paper's selection: duplicates go first, the threshold hits the target, MDS keeps one per group, KL."""

import math

import numpy as np
import pytest
import torch

from minilib.estimator.mimap import MIMap
from minilib.methods import PruningState, Settings, mds_candidates, selection


def _duplicated(n: int = 20, pairs=((0, 1), (2, 3), (4, 5)), seed: int = 0) -> np.ndarray:
    """Low random similarity everywhere, high within a few duplicated pairs."""
    rng = np.random.default_rng(seed)
    S = rng.uniform(0.05, 0.3, (n, n))
    S = (S + S.T) / 2
    for i, j in pairs:
        S[i, j] = S[j, i] = 2.0
    np.fill_diagonal(S, 3.0)
    return S


@pytest.mark.parametrize("seed", range(5))
def test_algorithm1_prunes_one_of_each_duplicate(seed):
    S = _duplicated()
    kept = selection.algorithm1(S, keep=17, seed=seed)
    assert len(kept) == 17 and len(set(kept)) == 17
    for i, j in ((0, 1), (2, 3), (4, 5)):
        assert (i in kept) != (j in kept)  # exactly one survivor per duplicated pair
    assert selection.calibrate_threshold(S, 17, seed=seed) > 0.3  # above every non-duplicate similarity


def test_algorithm1_with_a_fixed_threshold_and_determinism():
    S = _duplicated()
    assert len(selection.algorithm1(S, keep=5, threshold=1.0, max_iter=5000)) == 17  # only 3 pairs qualify
    a = selection.algorithm1(S, keep=8, seed=3)
    assert len(a) == 8 and np.array_equal(a, selection.algorithm1(S, keep=8, seed=3))


def test_dead_neurons_are_pruned_first():
    S = _duplicated()
    alive = np.ones(20, bool)
    alive[[7, 9]] = False
    S[7] = S[:, 7] = S[9] = S[:, 9] = 0.0
    for kept in (selection.algorithm1(S, 18, alive=alive), selection.mds_select(S, 18, alive=alive)):
        assert len(kept) == 18 and 7 not in kept and 9 not in kept
    assert len(selection.algorithm1(S, 19, alive=alive)) == 19  # more than are alive: one dead one comes back


@pytest.mark.parametrize("seed", range(3))
def test_mds_clustering_keeps_one_per_duplicate(seed):
    S = _duplicated()
    kept = selection.mds_select(S, keep=17, seed=seed)
    assert len(kept) == 17
    for i, j in ((0, 1), (2, 3), (4, 5)):
        assert (i in kept) != (j in kept)


def test_a_shared_mds_fit_gives_the_same_keep_sets():
    S, alive = _duplicated(), np.ones(20, dtype=bool)
    alive[7] = False  # the embedding covers the live neurons only
    live = np.flatnonzero(alive)
    E = selection.mds_embedding(S[np.ix_(live, live)], seed=3)
    for keep in (17, 10, 4):
        assert np.array_equal(selection.mds_select(S, keep, 3, alive=alive, embedding=E),
                              selection.mds_select(S, keep, 3, alive=alive))
    with pytest.raises(ValueError, match="embedding has 20 rows for 19 live neurons"):
        selection.mds_select(S, 10, 3, alive=alive, embedding=np.zeros((20, 8)))


def test_mds_distances_follow_eq1():
    S = _duplicated(n=12, pairs=((0, 1),))
    X = selection.mds_embedding(S, n_components=6, scale=1.0, seed=0)
    d = np.linalg.norm(X[:, None] - X[None], axis=-1)
    target = np.exp(-S)
    np.fill_diagonal(target, 0)
    assert d[0, 1] < 0.3 * np.median(d[~np.eye(12, dtype=bool)])  # the duplicated pair sits close
    assert np.corrcoef(d[np.triu_indices(12, 1)], target[np.triu_indices(12, 1)])[0, 1] > 0.8


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
def test_cluster_representatives_are_distinct_and_central():
    X = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    assert selection.cluster_representatives(X, 2, seed=0).tolist() == [1, 4]
    assert len(set(selection.cluster_representatives(np.zeros((5, 2)), 3))) == 3  # coinciding points


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
def test_with_importance_each_cluster_keeps_its_most_important_member():
    X = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    importance = np.array([0.5, 0.1, 0.9, 3.0, 3.0, 1.0])
    assert selection.cluster_representatives(X, 2, seed=0, importance=importance).tolist() == [2, 3]  # tie: lowest
    with pytest.raises(ValueError, match="one score per point"):
        selection.cluster_representatives(X, 2, importance=importance[:5])
    S = np.eye(6)
    alive = np.array([True, True, False, True, True, True])  # mds_select hands the live neurons' scores on
    kept = selection.mds_select(S, 2, embedding=np.delete(X, 2, axis=0), alive=alive, importance=importance)
    assert kept.tolist() == [0, 3]


def test_cluster_representatives_fill_an_empty_cluster_without_losing_a_singleton(monkeypatch):
    """An empty cluster whose centroid sits on a singleton cluster's only point: exactly k stay kept."""
    X = np.array([[0.0], [0.1], [0.2], [5.0], [9.0]])
    labels, centres = np.array([1, 1, 1, 2, 1]), np.array([[5.0], [0.1], [5.0]])  # cluster 0 is empty
    monkeypatch.setattr(selection, "kmeans_clusters", lambda emb, k, seed: (labels, centres))
    kept = selection.cluster_representatives(X, 3)
    assert kept.tolist() == [1, 3, 4]  # cluster 1's centre point, the singleton, then the nearest free point


def test_mds_select_keeps_exactly_k_live_neurons_with_dead_ones_present(monkeypatch):
    S = np.random.default_rng(0).random((8, 8))
    S = (S + S.T) / 2
    alive = np.array([True] * 6 + [False] * 2)
    labels, centres = np.array([1, 1, 1, 2, 1, 1]), np.array([[5.0], [0.1], [5.0]])
    monkeypatch.setattr(selection, "kmeans_clusters", lambda emb, k, seed: (labels, centres))
    emb = np.array([[0.0], [0.1], [0.2], [5.0], [9.0], [9.5]])
    kept = selection.mds_select(S, 3, alive=alive, embedding=emb)
    assert len(kept) == 3 and alive[kept].all()  # no dead neuron fills a gap


def test_gaussian_kl_matches_the_closed_form():
    z = torch.randn(400, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = (z - z.mean()) / z.std()  # sample mean 0, variance 1 exactly
    assert selection.gaussian_kl(z, z, ridge=0) == pytest.approx(0, abs=1e-12)
    kl = selection.gaussian_kl(z, 1 + 2 * z, ridge=0)  # KL(N(0,1) ‖ N(1,4)) = ln 2 + 2/8 − 1/2
    assert kl == pytest.approx(math.log(2) + 0.25 - 0.5, rel=1e-9)
    z3 = torch.randn(300, 3, generator=torch.Generator().manual_seed(1))
    assert selection.gaussian_kl(z3, z3 * 1.1) < selection.gaussian_kl(z3, z3 * 2)


def test_gaussian_kl_is_set_by_the_data_when_samples_are_fewer_than_dimensions():
    """37 samples of a 128-d representation (chapter 4's MRPC calibration): the regulariser must not decide."""
    g = torch.Generator().manual_seed(0)
    zo = torch.randn(37, 128, generator=g, dtype=torch.float64) @ torch.randn(128, 128, generator=g, dtype=torch.float64)
    zp = zo + 0.3 * torch.randn(37, 128, generator=g, dtype=torch.float64)
    kls = [selection.gaussian_kl(zo, zp, ridge=r) for r in (1e-12, 1e-9, 1e-6)]
    assert max(kls) - min(kls) <= 1e-4 * min(kls)
    assert 0 < kls[0] < float("inf")
    noisier = selection.gaussian_kl(zo, zo + 1.0 * torch.randn(37, 128, generator=g, dtype=torch.float64))
    assert noisier > kls[1]  # still orders candidates by how far they move the representation


def test_gaussian_kl_with_every_axis_is_the_full_kl():
    g = torch.Generator().manual_seed(2)
    zo, zp = torch.randn(200, 4, generator=g, dtype=torch.float64), torch.randn(200, 4, generator=g, dtype=torch.float64) * 1.5
    full = selection.gaussian_kl(zo, zp, dims=4, ridge=0)
    co, cp = torch.cov(zo.T), torch.cov(zp.T)  # the textbook formula in the original coordinates
    diff = zp.mean(0) - zo.mean(0)
    ref = 0.5 * (torch.trace(torch.linalg.solve(cp, co)) + diff @ torch.linalg.solve(cp, diff) - 4
                 + torch.logdet(cp) - torch.logdet(co))
    assert full == pytest.approx(float(ref), rel=1e-9)
    assert selection.gaussian_kl(zo, zp, ridge=0) == pytest.approx(full, rel=1e-9)  # n > 2d: every axis by default
    with pytest.raises(ValueError, match="dims must be between 1 and"):
        selection.gaussian_kl(zo, zp, dims=5)


def test_choose_by_kl_picks_the_closest_candidate():
    original = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    noise = {0: 1.0, 1: 0.05, 2: 0.5}
    represent = lambda keep: original + noise[int(keep[0][0])] * torch.randn(200, 4)  # noqa: E731
    best, kls = selection.choose_by_kl([[np.array([k])] for k in (0, 1, 2)], represent, original)
    assert best == 1 and kls[1] < kls[2] < kls[0]


@pytest.mark.parametrize("args, message", [
    ((np.ones((3, 4)), 2), "square"),
    ((np.full((3, 3), np.nan), 2), "NaN"),
    ((np.eye(3), 0), "keep must be between 1 and the number of neurons"),
    ((np.eye(3), 4), "keep must be between 1 and the number of neurons"),
])
def test_bad_inputs(args, message):
    with pytest.raises(ValueError, match=message):
        selection.algorithm1(*args)


def test_event_simulation_has_the_distribution_of_the_draw_by_draw_algorithm():
    rng = np.random.default_rng(0)
    S = rng.uniform(0, 1, (6, 6))
    S = (S + S.T) / 2

    def naive(seed: int) -> tuple:
        g, remaining = np.random.default_rng(seed), list(range(6))
        for _ in range(200):
            if len(remaining) <= 3:
                break
            k, ell = g.choice(len(remaining), 2, replace=False)
            if S[remaining[k], remaining[ell]] >= 0.5:
                del remaining[ell]
        return tuple(remaining)

    def share(results):
        keys, counts = np.unique(np.array(results), axis=0, return_counts=True)
        return {tuple(k): c / len(results) for k, c in zip(keys, counts)}

    a = share([naive(s) for s in range(4000)])
    b = share([tuple(selection.algorithm1(S, 3, threshold=0.5, max_iter=200, seed=s)) for s in range(4000)])
    tv = 0.5 * sum(abs(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b))
    assert len(a) > 3 and tv < 0.05


@pytest.mark.parametrize("n", [20, 300])  # eigh below 8 × n_components points, Lanczos above
def test_classical_mds_recovers_euclidean_distances_exactly(n):
    points = np.random.default_rng(0).normal(size=(n, 3))
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    S = -np.log(np.where(d > 0, d, 1.0))  # so that exp(−S) = d off the diagonal (Eq. 1, A = 1)
    X = selection.mds_embedding(S, n_components=3, solver="classical")
    assert np.allclose(np.linalg.norm(X[:, None] - X[None], axis=-1), d, atol=1e-9)
    assert np.array_equal(X, selection.mds_embedding(S, n_components=3, seed=7, solver="classical"))  # seed-free
    with pytest.raises(ValueError, match="solver must be one of"):
        selection.mds_embedding(S, solver="isomap")


def test_classical_mds_keeps_one_of_each_duplicated_pair():
    S = _duplicated()
    E = selection.mds_embedding(S, solver="classical")
    kept = selection.mds_select(S, 17, 0, embedding=E)
    for i, j in ((0, 1), (2, 3), (4, 5)):
        assert (i in kept) != (j in kept)


def _planted_pairs(n: int = 1000, pairs: int = 20) -> np.ndarray:
    """n near-independent neurons (MI < 0.05 bits) with ``pairs`` planted near-duplicates (i, n-1-i)."""
    rng = np.random.default_rng(0)
    S = rng.uniform(0.0, 0.05, (n, n))
    S = (S + S.T) / 2
    for i in range(pairs):
        S[i, n - 1 - i] = S[n - 1 - i, i] = 3.0
    np.fill_diagonal(S, 4.0)
    return S


@pytest.mark.parametrize("cluster", ["kmedoids", "agglomerative"])
def test_clustering_the_distances_removes_one_of_each_planted_duplicate_where_8d_kmeans_does_not(cluster):
    S, n, pairs = _planted_pairs(), 1000, 20
    removed = np.setdiff1d(np.arange(n), selection.mds_select(S, n - pairs, seed=0, cluster=cluster))
    assert sorted(min(r, n - 1 - r) for r in removed) == list(range(pairs))  # one member of every pair
    kmeans = np.setdiff1d(np.arange(n), selection.mds_select(S, n - pairs, seed=0, cluster="kmeans"))
    assert not np.isin(kmeans, np.r_[0:pairs, n - pairs:n]).any()  # the paper's 8-D k-means keeps them all


@pytest.mark.parametrize("cluster", ["kmedoids", "agglomerative"])
def test_distance_clusters_give_exactly_k_representatives_deterministically(cluster):
    rng = np.random.default_rng(1)
    S = rng.uniform(0.0, 1.0, (60, 60))
    S = (S + S.T) / 2
    alive = np.ones(60, bool)
    alive[[3, 7]] = False
    for keep in (1, 17, 58):
        first = selection.mds_select(S, keep, seed=4, alive=alive, cluster=cluster)
        assert len(first) == len(np.unique(first)) == keep and not np.isin([3, 7], first).any()
        assert np.array_equal(first, selection.mds_select(S, keep, seed=4, alive=alive, cluster=cluster))
    weights = np.arange(60.0)
    top = selection.mds_select(S, 5, seed=4, alive=alive, cluster=cluster, importance=weights)
    assert 59 in top  # the most important neuron represents its cluster
    with pytest.raises(ValueError, match="cluster must be one of"):
        selection.mds_select(S, 5, cluster="dbscan")


def test_classical_mds_with_a_share_of_the_eigenvalue_mass_keeps_enough_axes_for_the_planted_duplicates():
    S, n, pairs = _planted_pairs(), 1000, 20
    X = selection.mds_embedding(S, solver="classical", mass=0.8)
    assert 8 < X.shape[1] < n - 1  # hundreds of axes for near-equidistant points
    removed = np.setdiff1d(np.arange(n), selection.cluster_representatives(X, n - pairs, 0))
    split = {min(r, n - 1 - r) for r in removed} & set(range(pairs))
    assert len(split) >= 0.9 * pairs  # k-means in hundreds of axes finds nearly all (8 axes: none)
    assert selection.mds_embedding(S, solver="classical", mass=1.0).shape[1] <= n - 1
    with pytest.raises(ValueError, match="with solver='classical'"):
        selection.mds_embedding(S[:20, :20], mass=0.8)  # SMACOF has no eigenvalues to count


class _PlantedState(PruningState):
    """A pruning state that holds only a one-layer MI map (the cluster step reads nothing else)."""

    def __init__(self, S: np.ndarray, settings: Settings) -> None:
        super().__init__()
        self.settings, self.seed, self.S = settings, 0, S

    def compute_mi_map(self, widths: str) -> MIMap:
        n = len(self.S)
        return MIMap(self.S[None], np.zeros((1, n, n)), np.ones((1, n), bool), np.ones((1, n)))


def test_the_default_cluster_step_removes_the_planted_duplicates_first_where_the_papers_8d_kmeans_does_not():
    S, n, pairs = _planted_pairs(), 1000, 20
    group = np.r_[0:pairs, n - pairs:n]

    def removed(settings: Settings) -> np.ndarray:
        keep = mds_candidates(_PlantedState(S, settings), n - pairs, [0, 1])
        return [np.setdiff1d(np.arange(n), k[0]) for k in keep]

    for r in removed(Settings()):  # every candidate of the KL choice
        assert np.isin(r, group).all() and sorted(min(i, n - 1 - i) for i in r) == list(range(pairs))
    for r in removed(Settings(cluster="kmeans", mds="classical")):  # the paper's literal pipeline
        assert not np.isin(r, group).any()
