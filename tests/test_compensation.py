"""Compensation and allocation (chapter 9): exact reconstructions, the guard, saving, and the bad combinations."""

import copy

import numpy as np
import pytest
import torch
from zoo import ZOO, batches, build, outputs

import minilib
from minilib.methods import Calibrated, METHODS, check_plan, layer_counts
from minilib.methods import allocation as al
from minilib.methods import compensation as cp
from minilib.models import surgery
from minilib.models.families import family_of

# bias switch in the config (llama, modernbert), own biases (gpt2, opt), or neither (qwen2, phi3: load_pruned)
SAVE_RELOAD = ["bert-classifier", "llama", "qwen2", "gpt2", "opt", "modernbert", "phi3"]


def _stats(fit: np.ndarray, held: np.ndarray) -> cp.LayerStats:
    """Statistics of hand-made activations (tokens × D)."""
    def moment(a):
        x = torch.cat([torch.as_tensor(a, dtype=torch.float64), torch.ones(len(a), 1, dtype=torch.float64)], 1)
        return x.T @ x
    return cp.LayerStats(moment(fit), moment(held))


def _hidden(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The last hidden state (a random classifier's logits barely move: its head weights are tiny)."""
    with torch.no_grad():
        return model.base_model(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state


def _duplicated(name: str) -> torch.nn.Module:
    """A float64 model whose neuron 1 is an exact copy of neuron 0 in every block."""
    model = build(name).double()
    family = family_of(model)
    with torch.no_grad():
        for block in family.blocks(model):
            for w in family.up_weights(block):  # views: GPT-2's transposed Conv1D, Phi-3's fused halves
                w[1] = w[0]
            for layer in family.ups(block).values():
                if layer.bias is not None:
                    halves = layer.bias.view(2 if family.layout.fused else 1, -1)
                    halves[:, 1] = halves[:, 0]
    return model


@pytest.mark.parametrize("name", ["bert-classifier", "llama", "gpt2", "opt", "modernbert", "phi3"])
@pytest.mark.parametrize("fit", cp.FITS)
def test_least_squares_restores_a_removed_exact_duplicate(name, fit):
    model, data = _duplicated(name), batches(name, n=8)
    keep = [np.delete(np.arange(n), 1) for n in family_of(model).sizes(model)]
    dense = _hidden(model, data[0])
    plain, _ = cp.compensate(copy.deepcopy(model), keep, data, cp.Compensation("none"))
    fitted, fixes = cp.compensate(copy.deepcopy(model), keep, data, cp.Compensation("least-squares", fit=fit))
    lost = (_hidden(plain, data[0]) - dense).abs().max()  # removing it alone loses half its signal
    assert lost > 1e-5 and (_hidden(fitted, data[0]) - dense).abs().max() < 1e-3 * lost
    assert all(f.mode == "least-squares" and f.error < 1e-9 * max(f.error_none, 1e-30) + 1e-12 for f in fixes)


@pytest.mark.parametrize("name", ["bert-classifier", "llama", "qwen2"])
def test_sequential_fit_replays_blocks_as_the_layer_by_layer_reference(name):
    """The replayed blocks see what a full forward pass of the partly pruned model gives them."""
    model, data = build(name).double(), batches(name, n=6)
    family = family_of(model)
    keep = [np.arange(0, n, 2) for n in family.sizes(model)]
    fast, fixes = cp.compensate(copy.deepcopy(model), keep, data, cp.Compensation("least-squares", fit="sequential"))
    slow = copy.deepcopy(model)
    for i in range(len(keep)):  # reference: one full (early-stopped) pass per layer
        stats = cp.collect_stats(slow, data, [i])[i]
        down = family.down(family.blocks(slow)[i])
        fix = cp.fix_layer(down.weight, down.bias, keep[i], stats, "least-squares")
        family.prune(slow, {i: keep[i]})
        cp._set_down(family, slow, i, fix)
        assert fix.error == pytest.approx(fixes[i].error, rel=1e-8, abs=1e-14)
    for a, b in zip(fast.state_dict().values(), slow.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert fast.config.use_cache == model.config.use_cache


def test_merge_folds_a_duplicate_into_its_partner_exactly():
    model, data = _duplicated("llama"), batches("llama", n=8)
    keep = [np.delete(np.arange(n), 1) for n in family_of(model).sizes(model)]
    similarity = np.eye(12)
    similarity[0, 1] = similarity[1, 0] = 0.9  # neuron 1's most similar kept neuron is 0
    partners = [cp.partners_from_similarity(similarity, k) for k in keep]
    assert all(p[1] == 0 and (p[k] == k).all() for p, k in zip(partners, keep))
    merged, fixes = cp.compensate(copy.deepcopy(model), keep, data, cp.Compensation("merge"), partners)
    assert (_hidden(merged, data[0]) - _hidden(model, data[0])).abs().max() < 1e-9
    assert all(f.mode == "merge" for f in fixes)


def test_bias_compensation_of_a_constant_neuron_is_exact():
    model, data = build("bert-classifier").double(), batches("bert-classifier", n=4)
    family = family_of(model)
    with torch.no_grad():  # neuron 3: zero input weights, so GELU(bias) = a constant on every token
        for block in family.blocks(model):
            block.intermediate.dense.weight[3] = 0.0
            block.intermediate.dense.bias[3] = 1.5
    keep = [np.delete(np.arange(n), 3) for n in family.sizes(model)]
    fixed, fixes = cp.compensate(copy.deepcopy(model), keep, data, cp.Compensation("bias"))
    plain, _ = cp.compensate(copy.deepcopy(model), keep, data, cp.Compensation("none"))
    assert (_hidden(plain, data[0]) - _hidden(model, data[0])).abs().max() > 1e-3
    assert (_hidden(fixed, data[0]) - _hidden(model, data[0])).abs().max() < 1e-10
    assert all(f.mode == "bias" for f in fixes)


def test_the_guard_keeps_a_layer_uncompensated_when_the_fit_raises_its_held_out_error():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((400, 3))
    fit = np.column_stack([base, base[:, 0]])  # on the fit tokens neuron 3 copies neuron 0 …
    held = np.column_stack([base, -base[:, 0]])  # … on the held-out ones it is its negative
    stats, W = _stats(fit, held), torch.as_tensor(rng.standard_normal((5, 4)))
    for mode in ("least-squares", "merge"):
        fix = cp.fix_layer(W, None, [0, 1, 2], stats, mode, partners=np.array([0, 1, 2, 0]))
        assert fix.mode == "none" and fix.error == fix.error_none and torch.equal(fix.weight, W[:, :3].double())
    consistent = cp.fix_layer(W, None, [0, 1, 2], _stats(fit, fit), "least-squares")
    assert consistent.mode == "least-squares" and consistent.error < 1e-12 * consistent.error_none


def test_held_out_error_is_the_mean_squared_output_error():
    rng = np.random.default_rng(1)
    fit, held = rng.standard_normal((300, 6)), rng.standard_normal((50, 6)) + 0.3
    W, b = torch.as_tensor(rng.standard_normal((4, 6))), torch.as_tensor(rng.standard_normal(4))
    fix = cp.fix_layer(W, b, [0, 2, 3, 5], _stats(fit, held), "least-squares")
    a = torch.as_tensor(held)
    direct = ((a[:, [0, 2, 3, 5]] @ fix.weight.T + fix.bias) - (a @ W.T + b)).pow(2).sum(1).mean()
    assert fix.error == pytest.approx(float(direct), rel=1e-9)


@pytest.mark.parametrize("name", SAVE_RELOAD)
def test_compensated_and_non_uniform_models_save_and_reload(name, tmp_path):
    model, data = build(name), batches(name, n=6)
    for allocation, method in (("uniform", "wanda"), ("global", "flap")):
        pruned, report = minilib.prune(copy.deepcopy(model), data, 0.5, method, compensation="bias",
                                       allocation=allocation, progress=False)
        folder = tmp_path / f"{allocation}"
        pruned.save_pretrained(folder)
        back = surgery.load_pruned(folder, ZOO[name][0]).eval()
        assert surgery.ffn_sizes(back) == report.neurons_after
        torch.testing.assert_close(outputs(back, data[0]), outputs(pruned, data[0]), rtol=1e-5, atol=1e-6)
        if allocation == "uniform" and not getattr(pruned.config, "ffn_down_bias", False):  # from_pretrained
            again = ZOO[name][0].from_pretrained(folder).eval()
            torch.testing.assert_close(outputs(again, data[0]), outputs(pruned, data[0]), rtol=1e-5, atol=1e-6)
    assert report.compensation["mode"] == "bias" and len(report.compensation["layers"]) == len(report.kept)


@pytest.mark.parametrize("method, compensation, allocation, message", [
    ("wanda", "merge", None, "merge folds removed neurons into their cluster"),
    ("mi-mds", "least-squares", "global", "allocation global ranks scores"),
    ("wanda", None, "redundancy", "allocation redundancy reads a similarity map"),
    ("mask-tuning", "bias", None, "refits its kept weights itself"),
    ("wanda", "refit", None, "unknown compensation 'refit'"),
])
def test_undefined_combinations_fail_before_any_work(method, compensation, allocation, message):
    with pytest.raises(ValueError, match=message):
        check_plan(method, compensation, allocation)
    with pytest.raises(ValueError, match=message):  # minilib.prune refuses before reading the calibration data
        minilib.prune(build("llama"), object(), 0.5, method, compensation=compensation, allocation=allocation)


def test_methods_keep_their_own_compensation_and_allocation():
    assert check_plan("flap")[1:] == ("bias", "global")
    assert check_plan("mi-mds")[1:] == ("none", "uniform")
    assert check_plan("lsq-greedy", "none")[1:] == ("none", "uniform")


def test_global_budget_standardises_scores_and_keeps_the_floor():
    scores = [np.arange(10.0), 1000 + 100 * np.arange(10.0)]  # the scale differs, the spread does not
    assert al.global_counts(scores, 0.5) == [5, 5]
    skewed = [np.r_[np.zeros(8), 10.0, 10.0], np.arange(10.0)]  # two outliers in layer 0 take the top z
    counts = al.global_counts(skewed, 0.5, floor=0.5)
    assert sum(counts) == 10 and min(counts) >= 2 and counts != [5, 5]
    assert min(al.budget([np.ones(10), np.zeros(10)], 0.5, floor=0.0)) == 1


def test_uniqueness_reads_the_share_of_entropy_no_other_neuron_carries():
    S = np.array([[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 1.0]])  # 0 and 1 identical, 2 alone
    assert np.allclose(al.uniqueness(S), [0.0, 0.0, 1.0])
    assert np.allclose(al.uniqueness(S, alive=np.array([True, True, False])), [0.0, 0.0, 0.0])


def test_redundancy_budget_takes_more_from_the_redundant_layer():
    model, data = build("llama"), batches("llama", n=6)
    state = Calibrated(model, data, minilib.methods.Settings(mi_batch=16, mds_seeds=1, mi_tol=None))
    with torch.no_grad():  # block 0: every neuron a copy of neuron 0
        block = family_of(model).blocks(model)[0]
        block.mlp.gate_proj.weight[:] = block.mlp.gate_proj.weight[0]
        block.mlp.up_proj.weight[:] = block.mlp.up_proj.weight[0]
    counts = layer_counts(state, "mi-mds", "redundancy", 0.5)
    assert sum(counts) == sum(al.uniform_counts(state.sizes, 0.5)) and counts[0] == min(counts)


def test_greedy_elimination_removes_a_duplicate_first():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((500, 6))
    a[:, 4] = a[:, 1]  # neuron 4 duplicates neuron 1: the refit loses nothing when either goes
    W = torch.as_tensor(rng.standard_normal((3, 6)))
    kept = cp.greedy_elimination(W, _stats(a, a), 5, ridge=1e-9)
    assert len(kept) == 5 and (1 not in kept or 4 not in kept)


def test_lsq_greedy_and_flap_run_through_the_api_and_are_deterministic():
    data = batches("qwen2", n=6)
    for method in ("lsq-greedy", "flap"):
        first, report = minilib.prune(build("qwen2"), data, 0.5, method, progress=False)
        second, _ = minilib.prune(build("qwen2"), data, 0.5, method, progress=False)
        assert report.compensation["mode"] == METHODS[method].compensation
        assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_merge_and_the_redundancy_budget_run_through_the_api_for_an_mi_method():
    data = batches("llama", n=6)
    pruned, report = minilib.prune(build("llama"), data, 0.5, "mi-mds", compensation="merge", allocation="redundancy",
                                   progress=False, mds_seeds=2, mi_batch=16)
    assert report.compensation["mode"] == "merge" and report.allocation == "redundancy"
    assert sum(report.neurons_after) == sum(round(0.5 * n) for n in report.neurons_before)
    assert {f["mode"] for f in report.compensation["layers"]} <= {"merge", "none"}


@pytest.mark.parametrize("name, first_in", [("bert-classifier", False), ("llama", True)])
def test_the_fit_leaves_an_encoders_first_token_out_by_default_and_keeps_a_decoders(name, first_in):
    model, data = build(name), batches(name, n=2)
    tokens = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in data)
    firsts = sum(len(b["input_ids"]) for b in data)  # one first token per sequence

    def counted(**options) -> int:
        stats = cp.collect_stats(model, data, [0], **options)[0]
        return stats.n_fit + stats.n_held

    assert counted() == counted(skip_first=not first_in) == tokens - (0 if first_in else firsts)
    assert counted(skip_first=first_in) != counted()
    assert cp.Compensation("bias").resolved(family_of(model)).skip_first is (not first_in)
