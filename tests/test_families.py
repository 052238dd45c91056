"""Every family × every applicable method on tiny random models: exact surgery, reloads, the one API."""

import copy

import numpy as np
import pytest
import torch
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, MixtralConfig,
                          MixtralForCausalLM)
from zoo import DECODERS, ZOO, batches, build, outputs

import minilib
from minilib.models import surgery
from minilib.models.families import FAMILIES, family_of
from minilib.models.hooks import capture_activations
from minilib.methods import METHODS

AUTO = {n: (AutoModelForCausalLM if n in DECODERS else AutoModel if n == "bert-bare"
            else AutoModelForSequenceClassification) for n in ZOO}


@pytest.mark.parametrize("name", list(ZOO))
def test_keeping_every_neuron_changes_nothing(name):
    model, batch = build(name), batches(name)[0]
    full = surgery.prune_ffn(copy.deepcopy(model), [range(n) for n in surgery.ffn_sizes(model)])
    assert torch.equal(outputs(full, batch), outputs(model, batch))


@pytest.mark.parametrize("name", list(ZOO))
def test_removing_a_neuron_equals_zeroing_it(name):
    model, batch = build(name), batches(name)[0]
    family = family_of(model)
    sizes = family.sizes(model)
    drop = {0: 3, len(sizes) - 1: 5}

    def zero(index):
        def hook(_m, args):
            a = args[0].clone()
            a[..., drop[index]] = 0
            return (a,)
        return hook

    handles = [family.down(b).register_forward_pre_hook(zero(i)) for i, b in enumerate(family.blocks(model))
               if i in drop]
    zeroed = outputs(model, batch)
    for h in handles:
        h.remove()
    keep = [np.delete(np.arange(n), drop[i]) if i in drop else np.arange(n) for i, n in enumerate(sizes)]
    pruned = surgery.prune_ffn(copy.deepcopy(model), keep)
    assert surgery.ffn_sizes(pruned) == [n - (i in drop) for i, n in enumerate(sizes)]
    torch.testing.assert_close(outputs(pruned, batch), zeroed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(ZOO))
def test_pruned_models_reload_with_from_pretrained(name, tmp_path):
    model, batch = build(name), batches(name)[0]
    pruned, report = minilib.prune(copy.deepcopy(model), batches(name), 0.5, "magnitude", progress=False)
    pruned.save_pretrained(tmp_path)
    back = AUTO[name].from_pretrained(tmp_path).eval()
    assert type(back) is type(model) and surgery.ffn_sizes(back) == report.neurons_after
    assert torch.equal(outputs(back, batch), outputs(pruned, batch))
    ragged = surgery.prune_ffn(copy.deepcopy(model), {0: range(2)})  # non-uniform: load_pruned reads it
    ragged.save_pretrained(tmp_path / "ragged")
    again = surgery.load_pruned(tmp_path / "ragged", AUTO[name])
    assert surgery.ffn_sizes(again) == surgery.ffn_sizes(ragged)
    assert torch.equal(outputs(again, batch), outputs(ragged, batch))


def _applicable(name: str) -> list[str]:
    """Every method that is defined for the model: supervised ones need a head or a decoder's next tokens."""
    bare = ZOO[name][0].__name__ == "BertModel"
    return [m for m, spec in METHODS.items() if not (bare and ("labels" in spec.needs or m == "taylor-self"))]


@pytest.mark.parametrize("name", list(ZOO))
def test_every_applicable_method_runs_on_every_family_and_is_deterministic(name):
    data = batches(name)
    for method in _applicable(name):
        first, report = minilib.prune(build(name), data, 0.5, method, progress=False, mds_seeds=2)
        second, _ = minilib.prune(build(name), data, 0.5, method, progress=False, mds_seeds=2)
        sizes = report.neurons_before
        uniform = [round(0.5 * n) for n in sizes]
        if METHODS[method].allocation == "uniform":
            assert report.neurons_after == uniform, method
        else:  # FLAP's global budget: the same total, spread by the standardised scores
            assert sum(report.neurons_after) == sum(uniform) and min(report.neurons_after) >= 1, method
        assert report.parameters_after < report.parameters_before and report.macs_after < report.macs_before
        assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values())), method


def test_supervised_methods_refuse_a_bare_encoder_before_any_work():
    for method in ("taylor", "fisher", "mask-tuning", "taylor-ce"):
        with pytest.raises(ValueError, match="needs labels"):
            minilib.prune(build("bert-bare"), batches("bert-bare", labels=False), 0.5, method)


def test_hfprune_on_a_bare_encoder_reads_the_in_batch_similarity_distribution():
    model = build("bert-bare")
    scores = METHODS["hfprune"].score(minilib.methods.Calibrated(model, batches("bert-bare")), 0)
    assert all(np.isfinite(s).all() and (s > 0).any() for s in scores)


def test_decoder_samples_are_tokens_without_the_first_position():
    model, data = build("llama"), batches("llama", n=2)
    acts = capture_activations(model, data)
    assert [a.shape for a in acts] == [(2 * 6 * 8, 12)] * 3  # 2 batches × 6 windows × (9 − 1) positions


def test_families_are_registered_once_every_layout_is_tested_and_others_fail_in_one_line():
    assert {f.name for f in FAMILIES} == {"encoder-ffn", "encoder-glu", "decoder-mlp", "gated-mlp"}
    types = [t for f in FAMILIES for t in f.model_types]
    assert len(types) == len(set(types))
    assert {family_of(ZOO[n][1]()).layout for n in ZOO} == {f.layout for f in FAMILIES}  # the zoo covers them all
    moe = MixtralForCausalLM(MixtralConfig(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=2))
    with pytest.raises(ValueError, match=r"^unsupported architecture 'mixtral'.*BERT.*GPT-2.*Phi-3[^\n]*$"):
        minilib.prune(moe, [{"input_ids": torch.ones(2, 3, dtype=torch.long)}], 0.5, "random")


def test_half_precision_models_are_accepted():
    for name in ("bert-classifier", "llama"):
        model = build(name, torch.bfloat16)
        pruned, report = minilib.prune(model, batches(name), 0.5, "hfprune", progress=False)
        assert report.dtype == "bfloat16" and next(pruned.parameters()).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["bert-classifier", "llama"])
def test_cuda_gives_the_cpu_keep_sets(name):
    for method in ("hfprune", "mi-mds", "wanda"):
        cpu, _ = minilib.prune(build(name).double(), batches(name), 0.5, method, progress=False, mds_seeds=2)
        gpu, report = minilib.prune(build(name).double().cuda(), batches(name), 0.5, method, progress=False,
                                    mds_seeds=2)
        assert report.device.startswith("cuda")
        for a, b in zip(cpu.state_dict().values(), gpu.state_dict().values()):
            torch.testing.assert_close(a, b.cpu(), atol=1e-9, rtol=1e-9)
