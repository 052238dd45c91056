"""HFPrune and its peers on a tiny Llama: gradients against finite differences, exact surgery, reloads, errors."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from minilib import lm_neurons


def _objective_with_bump(model, window, criterion, layer, t, j, eps):
    """The criterion after adding ``eps`` to activation (t, j) of ``layer``'s MLP."""
    def bump(_m, args):
        a = args[0].clone()
        a[0, t, j] += eps
        return (a,)
    h = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(bump)
    try:
        with torch.no_grad():
            return lm_neurons._objective(criterion, model(input_ids=window).logits, window).item()
    finally:
        h.remove()


@pytest.mark.parametrize("criterion", ["entropy", "ce"])
def test_activation_gradients_match_finite_differences(tiny_llama, lm_windows, criterion):
    window = lm_windows[:1]
    acts, grads = lm_neurons.activation_gradients(tiny_llama, window, criterion)
    assert [a.shape for a in acts] == [(1, 10, 12)] * 3 and not any(p.grad is not None for p in tiny_llama.parameters())
    eps = 1e-3  # Llama's RMSNorm computes in float32 even in a float64 model: a tiny step drowns in round-off
    for layer, t, j in [(0, 0, 3), (1, 4, 7), (2, 8, 0), (0, 9, 11)]:
        fd = (_objective_with_bump(tiny_llama, window, criterion, layer, t, j, eps)
              - _objective_with_bump(tiny_llama, window, criterion, layer, t, j, -eps)) / (2 * eps)
        assert grads[layer][0, t, j].item() == pytest.approx(fd, rel=1e-3, abs=1e-6)


def test_hfprune_scores_sum_abs_products_over_windows(tiny_llama, lm_windows):
    scores = lm_neurons.taylor_scores(tiny_llama, lm_windows, "entropy")
    expected = np.zeros((3, 12))
    for w in lm_windows.split(1):
        acts, grads = lm_neurons.activation_gradients(tiny_llama, w, "entropy")
        expected += np.stack([(a * g).abs().sum((0, 1)).numpy() for a, g in zip(acts, grads)])
    assert np.allclose(np.stack(scores), expected, rtol=1e-12)
    assert not np.allclose(scores, lm_neurons.taylor_scores(tiny_llama, lm_windows, "ce"))


def test_wanda_is_column_norm_times_activation_norm(tiny_llama, lm_windows):
    acts, _ = lm_neurons.activation_gradients(tiny_llama, lm_windows, "ce")
    wanda = lm_neurons.wanda_scores(tiny_llama, lm_windows)
    for b, a, s in zip(tiny_llama.model.layers, acts, wanda):
        ref = b.mlp.down_proj.weight.abs().sum(0) * a.pow(2).sum((0, 1)).sqrt()
        assert np.allclose(s, ref.detach().numpy(), rtol=1e-10)


def test_keeping_every_neuron_changes_nothing_and_pruning_equals_zeroing(tiny_llama, lm_windows):
    full = lm_neurons.prune_mlp(tiny_llama, [range(12)] * 3)
    assert torch.equal(full(input_ids=lm_windows).logits, tiny_llama(input_ids=lm_windows).logits)
    keep = lm_neurons.keep_uniform(lm_neurons.neuron_scores("random", tiny_llama, lm_windows), 0.25)
    assert [len(k) for k in keep] == [9, 9, 9]
    pruned = lm_neurons.prune_mlp(tiny_llama, keep)

    def zero(layer):
        def fn(_m, args):
            a = args[0].clone()
            a[..., np.setdiff1d(np.arange(12), keep[layer])] = 0
            return (a,)
        return fn
    hooks = [b.mlp.down_proj.register_forward_pre_hook(zero(i)) for i, b in enumerate(tiny_llama.model.layers)]
    try:
        expected = tiny_llama(input_ids=lm_windows).logits
    finally:
        for h in hooks:
            h.remove()
    assert torch.allclose(pruned(input_ids=lm_windows).logits, expected, atol=1e-12)
    assert tiny_llama.model.layers[0].mlp.up_proj.out_features == 12  # the original is untouched


def test_pruned_model_reloads(tiny_llama, lm_windows, tmp_path):
    pruned = lm_neurons.prune_mlp(tiny_llama, lm_neurons.keep_uniform(lm_neurons.magnitude_scores(tiny_llama), 0.5))
    pruned.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    assert again.config.intermediate_size == 6
    assert torch.allclose(again(input_ids=lm_windows).logits, pruned(input_ids=lm_windows).logits, atol=1e-12)


def test_clear_errors(tiny_llama, lm_windows):
    with pytest.raises(ValueError, match="same number of neurons"):
        lm_neurons.prune_mlp(tiny_llama, [range(12), range(6), range(6)])
    with pytest.raises(ValueError, match="layer 0: keep lists a neuron twice"):
        lm_neurons.prune_mlp(tiny_llama, [[0, 0, 1]] * 3)
    with pytest.raises(ValueError, match=r"layer 0: neuron indices must lie in 0..11"):
        lm_neurons.prune_mlp(tiny_llama, [[0, 12]] * 3)
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        lm_neurons.keep_uniform([np.ones(12)], 1.0)
    with pytest.raises(ValueError, match="NaN"):
        lm_neurons.keep_uniform([np.full(12, np.nan)], 0.5)
    with pytest.raises(ValueError, match="unknown MLP pruning method"):
        lm_neurons.neuron_scores("obs", tiny_llama, lm_windows)
