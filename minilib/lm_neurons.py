"""HFPrune (seed 002) and its peers: scores and surgery for the MLP neurons of a Llama-layout LM.

Neuron ``j`` of block ℓ is the j-th input of ``down_proj``: ``a_j = silu(gate_j·x) · (up_j·x)``.
Scores (higher = keep), accumulated in float64 over the calibration windows:

* ``hfprune``: ``Σ_windows Σ_tokens |a_j · ∂H/∂a_j|``, with ``H = Σ_t H(p(·|x_{≤t}))`` the entropy of
  the next-token distributions, label-free (seed 002);
* ``taylor-ce``: the same first-order Taylor score with the next-token cross-entropy instead of H
  (LLM-Pruner's first-order criterion; keeping |·| per token, as HFPrune does, isolates the
  criterion: LLM-Pruner's vector-wise form puts |·| outside the token sum);
* ``magnitude``: ``‖gate_j‖₁ + ‖up_j‖₁ + ‖down_{:,j}‖₁``, every weight of the neuron;
* ``wanda``: Wanda's ``|W|·‖X‖`` for the neuron's ``down_proj`` column, ``‖down_{:,j}‖₁ · ‖a_j‖₂``;
* ``random``: uniform.

Gradients reach the activations through a multiplicative ones-mask on ``down_proj``'s input,
so no weight needs a gradient and none is changed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import peers
from .lm import decoder_layers
from .surgery import check_keep, slice_linear

Scores = list[np.ndarray]
METHODS = ("hfprune", "taylor-ce", "magnitude", "wanda", "random")

__all__ = ["METHODS", "activation_gradients", "taylor_scores", "magnitude_scores", "wanda_scores",
           "neuron_scores", "keep_uniform", "prune_mlp", "mlp_sizes"]


def mlp_sizes(model: nn.Module) -> list[int]:
    return [b.mlp.down_proj.in_features for b in decoder_layers(model)]


def _objective(criterion: str, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    if criterion == "entropy":
        return -(logp.exp() * logp).sum()
    if criterion == "ce":
        return -logp.gather(-1, ids[:, 1:, None]).sum()
    raise ValueError(f"unknown criterion {criterion!r}; use 'entropy' (HFPrune) or 'ce'")


def activation_gradients(model: nn.Module, window: torch.Tensor, criterion: str = "entropy"
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per block, the MLP activations ``a`` (batch, T, m) and ``∂objective/∂a`` for one batch of windows.

    The objective sums the criterion over the first T−1 positions (those with a next token).
    """
    layers = decoder_layers(model)
    acts: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple) -> tuple:
        a = args[0]
        out = a * torch.ones(a.shape[-1], dtype=a.dtype, requires_grad=True)  # equal to a, but in the graph
        acts.append(a.detach())
        outs.append(out)
        return (out,)

    with peers.frozen(model):
        handles = [b.mlp.down_proj.register_forward_pre_hook(hook) for b in layers]
        try:
            with torch.enable_grad():
                objective = _objective(criterion, model(input_ids=window).logits, window)
                grads = torch.autograd.grad(objective, outs)
        finally:
            for h in handles:
                h.remove()
    return acts, list(grads)


def taylor_scores(model: nn.Module, windows: torch.Tensor, criterion: str = "entropy", batch_size: int = 1,
                  progress: bool = False) -> Scores:
    """``Σ_windows Σ_tokens |a_j ∂L/∂a_j|`` per block; ``criterion="entropy"`` is HFPrune."""
    total = [torch.zeros(n, dtype=torch.float64) for n in mlp_sizes(model)]
    for chunk in tqdm(windows.split(batch_size), desc=f"{criterion} Taylor", unit="batch", disable=not progress):
        acts, grads = activation_gradients(model, chunk, criterion)
        for t, a, g in zip(total, acts, grads):
            t += (a.double() * g.double()).abs().sum((0, 1))
    return [t.numpy() for t in total]


def magnitude_scores(model: nn.Module) -> Scores:
    return [(b.mlp.gate_proj.weight.abs().sum(1) + b.mlp.up_proj.weight.abs().sum(1)
             + b.mlp.down_proj.weight.abs().sum(0)).detach().double().numpy() for b in decoder_layers(model)]


@torch.inference_mode()
def wanda_scores(model: nn.Module, windows: torch.Tensor, batch_size: int = 1) -> Scores:
    layers = decoder_layers(model)
    sq = [torch.zeros(n, dtype=torch.float64) for n in mlp_sizes(model)]

    def hook(index: int):
        def fn(_m, args):
            sq[index] += args[0].double().pow(2).sum((0, 1))
        return fn

    handles = [b.mlp.down_proj.register_forward_pre_hook(hook(i)) for i, b in enumerate(layers)]
    try:
        for chunk in windows.split(batch_size):
            model(input_ids=chunk)
    finally:
        for h in handles:
            h.remove()
    return [(b.mlp.down_proj.weight.abs().sum(0).double() * s.sqrt()).numpy() for b, s in zip(layers, sq)]


def neuron_scores(method: str, model: nn.Module, windows: torch.Tensor, seed: int = 0, progress: bool = False) -> Scores:
    """The scores of one of :data:`METHODS` on the calibration ``windows``."""
    if method == "hfprune":
        return taylor_scores(model, windows, "entropy", progress=progress)
    if method == "taylor-ce":
        return taylor_scores(model, windows, "ce", progress=progress)
    if method == "magnitude":
        return magnitude_scores(model)
    if method == "wanda":
        return wanda_scores(model, windows)
    if method == "random":
        return peers.random_scores(mlp_sizes(model), seed)
    raise ValueError(f"unknown MLP pruning method {method!r}; use one of {METHODS}")


def keep_uniform(scores: Scores, ratio: float) -> list[np.ndarray]:
    """The highest-scoring ``round((1 − ratio)·m)`` neurons of every block (sorted indices)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    return peers.keep_top(scores, [max(1, round((1.0 - ratio) * len(s))) for s in scores])


def prune_mlp(model: nn.Module, keep: Sequence[Sequence[int]]) -> nn.Module:
    """A copy of ``model`` keeping only the given MLP neurons of every block (same count in each).

    Llama configs have one ``intermediate_size``, so ``from_pretrained`` can reload the result
    only with a uniform count; it is required here.
    """
    idx = check_keep(keep, mlp_sizes(model))
    if len({len(i) for i in idx}) != 1:
        raise ValueError("keep the same number of neurons in every block (uniform ratio): a Llama config has a "
                         "single intermediate_size, so a non-uniform model would not reload")
    pruned = copy.deepcopy(model)
    for b, i in zip(decoder_layers(pruned), idx):
        b.mlp.gate_proj = slice_linear(b.mlp.gate_proj, i, 0)
        b.mlp.up_proj = slice_linear(b.mlp.up_proj, i, 0)
        b.mlp.down_proj = slice_linear(b.mlp.down_proj, i, 1)
    pruned.config.intermediate_size = len(idx[0])
    return pruned
