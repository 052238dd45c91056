"""``minilib prune --estimate``: each stage's predicted time and memory, before any weights are loaded."""

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel
from zoo import ZOO, build, texts, tokenizer

import minilib
from minilib import cli
from minilib.estimate import estimate
from minilib.estimator.cost import BOOK_CPU_RATES, BOOK_CPU_RATES_HIGH_RANK
from minilib.estimator.pairwise import pairwise_mutual_information
from minilib.methods import Settings

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_the_shipped_rates_are_the_committed_measurements():
    m = pd.read_csv(REPO / "results" / "mi-map-smollm2.csv")
    pairs = m.layer.nunique() * 1536 * 1535 / 2
    for kernel, path in (("numba", "default"), ("torch", "default-torch")):
        assert BOOK_CPU_RATES.pairs_per_s[path] == pytest.approx(pairs / m[m.kernel == kernel].mi_s.sum(), rel=1e-3)
    assert BOOK_CPU_RATES.width_s_per_neuron == pytest.approx(m[m.kernel == "numba"].widths_s.mean() / 1536, rel=1e-3)
    layer = pd.read_csv(REPO / "results" / "bench_pairwise_mi-smollm2.csv").set_index("path").pairs_per_s
    for path in ("exact", "alpha2"):
        assert BOOK_CPU_RATES.pairs_per_s[path] == pytest.approx(layer[path], rel=1e-3)
    for path in ("default", "default-torch", "exact", "alpha2"):
        assert BOOK_CPU_RATES_HIGH_RANK.pairs_per_s[path] == pytest.approx(layer[path], rel=1e-3)


def _stages(method, examples=200, tokens=2000, **kw):
    config = ZOO["bert-classifier"][1](**ZOO["bert-classifier"][2])
    table = estimate(config, method, kw.pop("settings", Settings()), examples, tokens, 0.5, parameters=10_000,
                     rate=1e9, **kw)
    return table.set_index("stage")


def test_each_method_gets_the_stages_it_runs():
    assert list(_stages("magnitude").index) == ["total"]
    assert list(_stages("wanda").index) == ["calibration pass", "total"]
    assert list(_stages("mi-mds").index) == ["calibration pass", "MI map", "selection", "KL choice", "total"]
    assert list(_stages("mi-alg1").index) == ["calibration pass", "MI map", "selection", "total"]
    assert "compensation" in _stages("wanda", compensation="bias").index
    hf, wanda = _stages("hfprune").seconds, _stages("wanda").seconds
    assert hf["calibration pass"] == pytest.approx(3 * wanda["calibration pass"])  # forward and backward
    mi = _stages("mi-mds")
    assert mi.seconds["total"] == pytest.approx(mi.seconds.drop("total").sum())
    assert mi.peak_gb["total"] == mi.peak_gb.drop("total").max()


def test_predictions_scale_with_the_data():
    one, two = _stages("mi-mds", 200, 2000), _stages("mi-mds", 400, 4000)
    assert two.seconds["MI map"] == pytest.approx(2 * one.seconds["MI map"])  # twice the MI batches
    assert two.seconds["calibration pass"] == pytest.approx(2 * one.seconds["calibration pass"])
    capped = _stages("mi-mds", 400, 4000, settings=Settings(max_batches=2))
    assert capped.seconds["MI map"] == pytest.approx(one.seconds["MI map"])


def test_the_estimate_is_within_a_factor_of_ten_of_a_measured_run(tmp_path):
    """A guard against gross errors; benchmarks/bench_estimate.py measures the factor on the book's models."""
    pairwise_mutual_information(torch.randn(40, 6, dtype=torch.float64), torch.ones(6))  # compile the kernel first
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=60, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=256, max_position_embeddings=40)).eval()
    data = texts(200)
    settings = Settings(mds_seeds=2)
    _, report = minilib.prune(model, data, 0.5, "mi-mds", tokenizer=tokenizer(tmp_path),
                              progress=False, mds_seeds=2)
    calib = report.calibration
    predicted = estimate(model.config, "mi-mds", settings, calib["examples"], calib["tokens"], 0.5,
                         parameters=sum(p.numel() for p in model.parameters())).set_index("stage")
    measured = sum(report.stages.values())
    assert set(report.stages) == set(predicted.index) - {"total"}
    low, high = predicted.seconds["total"], predicted.up_to_seconds["total"]
    assert low / 10 < measured < high * 10, (report.stages, predicted.to_dict())


def test_the_command_line_estimates_without_loading_weights(tmp_path, capsys):
    build("llama").save_pretrained(tmp_path / "m")
    tokenizer(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not weights")  # --estimate must not read them
    (tmp_path / "c.txt").write_text("\n".join(texts(40)))
    cli.main(["prune", str(tmp_path / "m"), "--calibration", str(tmp_path / "c.txt"), "--keep", "0.5",
              "--method", "mi-mds", "--estimate"])
    out = capsys.readouterr().out
    assert "estimate for mi-mds" in out and all(s in out for s in ("calibration pass", "MI map", "selection", "total"))
    assert not (tmp_path / "out").exists()
