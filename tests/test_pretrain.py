"""The offline encoder build: corpus hygiene (train text only), embedding projection, masking, determinism."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from minilib.models import pretrain
from minilib.models.bert import load_classifier

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "glue"


@pytest.fixture
def small_corpus(tmp_path, monkeypatch):
    lm = tmp_path / "lm"
    for name in pretrain.WIKI_FILES:
        (lm / name).parent.mkdir(parents=True, exist_ok=True)
        (lm / name).write_text(" \n = Heading = \n \n The cat sat on the mat @-@ like a <unk> . \n" * 3)
    monkeypatch.setenv("MINILIB_LM_DIR", str(lm))
    monkeypatch.setenv("MINILIB_GLUE_DIR", str(FIXTURES))
    return lm


def test_corpus_has_train_text_only(small_corpus):
    units, hashes = pretrain.corpus()
    assert sorted(hashes) == sorted([f"lm/{n}" for n in pretrain.WIKI_FILES]
                                    + ["glue/SST-2/train.tsv", "glue/STS-B/train.tsv", "glue/MRPC/train.tsv"])
    texts = {t for u in units for t in u if t}
    from minilib.data import glue
    for task in ("sst2", "stsb", "mrpc"):
        dev = glue.load_split(task, "validation", FIXTURES)
        assert not texts & set(dev["text_a"])  # never dev text
    assert "The cat sat on the mat-like a [UNK] ." in texts and not any("Heading" in t for t in texts)
    assert sum(b is not None for _, b in units) == 24  # STS-B and MRPC pairs stay pairs


def test_projection_keeps_the_top_principal_directions():
    g = torch.Generator().manual_seed(0)
    words = torch.randn(500, 12, generator=g) * torch.linspace(3, 0.1, 12)
    teacher = {"embeddings.word_embeddings.weight": words,
               "embeddings.position_embeddings.weight": torch.randn(40, 12, generator=g),
               "embeddings.token_type_embeddings.weight": torch.randn(2, 12, generator=g)}
    out = pretrain.project_embeddings(teacher, 4)
    w = out["embeddings.word_embeddings.weight"].double()
    assert w.shape == (500, 4) and out["embeddings.position_embeddings.weight"].shape == (40, 4)
    cov = torch.cov(w.T)
    assert torch.allclose(cov, torch.diag(cov.diagonal()), atol=1e-6)  # decorrelated components
    top4 = torch.linalg.eigvalsh(torch.cov(words.double().T))[-4:].flip(0)
    assert torch.allclose(cov.diagonal(), top4, rtol=1e-6)  # the variances of the 4 principal directions


def test_masking_follows_bert_and_spares_special_tokens():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (64, 50), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    noisy, chosen, target = pretrain._mask_tokens(ids, special, 0.15, 30522, 103, g)
    assert not chosen[special].any() and torch.equal(target, ids[chosen])
    assert abs(chosen.float().mean().item() - 0.15 * 48 / 50) < 0.01
    assert abs((noisy[chosen] == 103).float().mean().item() - 0.8) < 0.03
    assert torch.equal(noisy[~chosen], ids[~chosen])


def test_corruption_grows_with_level_and_is_seeded():
    text = " ".join(f"w{i}" for i in range(60))
    pool = ["x", "y", "z"]
    assert pretrain.corrupt(text, 0.0, pool, np.random.default_rng(0)) == " ".join(text.split()[:40])
    kept = []
    for level in (0.2, 0.5, 0.9):
        out = [pretrain.corrupt(text, level, pool, np.random.default_rng(s)).split() for s in range(50)]
        kept.append(np.mean([len(set(o) & set(text.split())) / 40 for o in out]))
        assert all(set(o) <= set(text.split()) | set(pool) for o in out)
    assert kept[0] > kept[1] > kept[2] and abs(kept[1] - 0.5) < 0.05  # a word survives with probability 1 - level
    a = pretrain.corrupt(text, 0.5, pool, np.random.default_rng(3))
    assert a == pretrain.corrupt(text, 0.5, pool, np.random.default_rng(3))


def test_overlap_labels_mark_words_shared_across_segments():
    # [CLS] the cat [SEP] a cat the [SEP] [PAD]; word pieces: the=1, cat=2, a=3; 101/102 special, 0 padding
    ids = torch.tensor([[101, 1, 2, 102, 3, 2, 1, 102, 0]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 0]])
    ordinary = torch.tensor([[0, 1, 1, 0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    labels = pretrain._overlap_labels(ids, types, ordinary)
    assert labels[0, ordinary[0]].tolist() == [1, 1, 0, 1, 1]  # "a" is the only word not in the other segment
    same = pretrain._overlap_labels(torch.tensor([[101, 1, 1, 102]]), torch.zeros(1, 4, dtype=torch.long),
                                    torch.tensor([[0, 1, 1, 0]], dtype=torch.bool))
    assert not same.any()  # a repeat inside one segment is not an overlap


def test_tiny_build_is_deterministic_and_loads_as_a_classifier(small_corpus, tmp_path):
    recipe = pretrain.Recipe(steps=3, batch_size=8, max_units=30, corrupted_pairs=20)
    a = pretrain.build_offline_encoder(recipe, out=tmp_path / "a", progress=False)
    b = pretrain.build_offline_encoder(recipe, out=tmp_path / "b", progress=False)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    manifest = (a / "manifest.json").read_text()
    for expected in ('"pair":', '"overlap":', '"steps": 3', "glue/SST-2/train.tsv", "minilm/model.safetensors"):
        assert expected in manifest
    clf = load_classifier(str(a), "sst2")
    assert torch.equal(clf.bert.embeddings.word_embeddings.weight, wa["embeddings.word_embeddings.weight"])
    assert torch.equal(clf.bert.pooler.dense.weight, wa["pooler.dense.weight"])  # distillation trained it
    query = wa["encoder.layer.0.attention.self.query.weight"]  # the matching prior, three small steps later
    assert torch.allclose(query, recipe.match_init * torch.eye(128), atol=0.01) and query.diagonal().min() > 1
    built_at = (a / "manifest.json").stat().st_mtime_ns
    assert pretrain.build_offline_encoder(recipe, out=a, progress=False) == a  # same recipe: reused as is
    assert (a / "manifest.json").stat().st_mtime_ns == built_at
    pretrain.build_offline_encoder(dataclasses.replace(recipe, steps=2), out=a, progress=False)  # another: rebuilt
    assert '"steps": 2' in (a / "manifest.json").read_text()


def test_unknown_recipe(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe 'huge'"):
        pretrain.build_offline_encoder("huge", cache=tmp_path)
