"""The shared hook: FFN activation capture on a randomly initialised BERT-tiny (the shared config; no weights)."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from minilib.models.families import FAMILIES
from minilib.models.hooks import capture_activations as capture_ffn_activations

TINY = dict(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**TINY, num_labels=2)).eval()


def _batch(lengths, pad_to):
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(len(lengths), pad_to, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1000, 2000, (n,), generator=g)
        ids[i, 0] = 101  # [CLS]
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_shapes_per_reduction(model):
    b = _batch([5, 9, 3], pad_to=12)
    for reduction, rows in [("mean", 3), ("cls", 3), ("tokens", 17)]:
        acts = capture_ffn_activations(model, [b, b], reduction)
        assert len(acts) == 2 and all(a.shape == (2 * rows, 512) for a in acts)


def test_activations_are_post_gelu_intermediate_outputs(model):
    b = _batch([6], pad_to=6)
    with torch.no_grad():
        out = model.bert(**b, output_hidden_states=True)
    layer0 = model.bert.encoder.layer[0]
    attn = layer0.attention(out.hidden_states[0], attention_mask=None)[0]
    with torch.no_grad():
        expected = torch.nn.functional.gelu(layer0.intermediate.dense(attn))
        # and the layer's output is rebuilt from exactly these activations
        torch.testing.assert_close(layer0.output(expected, attn), out.hidden_states[1], atol=1e-5, rtol=1e-5)
    got = capture_ffn_activations(model, [b], "tokens")[0]
    torch.testing.assert_close(got, expected[0], atol=1e-5, rtol=1e-5)
    assert got.min() >= -0.17  # GELU's minimum is about -0.17


def test_padding_is_masked_out(model):
    short = _batch([4, 7], pad_to=7)
    long = _batch([4, 7], pad_to=20)  # same tokens, 13 more padding positions
    for reduction in ("mean", "cls", "tokens"):
        a = capture_ffn_activations(model, [short], reduction)
        b = capture_ffn_activations(model, [long], reduction)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_hooks_removed_and_mode_restored_even_on_error(model):
    model.train()
    capture_ffn_activations(model, [_batch([3], 3)])
    downs = [layer.output.dense for layer in model.bert.encoder.layer]
    assert model.training and all(not m._forward_pre_hooks for m in downs)
    with pytest.raises(ValueError, match="needs input_ids"):
        capture_ffn_activations(model, [{"attention_mask": torch.ones(1, 3, dtype=torch.long)}])
    assert all(not m._forward_pre_hooks for m in downs)
    model.eval()


def test_reduce_tokens_mean_by_hand():
    h, batch = torch.tensor([[[1.0], [3.0], [100.0]]]), {"attention_mask": torch.tensor([[1, 1, 0]])}
    assert FAMILIES[0].samples(h, batch, "mean").item() == 2.0
    assert FAMILIES[0].samples(h, batch, "cls").item() == 1.0
    assert FAMILIES[0].samples(h, batch, "tokens").flatten().tolist() == [1.0, 3.0]


def test_clear_errors(model):
    with pytest.raises(ValueError, match="reduction must be one of"):
        capture_ffn_activations(model, [_batch([3], 3)], "max")
    with pytest.raises(ValueError, match="unsupported architecture 'Linear'"):
        capture_ffn_activations(torch.nn.Linear(2, 2), [_batch([3], 3)])
    with pytest.raises(ValueError, match="no batches"):
        capture_ffn_activations(model, [])
