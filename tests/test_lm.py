"""The causal-LM measure: windows, perplexity, WikiText-2 files, local loading and layout checks."""

import math

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from minilib.models import lm
from minilib.models import bert


def test_windows_are_consecutive_and_disjoint():
    ids = torch.arange(100)
    w = lm.windows(ids, 10, 3, start=5)
    assert w.shape == (3, 10)
    assert torch.equal(w.flatten(), torch.arange(5, 35))
    with pytest.raises(ValueError, match="ask for fewer"):
        lm.windows(ids, 50, 3)


def test_perplexity_is_exp_mean_nll_and_batch_independent(tiny_llama, lm_windows):
    logits = tiny_llama(input_ids=lm_windows).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), lm_windows[:, 1:].reshape(-1))
    by_one = lm.perplexity(tiny_llama, lm_windows, batch_size=1)
    assert by_one == pytest.approx(math.exp(nll.item()), rel=1e-9)
    assert lm.perplexity(tiny_llama, lm_windows, batch_size=3) == pytest.approx(by_one, rel=1e-9)
    assert 1.0 < by_one < 400  # a random model over 40 tokens: near 40, never below 1


def test_wikitext_files_and_errors(tmp_path):
    tok = bert.load_tokenizer()
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / "wikitext-2-raw" / "wiki.test.raw").write_text(" = Title = \n the cat sat on the mat . \n")
    ids = lm.wikitext_ids(tok, "test", tmp_path)
    assert ids.dtype == torch.long and ids.ndim == 1
    assert tok.decode(ids).replace(" ", "") == "=title=thecatsatonthemat."
    with pytest.raises(FileNotFoundError, match="MINILIB_LM_DIR"):
        lm.wikitext_ids(tok, "valid", tmp_path)
    with pytest.raises(ValueError, match="unknown WikiText-2 split"):
        lm.wikitext_ids(tok, "train", tmp_path)


def test_local_folder_round_trip(tiny_llama, lm_windows, tmp_path):
    tiny_llama.float().save_pretrained(tmp_path / "m")
    AutoTokenizer.from_pretrained(bert.bert_tiny_dir()).save_pretrained(tmp_path / "m")
    model, tok = lm.load_lm(str(tmp_path / "m"))
    assert not model.training and tok.vocab_size == 30522
    assert torch.equal(model(input_ids=lm_windows).logits, tiny_llama(input_ids=lm_windows).logits)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        lm.load_lm(str(tmp_path / "empty"))


def test_models_without_llama_layout_fail_clearly(tmp_path):
    bert = BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=8))
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="not a decoder"):
        lm.load_lm(str(tmp_path / "bert"))


def test_auto_source_is_offline_without_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert lm.resolve_source("auto") == "offline"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert lm.resolve_source("auto") == lm.HUB_LM
