"""``minilib.prune``: calibration in every form, the report, and the bad inputs a user can hand it."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from zoo import batches, build, texts, tokenizer

import minilib
from minilib.data import calibration
from minilib.methods import Calibrated, Settings


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tokenizer(tmp_path_factory.mktemp("tok"))


def test_calibration_forms_give_the_same_batches(tok):
    pairs = list(zip(texts(20), texts(20, seed=1)))
    as_list = calibration.as_batches(pairs, tok, batch_size=8)
    as_dataset = calibration.as_batches(Dataset.from_dict({"text": [a for a, _ in pairs],
                                                           "text_pair": [b for _, b in pairs]}), tok, batch_size=8)
    assert len(as_list) == 3 and all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(as_list, as_dataset))
    tokenized = Dataset.from_dict({"input_ids": [tok(t)["input_ids"] for t in texts(20)], "label": [0, 1] * 10})
    rows = calibration.as_batches(tokenized, tok, batch_size=8)
    assert [len(b["input_ids"]) for b in rows] == [7, 6, 7]  # near-equal batches: no lone last example
    assert calibration.has_labels(rows) and rows[0]["attention_mask"].sum() == sum(map(len, tokenized["input_ids"][:7]))
    loader = DataLoader(batches("bert-classifier"), batch_size=None)
    assert len(calibration.as_batches(loader)) == 4


@pytest.mark.parametrize("data, message", [
    ([], "is empty"),
    (["fine", ""], "example 1 is not a non-empty string"),
    ([("a", "b"), "c"], "must all be"),
    (Dataset.from_dict({"sentence": ["a"]}), "needs a 'text' column"),
    (42, "not supported"),
    ("calib.txt", "not a path"),
    ([{"attention_mask": torch.ones(1, 2)}], "needs input_ids"),
])
def test_bad_calibration_is_named(tok, data, message):
    with pytest.raises((ValueError, TypeError), match=message):
        calibration.as_batches(data, tok)


def test_texts_need_a_tokenizer():
    with pytest.raises(ValueError, match="need a tokenizer"):
        minilib.prune(build("bert-bare"), texts(20), 0.5, "random")


def test_report_states_what_was_done(tok):
    model = build("bert-bare")
    pruned, report = minilib.prune(model, texts(30), 0.5, "mi-mds", tokenizer=tok, progress=False, mds_seeds=3,
                                   alpha=2.0, seed=4)
    assert pruned is model  # pruned in place
    d = report.to_dict()
    assert d["settings"] == {**Settings(alpha=2.0, mds_seeds=3).as_dict()} and d["seed"] == 4
    assert d["neurons_before"] == [24, 24] and d["neurons_after"] == [12, 12]
    assert d["parameters_before"] - d["parameters_after"] == 2 * 12 * (16 + 1 + 16)
    assert d["calibration"]["examples"] == 30 and d["family"] == "encoder-ffn" and d["model_class"] == "BertModel"
    assert set(d["seconds"]) == {"calibration", "select", "surgery"} and d["code_revision"] and d["minilib_version"]
    assert math.isclose(d["macs_after"] / d["macs_before"], report.macs_after / report.macs_before)


def test_the_report_names_the_kept_neurons_and_compares_two_choices(tok):
    model = build("bert-bare")
    weight = model.encoder.layer[1].intermediate.dense.weight.clone()
    pruned, report = minilib.prune(model, texts(30), 0.25, "magnitude", tokenizer=tok, progress=False)
    assert [len(k) for k in report.kept] == [6, 6] and all(k == sorted(k) for k in report.kept)
    assert torch.equal(pruned.encoder.layer[1].intermediate.dense.weight, weight[report.kept[1]])  # the neurons it names
    assert report.agreement(report) == 1.0
    _, other = minilib.prune(build("bert-bare"), texts(30), 0.25, "random", tokenizer=tok, progress=False, seed=1)
    shared = [len(set(a) & set(b)) / 6 for a, b in zip(report.kept, other.kept)]
    assert report.agreement(other) == pytest.approx(sum(shared) / 2)
    _, half = minilib.prune(build("bert-bare"), texts(30), 0.5, "random", tokenizer=tok, progress=False)
    with pytest.raises(ValueError, match="same keep fraction"):
        report.agreement(half)


def test_same_seed_same_keep_sets_and_another_seed_differs(tok):
    def kept(seed):
        model = build("bert-bare")
        weight = model.encoder.layer[0].intermediate.dense.weight.clone()
        minilib.prune(model, texts(30), 0.5, "mi-mds", tokenizer=tok, progress=False, mds_seeds=3, seed=seed)
        new = model.encoder.layer[0].intermediate.dense.weight
        return [int(torch.nonzero((weight == row).all(1))[0]) for row in new]
    assert kept(0) == kept(0) and kept(0) != kept(1)


def test_unknown_options_and_bad_settings_fail_before_any_work(tok):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['alhpa'\]"):
        minilib.prune(build("bert-bare"), texts(30), 0.5, tokenizer=tok, alhpa=2)
    with pytest.raises(ValueError, match="widths must be 'aligned' or 'scott'"):
        minilib.prune(build("bert-bare"), texts(30), 0.5, tokenizer=tok, widths="silverman")
    with pytest.raises(ValueError, match="unknown method 'obs'"):
        minilib.prune(build("bert-bare"), texts(30), 0.5, "obs", tokenizer=tok)


def test_too_few_samples_for_the_estimator():
    with pytest.raises(ValueError, match="needs at least 16 calibration samples \\(examples\\)"):
        minilib.prune(build("bert-classifier"), batches("bert-classifier", n=1, size=4), 0.5, "mi-mds")
    minilib.prune(build("bert-classifier"), batches("bert-classifier", n=1, size=4), 0.5, "magnitude")  # no estimates


def test_overflowing_activations_are_reported_not_averaged():
    model = build("llama", torch.float16)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.fill_(3e4)  # float16 overflows to inf
    for method in ("mi-mds", "hfprune", "wanda"):
        with pytest.raises((FloatingPointError, ValueError), match="NaN or inf"):
            minilib.prune(model, batches("llama"), 0.5, method, progress=False)


def test_dead_neurons_are_pruned_first_by_the_mi_method():
    model = build("bert-classifier")
    with torch.no_grad():  # GELU(0) = 0 on every input: neurons 4 and 9 of layer 1 carry nothing
        for j in (4, 9):
            model.bert.encoder.layer[1].intermediate.dense.weight[j] = 0
            model.bert.encoder.layer[1].intermediate.dense.bias[j] = 0
    state = Calibrated(model, batches("bert-classifier", n=4, size=8), Settings(mds_seeds=2))
    assert not state.mi_map.alive[1][[4, 9]].any() and state.mi_map.alive[0].all()
    keep = minilib.methods.METHODS["mi-mds"].select(state, 20, 0)
    assert 4 not in keep[1] and 9 not in keep[1] and len(keep[1]) == 20


def test_a_planted_copy_of_a_neuron_is_pruned_first_on_a_decoder():
    model = build("llama")
    mlp = model.model.layers[0].mlp
    with torch.no_grad():  # neuron 7 duplicates neuron 2 exactly: one of the two is redundant
        mlp.gate_proj.weight[7], mlp.up_proj.weight[7] = mlp.gate_proj.weight[2], mlp.up_proj.weight[2]
    state = Calibrated(model, batches("llama", n=4, size=6, length=20), Settings(mds_seeds=3))
    m = state.mi_map.mi[0]
    off = m - np.diag(np.diag(m))
    assert np.unravel_index(np.argmax(off), off.shape) in {(2, 7), (7, 2)}
    keep = minilib.methods.METHODS["mi-mds"].select(state, 11, 0)
    assert len({2, 7} & set(keep[0].tolist())) == 1


def test_classical_mds_option_runs_the_paper_method_and_is_seed_free_in_its_embedding():
    state = Calibrated(build("llama"), batches("llama", n=4, size=6, length=20), Settings(mds="classical", cluster="kmeans",
                                                                                     mds_seeds=3))
    keep = minilib.methods.METHODS["mi-mds"].select(state, 6, 0)
    assert [len(k) for k in keep] == [6, 6, 6] and len(state.embeddings) == 3  # one embedding per layer, not per seed
    with pytest.raises(ValueError, match="mds must be one of"):
        Settings(mds="tsne")


@pytest.mark.parametrize("cluster", ["kmedoids", "agglomerative"])
def test_distance_clustering_runs_the_paper_method_without_mds(cluster):
    state = Calibrated(build("llama"), batches("llama", n=4, size=6, length=20), Settings(cluster=cluster, mds_seeds=3))
    keep = minilib.methods.METHODS["mi-mds"].select(state, 6, 0)
    assert [len(k) for k in keep] == [6, 6, 6] and not state.embeddings  # no MDS fitted
    again = Calibrated(build("llama"), batches("llama", n=4, size=6, length=20), Settings(cluster=cluster, mds_seeds=3))
    assert all(np.array_equal(a, b) for a, b in zip(keep, minilib.methods.METHODS["mi-mds"].select(again, 6, 0)))
    with pytest.raises(ValueError, match="cluster must be one of"):
        Settings(cluster="dbscan")
    with pytest.raises(ValueError, match="needs mds='classical'"):
        Settings(mds_mass=0.9)
