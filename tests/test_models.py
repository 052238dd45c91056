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
