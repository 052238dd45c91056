"""MI-PRUN: block MI on synthetic chains, the DPI bound, the search against brute force; peers; block removal."""

import itertools

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from minilib.methods import blocks


def _chain(n_blocks: int = 5, identity: int | None = 2, n: int = 96, d: int = 6, noise: float = 0.6, seed: int = 0):
    """Residual-stream-like states: each block mixes and adds noise (loses information), one is the identity."""
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(n, d, generator=g, dtype=torch.float64)]
    for b in range(n_blocks):
        if b == identity:
            x.append(x[-1].clone())
        else:
            w = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
            x.append(x[-1] + torch.tanh(x[-1] @ w) + noise * torch.randn(n, d, generator=g, dtype=torch.float64))
    return torch.stack(x)


def test_identity_block_is_removed_first():
    mi = blocks.BlockMI(_chain(), batch=48)
    assert int(np.argmax(mi.block)) == 2
    assert mi.cost([2]) == pytest.approx(0.0, abs=1e-9)  # I(X;X) is the ceiling: nothing is lost
    assert blocks.fast_block_select(mi, 1) == [2]
    assert blocks.best_by_dynamic_programming(mi, 1) == [2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dpi_bound_holds_on_a_noisy_chain(seed):
    mi = blocks.BlockMI(_chain(6, identity=None, seed=seed), batch=96)
    for i, j in itertools.combinations(range(7), 2):
        assert mi.segment(i, j) <= mi.dpi_bound(i, j) + 1e-9
        assert mi.cost(range(i, j), bound=True) <= mi.cost(range(i, j)) + 1e-9


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_dynamic_programming_is_the_brute_force_optimum_and_search_is_no_worse_than_its_starts(k):
    mi = blocks.BlockMI(_chain(7, identity=4, seed=3), batch=96)
    brute = min(itertools.combinations(range(7), k), key=mi.cost)
    exact = blocks.best_by_dynamic_programming(mi, k)
    assert mi.cost(exact) == pytest.approx(mi.cost(brute), abs=1e-12)
    found = blocks.fast_block_select(mi, k)
    assert len(found) == k == len(set(found))
    top = sorted(np.argsort(-mi.block)[:k].tolist())
    best_run = min(mi.cost(range(s, s + k)) for s in range(7 - k + 1))
    assert mi.cost(exact) - 1e-12 <= mi.cost(found) <= min(mi.cost(top), best_run) + 1e-12


def test_segments_and_errors():
    assert blocks.segments([5, 1, 2, 7, 6]) == [(1, 3), (5, 8)]
    mi = blocks.BlockMI(_chain(), batch=48)
    with pytest.raises(ValueError, match="cannot remove 5 of 5"):
        blocks.fast_block_select(mi, 5)
    with pytest.raises(ValueError, match="NaN"):
        blocks.BlockMI(torch.full((3, 8, 2), float("nan")))


def test_cosine_peers_see_the_identity_block():
    states = _chain()
    bi = blocks.block_influence(states)
    assert bi[2] == pytest.approx(0.0, abs=1e-12) and (np.delete(bi, 2) > 0.01).all()
    ang = blocks.angular_distance(states, 1)
    assert int(np.argmin(ang)) == 2 and ang[2] == pytest.approx(0.0, abs=1e-6)
    assert len(blocks.angular_distance(states, 3)) == 3  # starts 0, 1, 2 for runs of 3 in 5 blocks


def test_hidden_states_are_the_residual_stream(tiny_llama, lm_windows):
    s = blocks.hidden_states(tiny_llama, lm_windows, n_tokens=12, seed=0)
    assert s.shape == (4, 12, 16)
    assert torch.equal(s, blocks.hidden_states(tiny_llama, lm_windows, n_tokens=12, seed=0))
    ref = tiny_llama(input_ids=lm_windows, output_hidden_states=True).hidden_states
    # every sampled row of block 1's input is a row (position ≥ 1) of transformers' own hidden states
    rows = ref[1][:, 1:].reshape(-1, 16).float()
    assert all(torch.isclose(rows, r).all(1).any() for r in s[1])
    with pytest.raises(ValueError, match="exceeds"):
        blocks.hidden_states(tiny_llama, lm_windows, n_tokens=1000)


def test_block_removal_is_exact_and_reloads(tiny_llama, lm_windows, tmp_path):
    pruned = blocks.remove_blocks(tiny_llama, [1])
    assert pruned.config.num_hidden_layers == 2 and tiny_llama.config.num_hidden_layers == 3
    skip = tiny_llama.model.layers[1].register_forward_hook(lambda _m, args, _o: args[0])  # block 1 = identity
    try:
        expected = tiny_llama(input_ids=lm_windows).logits
    finally:
        skip.remove()
    assert torch.allclose(pruned(input_ids=lm_windows).logits, expected, atol=1e-12)
    pruned.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    assert again.config.num_hidden_layers == 2
    assert torch.allclose(again(input_ids=lm_windows).logits, pruned(input_ids=lm_windows).logits, atol=1e-12)
    with pytest.raises(ValueError, match="leaving at least one"):
        blocks.remove_blocks(tiny_llama, [0, 1, 2])
