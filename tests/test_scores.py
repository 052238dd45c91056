"""Importance scores of every peer: hand-checked magnitudes, gradients against finite differences, clear errors."""

import copy

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from minilib.methods import scores as sc
from minilib.models import surgery
from minilib.models.families import family_of
from minilib.models.hooks import frozen


def _model(num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=10, max_position_embeddings=16, num_labels=num_labels,
                        hidden_dropout_prob=0.3)  # dropout must be off while scoring
    return BertForSequenceClassification(config).double().train()  # float64: finite differences resolve


def _batches(n: int = 3, regression: bool = False):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        mask = torch.ones(4, 7, dtype=torch.long)
        mask[0, 5:] = 0
        labels = torch.rand(4, generator=g, dtype=torch.float64) * 5 if regression else torch.randint(0, 2, (4,), generator=g)
        out.append({"input_ids": torch.randint(0, 40, (4, 7), generator=g), "attention_mask": mask,
                    "labels": labels})
    return out


def _scaled_loss(model, batches, layer, neuron, scale, kind):
    """The summed loss with one neuron's activation multiplied by ``scale``."""
    def hook(_m, _i, out):
        out = out.clone()
        out[..., neuron] *= scale
        return out
    h = model.bert.encoder.layer[layer].intermediate.register_forward_hook(hook)
    model.eval()
    loss = sc.objective(kind, family_of(model))
    with torch.no_grad():
        total = sum(loss(model, b).item() for b in batches)
    h.remove()
    return total


def test_keep_top_and_random():
    kept = sc.keep_top([np.array([0.1, 0.9, 0.5, 0.9]), np.array([3.0, 1.0])], [2, 1])
    assert [k.tolist() for k in kept] == [[1, 3], [0]]
    a, b = sc.random_scores([5, 5], seed=2), sc.random_scores([5, 5], seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="layer 1: keep must be between 1 and 2"):
        sc.keep_top([np.ones(3), np.ones(2)], 3)


def test_magnitude_is_the_l1_norm_of_the_input_row():
    model = _model()
    w = model.bert.encoder.layer[1].intermediate.dense.weight
    with torch.no_grad():
        w[4] = 0.0
        w[7] = 1.0
    scores = sc.magnitude_scores(model)
    assert scores[1][4] == 0 and scores[1][7] == pytest.approx(16.0) and np.argmax(scores[1]) == 7


@pytest.mark.parametrize("layer, neuron", [(0, 3), (1, 6)])
def test_mask_gradients_match_finite_differences(layer, neuron):
    model, batches = _model(), _batches()
    eps = 1e-3
    plus = _scaled_loss(model, batches, layer, neuron, 1 + eps, "supervised")
    minus = _scaled_loss(model, batches, layer, neuron, 1 - eps, "supervised")
    numeric = (plus - minus) / (2 * eps)  # ∂L/∂m_j summed over batches
    per_batch = []
    for b in batches:
        per_batch.append((_scaled_loss(model, [b], layer, neuron, 1 + eps, "supervised")
                          - _scaled_loss(model, [b], layer, neuron, 1 - eps, "supervised")) / (2 * eps))
    model.train()
    taylor = sc.taylor_scores(model, batches)
    assert taylor[layer][neuron] == pytest.approx(sum(abs(g) for g in per_batch), rel=1e-2, abs=1e-6)
    assert abs(numeric) <= taylor[layer][neuron] + 1e-6
    assert model.training and all(p.requires_grad for p in model.parameters())  # state restored


def test_scores_ignore_a_neuron_without_output_weights():
    model, batches = _model(), _batches()
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.weight[:, 2] = 0.0  # neuron 2 of layer 0 cannot matter
    for scores in (sc.taylor_scores(model, batches), sc.taylor_scores(model, batches, "self"),
                   sc.fisher_scores(model, batches), sc.token_taylor_scores(model, batches, "entropy")):
        assert scores[0][2] == 0 and (np.delete(scores[0], 2) > 0).all()


def test_fisher_sums_squared_per_sample_gradients():
    model, batches = _model(), _batches(n=1)
    eps, layer, neuron = 1e-3, 1, 4
    single = [{k: v[i:i + 1] for k, v in batches[0].items()} for i in range(4)]
    grads = [(_scaled_loss(model, [s], layer, neuron, 1 + eps, "supervised")
              - _scaled_loss(model, [s], layer, neuron, 1 - eps, "supervised")) / (2 * eps) for s in single]
    assert sc.fisher_scores(model, batches)[layer][neuron] == pytest.approx(sum(g * g for g in grads), rel=2e-2)


def _one_by_one(batches, labels: bool = True):
    """Every sentence of padded batches alone, trimmed to its real tokens."""
    out = []
    for b in batches:
        for i in range(b["input_ids"].shape[0]):
            n = int(b["attention_mask"][i].sum())
            one = {"input_ids": b["input_ids"][i:i + 1, :n], "attention_mask": b["attention_mask"][i:i + 1, :n]}
            out.append({**one, "labels": b["labels"][i:i + 1]} if labels else one)
    return out


@pytest.mark.parametrize("kind", ["entropy", "supervised"])
def test_token_taylor_of_a_padded_batch_is_that_of_its_sentences_alone(kind):
    """Padding changes nothing (the score sums over samples): a padded position must contribute 0."""
    model, batches = _model(), _batches()
    padded = sc.token_taylor_scores(model, batches, kind)
    alone = sc.token_taylor_scores(model, _one_by_one(batches), kind)
    assert all(np.allclose(x, y, rtol=1e-9, atol=0) for x, y in zip(padded, alone))
    assert all(np.array_equal(x, y) for x, y in zip(padded, sc.token_taylor_scores(model, batches, kind)))


def test_token_taylor_on_a_right_padded_decoder_batch(tiny_llama):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 40, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:], mask[2, 4:] = 0, 0
    batches = [{"input_ids": ids, "attention_mask": mask}]
    padded = sc.token_taylor_scores(tiny_llama, batches, "entropy")
    alone = sc.token_taylor_scores(tiny_llama, _one_by_one(batches, labels=False), "entropy")
    assert all(np.allclose(x, y, rtol=1e-9, atol=0) for x, y in zip(padded, alone))
    unmasked = sc.token_taylor_scores(tiny_llama, [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}], "entropy")
    assert not all(np.allclose(x, y, rtol=1e-6) for x, y in zip(padded, unmasked))  # the padded tokens are real ids


def test_label_free_scores_refuse_regression():
    model, batches = _model(num_labels=1), _batches(regression=True)
    assert sc.taylor_scores(model, batches)[0].shape == (10,)  # supervised regression works
    for fn in (lambda: sc.taylor_scores(model, batches, "self"), lambda: sc.token_taylor_scores(model, batches, "entropy")):
        with pytest.raises(ValueError, match="needs a class distribution; a regression head"):
            fn()
    with pytest.raises(ValueError, match="labels must be 'supervised' or 'self'"):
        sc.taylor_scores(model, batches, "teacher")


def test_fisher_matrix_diagonal_is_the_fisher_score():
    model, batches = _model(), _batches()
    F = sc.fisher_matrices(model, batches)
    for layer, diag in enumerate(sc.fisher_scores(model, batches)):
        assert np.allclose(np.diag(F[layer]), diag) and np.allclose(F[layer], F[layer].T)


def test_rearrangement_sees_what_the_diagonal_cannot():
    # neurons 0 and 1 cancel each other (g_0 = -g_1): pruning one of them alone costs a lot, pruning
    # both costs nothing. From a keep-set that pruned 1 and the cheap 2, one swap (2 back, 0 out) fixes it.
    g = np.random.default_rng(0).normal(size=(50, 6)) * np.array([1.0, 1.0, 0.1, 0.3, 0.6, 0.9])
    g[:, 1] = -g[:, 0]
    F = g.T @ g
    loss = lambda p: np.ones(len(p)) @ F[np.ix_(p, p)] @ np.ones(len(p))  # noqa: E731
    kept = sc.rearrange_mask(np.array([0, 3, 4, 5]), F)
    pruned = np.setdiff1d(np.arange(6), kept)
    assert len(kept) == 4 and set(pruned) == {0, 1} and loss(pruned) < 1e-9 < loss(np.array([1, 2]))
    for start in ([0, 1, 2, 3], [2, 3, 4, 5], [1, 3, 4, 5]):  # never worse than where it starts
        out = np.setdiff1d(np.arange(6), sc.rearrange_mask(np.array(start), F))
        assert loss(out) <= loss(np.setdiff1d(np.arange(6), start)) + 1e-9


def test_least_squares_tuning_recovers_a_rescaled_duplicate():
    model, batches = _model(), _batches()
    model.eval()
    inter = model.bert.encoder.layer[0].intermediate.dense
    out = model.bert.encoder.layer[0].output.dense
    with torch.no_grad():  # neuron 1 becomes a copy of neuron 0; pruning 1 loses its contribution...
        inter.weight[1], inter.bias[1] = inter.weight[0], inter.bias[0]
        out.weight[:, 1] = 0.5 * out.weight[:, 0]
    keep = [np.delete(np.arange(10), 1), np.arange(10)]
    inputs = {k: batches[0][k] for k in ("input_ids", "attention_mask")}
    dense_hidden = model.bert(**inputs).last_hidden_state
    pruned = surgery.prune_ffn(copy.deepcopy(model), keep)
    before = (pruned.bert(**inputs).last_hidden_state - dense_hidden).abs().max()
    sc.least_squares_tuning(model, pruned, batches, ridge=1e-10)
    after = (pruned.bert(**inputs).last_hidden_state - dense_hidden).abs().max()
    # ...which tuning gives back by scaling neuron 0 by 1.5: the pruned model is the dense one again
    assert before > 1e-3 and after < 1e-6
    assert torch.allclose(pruned.bert.encoder.layer[0].output.dense.weight[:, 0], 1.5 * out.weight[:, 0], atol=1e-6)


def test_representative_ranking_ranks_hull_vertices_above_interior_and_duplicates():
    theta = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ring = np.c_[np.cos(theta), np.sin(theta)]
    points = np.vstack([ring, [[0.0, 0.0], [0.2, 0.1], [-0.1, 0.3]], ring[:1]])  # 3 inside, vertex 0 twice
    r2 = sc.representative_ranking(points)
    unique_vertices = r2[1:12]
    assert r2[12:15].max() < unique_vertices.min()  # the interior is expressed by the ring
    assert max(r2[0], r2[15]) < unique_vertices.min()  # a duplicated vertex shares its weight
    with pytest.raises(ValueError, match="coincide"):
        sc.representative_ranking(np.ones((4, 3)))
    with pytest.raises(ValueError, match="finite"):
        sc.representative_ranking(np.array([[0.0, np.nan], [1.0, 1.0]]))


def test_kcm_keeps_an_active_unique_neuron_and_is_label_free():
    model, batches = _model(), _batches()
    with torch.no_grad():  # neuron 3 of layer 0: always strongly active, output weights far from the rest
        model.bert.encoder.layer[0].intermediate.dense.bias[3] = 10.0
        model.bert.encoder.layer[0].output.dense.weight[:, 3] *= 50
    unlabeled = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    scores = sc.kcm_scores(model, unlabeled)
    assert [len(s) for s in scores] == [10, 10]
    assert all(((s > 0) & (s <= 1)).all() for s in scores)
    assert np.argmax(scores[0]) == 3 and scores[0][3] == 1.0
    assert all(np.array_equal(a, b) for a, b in zip(scores, sc.kcm_scores(model, unlabeled)))


def test_gradient_scores_leave_the_model_as_they_found_it():
    model = _model()
    model.train()
    model.classifier.requires_grad_(False)  # a caller's own choice, restored as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    sc.fisher_scores(model, _batches())
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError, match="boom"), frozen(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert model.training and [p.requires_grad for p in model.parameters()] == flags


# --- the same scores on a decoder (a tiny random Llama, float64) -------------------------------------------------

def _activation_gradients(model, window, kind):
    """Per block, the activations and ∂L/∂a of one batch, through the shared gradient pass."""
    from minilib.models.hooks import gradient_pass

    acts, grads = {}, {}

    def keep(layer, a, ga, _gm, _mask):
        acts[layer], grads[layer] = a, ga
    gradient_pass(model, [{"input_ids": window}], sc.objective(kind, family_of(model)), keep)
    return [acts[i] for i in sorted(acts)], [grads[i] for i in sorted(grads)]


def _objective_with_bump(model, window, kind, layer, t, j, eps):
    """The objective after adding ``eps`` to activation (t, j) of ``layer``'s MLP."""
    def bump(_m, args):
        a = args[0].clone()
        a[0, t, j] += eps
        return (a,)
    h = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(bump)
    try:
        with torch.no_grad():
            return sc.objective(kind, family_of(model))(model, {"input_ids": window}).item()
    finally:
        h.remove()


@pytest.mark.parametrize("kind", ["entropy", "supervised"])  # "self" has kinks where the argmax flips
def test_decoder_activation_gradients_match_finite_differences(tiny_llama, lm_windows, kind):
    window = lm_windows[:1]
    acts, grads = _activation_gradients(tiny_llama, window, kind)
    assert [a.shape for a in acts] == [(1, 10, 12)] * 3 and not any(p.grad is not None for p in tiny_llama.parameters())
    eps = 1e-3  # Llama's RMSNorm computes in float32 even in a float64 model: a tiny step drowns in round-off
    for layer, t, j in [(0, 0, 3), (1, 4, 7), (2, 8, 0), (0, 9, 11)]:
        fd = (_objective_with_bump(tiny_llama, window, kind, layer, t, j, eps)
              - _objective_with_bump(tiny_llama, window, kind, layer, t, j, -eps)) / (2 * eps)
        assert grads[layer][0, t, j].item() == pytest.approx(fd, rel=1e-3, abs=1e-6)


def test_hfprune_on_a_decoder_sums_abs_products_over_windows(tiny_llama, lm_windows):
    windows = [{"input_ids": w} for w in lm_windows.split(1)]
    scores = sc.token_taylor_scores(tiny_llama, windows, "entropy")
    expected = np.zeros((3, 12))
    for w in lm_windows.split(1):
        acts, grads = _activation_gradients(tiny_llama, w, "entropy")
        expected += np.stack([(a * g).abs().sum((0, 1)).numpy() for a, g in zip(acts, grads)])
    assert np.allclose(np.stack(scores), expected, rtol=1e-12)
    assert not np.allclose(scores, sc.token_taylor_scores(tiny_llama, windows, "supervised"))


def test_wanda_is_column_norm_times_activation_norm(tiny_llama, lm_windows):
    acts, _ = _activation_gradients(tiny_llama, lm_windows, "supervised")
    wanda = sc.wanda_scores(tiny_llama, [{"input_ids": lm_windows}])
    for b, a, s in zip(tiny_llama.model.layers, acts, wanda):
        ref = b.mlp.down_proj.weight.abs().sum(0) * a.pow(2).sum((0, 1)).sqrt()
        assert np.allclose(s, ref.detach().numpy(), rtol=1e-10)


def test_decoder_magnitude_counts_every_weight_of_the_neuron(tiny_llama):
    m = tiny_llama.model.layers[2].mlp
    expected = m.gate_proj.weight[5].abs().sum() + m.up_proj.weight[5].abs().sum() + m.down_proj.weight[:, 5].abs().sum()
    assert sc.magnitude_scores(tiny_llama)[2][5] == pytest.approx(expected.item())


def test_keep_fraction_rounds_and_refuses_nothing_left():
    assert sc.keep_fraction(1536, 0.7) == 1075 and sc.keep_fraction(12, 1.0) == 12
    with pytest.raises(ValueError, match="rounds to 0"):
        sc.keep_fraction(12, 0.01)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        sc.keep_fraction(12, 1.5)
    with pytest.raises(ValueError, match="NaN or inf"):
        sc.keep_top([np.full(12, np.inf)], 5)
