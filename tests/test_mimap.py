"""MI maps: planted duplicates rank first, dead neurons explicit (no NaN), Pearson beside, caching."""

import numpy as np
import pytest
import torch

from minilib.data.calibration import calibration_indices
from minilib.estimator import mimap


def _layer(n=200, d=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    X[:, 1] = X[:, 0] + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)  # near-copy of neuron 0
    X[:, 5] = 0.3  # dead neuron
    return torch.nn.functional.gelu(X)


def test_duplicates_rank_first_and_dead_neurons_are_explicit():
    m = mimap.compute_mi_map([_layer(), _layer(seed=1)], batch_size=100)
    assert m.mi.shape == (2, 24, 24) and m.pearson.shape == (2, 24, 24)
    assert not np.isnan(m.mi).any() and not np.isnan(m.pearson).any()
    assert m.alive[:, 5].tolist() == [False, False] and m.alive.sum() == 2 * 23
    assert (m.mi[:, 5] == 0).all() and (m.mi[:, :, 5] == 0).all() and (m.sigma[:, 5] == 0).all()
    for layer in range(2):
        i, j, _ = m.top_pairs(layer, 1)[0]
        assert (i, j) == (0, 1)
        assert m.top_pairs(layer, 1, by="pearson")[0][:2] == (0, 1)
    assert np.allclose(m.mi, m.mi.transpose(0, 2, 1))
    assert m.meta["batches"] == 2 and m.meta["samples"] == 200


def test_pearson_is_the_sample_correlation_and_mi_is_averaged_over_batches():
    X = _layer(n=200, d=8)
    m = mimap.compute_mi_map([X], batch_size=100)
    alive = np.flatnonzero(m.alive[0])
    assert np.allclose(m.pearson[0][np.ix_(alive, alive)], np.corrcoef(X[:, alive].numpy(), rowvar=False))
    one = mimap.compute_mi_map([X], batch_size=100, max_batches=1)
    assert one.meta["batches"] == 1 and not np.allclose(one.mi, m.mi)


def test_calibration_sample_and_batches():
    rows = calibration_indices(67349, 0.01, seed=0)
    assert len(rows) == 673 and len(set(rows.tolist())) == 673
    assert (rows == calibration_indices(67349, 0.01, seed=0)).all()
    assert [s.stop - s.start for s in mimap.split_batches(673, 100)] == [100] * 6  # remainder dropped
    assert mimap.split_batches(37, 100) == [slice(0, 37)]  # MRPC's 1%: one smaller batch
    with pytest.raises(ValueError, match="fraction must be in"):
        calibration_indices(100, 0.0)


def test_bad_activations_fail_fast():
    X = _layer(n=100, d=8)
    X[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mimap.compute_mi_map([X])
    with pytest.raises(ValueError, match="live neurons"):
        mimap.compute_mi_map([torch.ones(50, 4, dtype=torch.float64)])
    with pytest.raises(ValueError, match="same"):
        mimap.compute_mi_map([_layer(n=100, d=8), _layer(n=100, d=9)])


def test_save_load_round_trip(tmp_path):
    m = mimap.compute_mi_map([_layer(n=100, d=8)], batch_size=100)
    m.meta["task"] = "toy"
    back = mimap.MIMap.load(m.save(tmp_path / "map.npz"))
    assert np.array_equal(back.mi, m.mi) and np.array_equal(back.alive, m.alive) and back.meta["task"] == "toy"


def test_a_cached_map_is_computed_once_and_a_half_saved_one_again(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return mimap.compute_mi_map([_layer(n=100, d=8)], batch_size=100)

    path = tmp_path / "map.npz"
    first = mimap.MIMap.cached(path, compute)
    again = mimap.MIMap.cached(path, compute)
    assert len(calls) == 1 and np.array_equal(again.mi, first.mi)
    path.with_suffix(".json").unlink()  # interrupted between the arrays and their metadata
    mimap.MIMap.cached(path, compute)
    mimap.MIMap.cached(None, compute)
    assert len(calls) == 3


def test_scott_widths_variant():
    X = _layer(n=200, d=10)
    scott = mimap.compute_mi_map([X], batch_size=100, widths="scott")
    aligned = mimap.compute_mi_map([X], batch_size=100)
    live = scott.alive[0]
    assert np.allclose(scott.sigma[0][live], 100 ** (-1 / 5)) and scott.meta["widths"] == "scott"
    assert not np.allclose(scott.mi, aligned.mi)
    assert scott.top_pairs(0, 1)[0][:2] == (0, 1)  # the planted duplicate still ranks first
    with pytest.raises(ValueError, match="widths must be 'aligned' or 'scott'"):
        mimap.compute_mi_map([X], widths="silverman")


def _maps_equal(a: mimap.MIMap, b: mimap.MIMap) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("mi", "pearson", "alive", "sigma"))


def test_layers_in_worker_processes_equal_the_serial_map_bit_for_bit():
    layers = [_layer(seed=s) for s in range(3)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers get torch.get_num_threads() // workers = 1 thread each below
    try:
        serial = mimap.compute_mi_map(layers, batch_size=100)
    finally:
        torch.set_num_threads(threads)
    if threads < 2:
        pytest.skip("needs two CPU threads for two workers with one thread each")
    parallel = mimap.compute_mi_map(layers, batch_size=100, workers=2)
    assert _maps_equal(serial, parallel) and parallel.meta == serial.meta


def _distributed_rank(rank: int, world: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        m = mimap.compute_mi_map([_layer(seed=s) for s in range(3)], batch_size=100, distributed=True)
        m.save(f"{out}/rank{rank}.npz")
    finally:
        torch.distributed.destroy_process_group()


def test_torch_distributed_two_worker_group_equals_the_serial_map(tmp_path):
    """A local two-process gloo group, as torchrun would start it: every rank gets the whole map."""
    import torch.multiprocessing as tmp

    tmp.spawn(_distributed_rank, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = mimap.compute_mi_map([_layer(seed=s) for s in range(3)], batch_size=100)
    finally:
        torch.set_num_threads(threads)
    for rank in range(2):
        assert _maps_equal(mimap.MIMap.load(tmp_path / f"rank{rank}.npz"), serial)


def test_parallel_options_fail_fast():
    with pytest.raises(ValueError, match="torch.distributed process group"):
        mimap.compute_mi_map([_layer()], distributed=True)
    with pytest.raises(ValueError, match="workers"):
        mimap.compute_mi_map([_layer()], workers=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_map_equals_cpu_map():
    layers = [_layer(seed=s) for s in range(2)]
    cpu, gpu = mimap.compute_mi_map(layers, batch_size=100), mimap.compute_mi_map(layers, batch_size=100, device="cuda")
    np.testing.assert_allclose(gpu.mi, cpu.mi, atol=1e-9, rtol=0)


def _toy_map() -> mimap.MIMap:
    """Two layers of 4 neurons; neuron 3 of layer 0 is dead."""
    rng = np.random.default_rng(0)
    mi = rng.random((2, 4, 4))
    mi = (mi + mi.transpose(0, 2, 1)) / 2
    for layer in range(2):
        np.fill_diagonal(mi[layer], 2.0 + layer)
    pearson = rng.uniform(-1, 1, (2, 4, 4))
    pearson = (pearson + pearson.transpose(0, 2, 1)) / 2
    alive = np.ones((2, 4), bool)
    alive[0, 3] = False
    mi[0, 3, :], mi[0, :, 3] = 0.0, 0.0
    return mimap.MIMap(mi, pearson, alive, np.full((2, 4), 0.5) * alive, {})


def test_live_pairs_leave_out_dead_neurons_and_the_diagonal():
    m = _toy_map()
    pairs = mimap.live_pairs(m)
    assert pairs.groupby("layer").size().to_dict() == {1: 3, 2: 6}  # C(3, 2) and C(4, 2)
    assert not ((pairs.layer == 1) & ((pairs["neuron i"] == 3) | (pairs["neuron j"] == 3))).any()
    row = pairs[(pairs.layer == 2) & (pairs["neuron i"] == 0) & (pairs["neuron j"] == 2)].iloc[0]
    assert row["MI (bits)"] == m.mi[1, 0, 2] and row["|Pearson r|"] == abs(m.pearson[1, 0, 2]) and row["H(j)"] == 3.0
    neurons = mimap.live_neurons(m)
    assert neurons.groupby("layer").size().to_dict() == {1: 3, 2: 4} and set(neurons["entropy (bits)"]) == {2.0, 3.0}


def test_layer_summary_and_redundancy_check_read_live_pairs_only():
    m = _toy_map()
    summary = mimap.layer_summary(m)
    live01 = m.mi[0][np.triu_indices(3, 1)]  # the pairs among neurons 0-2 of layer 1
    assert summary.loc[1, "live neurons"] == 3 and summary.loc[1, "median pairwise MI"] == pytest.approx(np.median(live01))
    assert summary.loc[2, "mean entropy (bits)"] == 3.0
    check = mimap.redundancy_check(m)
    assert check.loc[1, "max MI / min(H_i, H_j)"] == pytest.approx(live01.max() / 2.0)


def test_contrast_pairs_pick_where_mi_and_correlation_disagree():
    mi = np.zeros((1, 3, 3))
    pearson = np.eye(3)[None].copy()
    mi[0][[0, 1], [1, 0]] = 0.9  # (0, 1): high MI, r = 0
    pearson[0][[0, 2], [2, 0]] = 0.95  # (0, 2): |r| high, MI = 0
    mi[0][[1, 2], [2, 1]], pearson[0][[1, 2], [2, 1]] = 0.5, 0.5  # (1, 2): in between on both
    m = mimap.MIMap(mi, pearson, np.ones((1, 3), bool), np.ones((1, 3)), {})
    picks = mimap.contrast_pairs(m, 0)
    assert picks["high MI, low |r|"] == (0, 1) and picks["high |r|, lower MI"] == (0, 2)
