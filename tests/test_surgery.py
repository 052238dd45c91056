"""Model surgery is exact; FLOPs formulas on hand-checked cases; saving and reloading; clear errors."""

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig

from minilib.models import surgery


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=12, max_position_embeddings=32, num_labels=3)
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return {"input_ids": torch.randint(0, 50, (4, 9), generator=g), "attention_mask": mask}


def _zeroed(model, neurons: dict[int, list[int]]):
    """The dense model with the given neurons' post-GELU activations forced to zero."""
    def hook(layer):
        def fn(_m, _i, out):
            out = out.clone()
            out[..., neurons.get(layer, [])] = 0
            return out
        return fn
    return [m.register_forward_hook(hook(i)) for i, m in enumerate(layer.intermediate for layer in model.bert.encoder.layer)]


def test_keeping_everything_changes_nothing(model, batch):
    before = model(**batch).logits
    pruned = surgery.prune_ffn(copy.deepcopy(model), [range(12), range(12)])
    assert torch.equal(pruned(**batch).logits, before)


def test_removing_a_neuron_equals_zeroing_it(model, batch):
    drop = {0: [3, 7], 1: [0, 1, 2, 11]}
    handles = _zeroed(model, drop)
    expected = model(**batch).logits
    for h in handles:
        h.remove()
    keep = [[j for j in range(12) if j not in drop.get(layer, [])] for layer in range(2)]
    pruned = surgery.prune_ffn(copy.deepcopy(model), keep)
    assert surgery.ffn_sizes(pruned) == [10, 8] and pruned.config.ffn_sizes == [10, 8]
    torch.testing.assert_close(pruned(**batch).logits, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model(**batch).logits, expected)  # the dropped neurons mattered


def test_save_and_reload(model, batch, tmp_path):
    uniform = surgery.prune_ffn(copy.deepcopy(model), {0: range(0, 12, 2), 1: range(6)})
    assert uniform.config.intermediate_size == 6 and not hasattr(uniform.config, "ffn_sizes")
    uniform.save_pretrained(tmp_path / "u")
    plain = BertForSequenceClassification.from_pretrained(tmp_path / "u").eval()
    assert torch.equal(plain(**batch).logits, uniform(**batch).logits)

    ragged = surgery.prune_ffn(copy.deepcopy(model), {1: [2, 5, 9]})
    ragged.save_pretrained(tmp_path / "r")
    back = surgery.load_pruned(tmp_path / "r")
    assert surgery.ffn_sizes(back) == [12, 3]
    assert torch.equal(back(**batch).logits, ragged(**batch).logits)
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        surgery.load_pruned(tmp_path / "nothing")


def test_macs_by_hand(model):
    config = BertConfig(hidden_size=4, num_attention_heads=2, num_hidden_layers=1, intermediate_size=6)
    # heads 2, d_h 2, L 3: attention 2·(3·3·4·2 + 2·9·2 + 3·2·4) = 264; FFN 6·2·3·4 = 144
    assert surgery.macs(config, seq_len=3) == 264 + 144
    assert surgery.macs(config, [3], seq_len=3) == 264 + 72
    flops = surgery.relative_flops(config, [3], seq_len=3)
    assert flops == {"ffn": 0.5, "encoder": (264 + 72) / 408}
    llama = LlamaConfig(hidden_size=4, intermediate_size=6, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1)
    # d_h 2, q 4, kv 2, L 3: projections 3·4·(2·4 + 2·2) = 144, scores 2·9·4 = 72, MLP 3·3·4·6 = 216
    assert surgery.macs(llama, seq_len=3) == 144 + 72 + 216 and surgery.macs(llama, [3], seq_len=3) == 144 + 72 + 108
    # BERT-tiny at SST-2's length: the FFN is ~65% of the encoder (open decision 9)
    tiny = BertConfig(hidden_size=128, num_attention_heads=2, num_hidden_layers=2, intermediate_size=512)
    ffn_share = 1 - surgery.relative_flops(tiny, [0, 0], surgery.MEAN_DEV_LENGTH["sst2"])["encoder"]
    assert 0.62 < ffn_share < 0.67


def test_parameters_shrink_by_the_removed_weights(model):
    before = surgery.count_parameters(model)
    pruned = surgery.prune_ffn(copy.deepcopy(model), [range(10), range(12)])
    after = surgery.count_parameters(pruned)
    removed = 2 * (16 + 1 + 16)  # two neurons: a row and a bias of intermediate, a column of output
    assert before["ffn"] - after["ffn"] == removed and before["total"] - after["total"] == removed


def test_latency_reports_a_positive_median(model, batch):
    timing = surgery.latency(model, batch, repeats=3, warmup=1, threads=1)
    assert 0 < timing["min_s"] <= timing["median_s"] and model.training is False
    with pytest.raises(ValueError, match="repeats must be at least 2"):
        surgery.latency(model, batch, repeats=1)


@pytest.mark.parametrize("keep, message", [
    ([range(12)], "keep has 1 entries but the model has 2 layers"),
    ([[], range(12)], "layer 0: keep at least one neuron"),
    ([[0, 12], range(12)], r"layer 0: neuron indices must lie in 0..11"),
    ([[1, 1], range(12)], "layer 0: keep lists a neuron twice"),
    ({5: [0]}, r"keep names layers \[5\]"),
])
def test_bad_keep_sets(model, keep, message):
    with pytest.raises(ValueError, match=message):
        surgery.prune_ffn(model, keep)
