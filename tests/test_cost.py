"""The cost model of an MI map (minilib.estimator.cost): its formula, its inputs, its errors."""

import math

import pandas as pd
import pytest

from minilib.estimator import cost
from minilib.estimator.pairwise import memory_bytes

RATES = cost.Rates("cpu", {"default": 1e5, "exact": 5e3, "alpha2": 2e6}, 2e-3, "test")


def test_prediction_is_pairs_over_rate_plus_widths_per_layer_and_batch():
    w = cost.Workload("m", 1000, 6, batches=2)
    p = cost.predict(w, RATES, "default")
    assert w.pairs == 499500
    assert p["seconds"] == pytest.approx(6 * 2 * (499500 / 1e5 + 1000 * 2e-3))
    assert p["memory_gb"] == pytest.approx(memory_bytes(1000, 100) / 2**30)
    assert p["map_gb"] == pytest.approx(16 * 6 * 1000**2 / 2**30)
    assert cost.predict(w, RATES, "exact")["seconds"] > p["seconds"] > cost.predict(w, RATES, "alpha2")["seconds"]


def test_layers_split_across_devices_round_up():
    w = cost.Workload("m", 512, 5)
    one = cost.predict(w, RATES)["seconds"]
    assert cost.predict(w, RATES, devices=2)["seconds"] == pytest.approx(one * 3 / 5)
    assert cost.predict(w, RATES, devices=8)["seconds"] == pytest.approx(one / 5)


def test_rates_come_from_the_largest_dimension_of_the_benchmark_csv(tmp_path):
    rows = [{"D": 512, "path": "default", "device": "cpu", "pairs_per_s": 9e4, "seconds": 1.0, "commit": "abc"},
            {"D": 1536, "path": "default", "device": "cpu", "pairs_per_s": 8e4, "seconds": 1.0, "commit": "abc"},
            {"D": 1536, "path": "widths", "device": "cpu", "pairs_per_s": None, "seconds": 3.0, "commit": "abc"},
            {"D": 1536, "path": "default", "device": "cuda", "pairs_per_s": 4e6, "seconds": 1.0, "commit": "abc"}]
    path = tmp_path / "bench.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    r = cost.rates_from_benchmark(path)
    assert r.pairs_per_s == {"default": 8e4} and r.width_s_per_neuron == pytest.approx(3.0 / 1536)
    assert "abc" in r.source
    assert cost.rates_from_benchmark(path, "cuda").pairs_per_s == {"default": 4e6}
    assert math.isnan(cost.predict(cost.Workload("m", 64, 1), r, "exact")["seconds"])  # not measured: no number
    with pytest.raises(ValueError, match="no rows for device 'tpu'"):
        cost.rates_from_benchmark(path, "tpu")


def test_assumed_rates_are_labelled_and_scaled():
    gpu = RATES.scaled(10.0, "gpu", "assumed")
    assert gpu.pairs_per_s["default"] == 1e6 and gpu.width_s_per_neuron == pytest.approx(2e-4)
    table = cost.cost_table([(RATES, 1), (gpu, 8)])
    assert set(table.rates) == {"test", "assumed"}
    assert len(table) == len(cost.WORKLOADS) * 2 * 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="path must be one of"):
        cost.predict(cost.WORKLOADS[0], RATES, "fast")
    with pytest.raises(ValueError, match="devices"):
        cost.predict(cost.WORKLOADS[0], RATES, devices=0)


def test_measured_map_sums_each_kernels_layers_beside_the_prediction():
    runs = pd.DataFrame({"layer": [0, 0, 1, 1], "kernel": ["numba", "torch"] * 2, "live neurons": [1000, 1000, 800, 800],
                         "widths_s": [1.0, 1.0, 2.0, 2.0], "mi_s": [5.0, 9.0, 3.0, 7.0],
                         "max_error_bits": [1e-7, 2e-7, 3e-7, 1e-7]})
    rates = cost.Rates("cpu", {"default": 1e5, "default-torch": 5e4}, 1e-3, "test")
    table = cost.measured_map(runs, {"model": rates})
    assert list(table.index) == ["numba", "torch"]
    assert table.loc["numba", "measured (min)"] == pytest.approx(11.0 / 60)
    assert table.loc["torch", "all-pairs MI (s)"] == 16.0 and table.loc["torch", "max error (bits)"] == 2e-7
    expected = (1000 * 999 / 2 + 800 * 799 / 2) / 1e5 + 1.8  # pairs at each layer's live width, plus the widths
    assert table.loc["numba", "model (min)"] == pytest.approx(expected / 60)
    assert table.loc["numba", "measured ÷ model"] == pytest.approx(11.0 / expected)
