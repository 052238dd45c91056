"""The one hook mechanism of every method: a forward pre-hook on each block's ``down`` projection.

The input of ``down`` is the vector of FFN neurons ``a`` (:mod:`minilib.models.families`), so:

* :func:`capture_activations` records ``a`` per block and turns tokens into samples (the paper's
  per-sentence reduction, §3.3.1, is a choice: ``"mean"`` over the non-padding tokens, the
  ``"cls"`` token, or every ``"tokens"``; a decoder's samples are its tokens, position 0 excluded);
* :func:`gradient_pass` multiplies ``a`` by a mask ``m`` of ones, one row per sample, so that
  ``∂L/∂m_j`` of sample ``i`` is ``Σ_tokens a_j ∂L_i/∂a_j`` (TextPruner's and Kwon et al.'s
  quantity) and ``∂L/∂a`` gives the per-token terms HFPrune needs.

Tensors made here live on the model's device; the weights get no gradients and are left unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from minilib.models.families import Family, family_of, model_inputs, token_grid

Batch = Mapping[str, torch.Tensor]

__all__ = ["REDUCTIONS", "frozen", "capture_activations", "gradient_pass", "check_finite"]

REDUCTIONS = ("mean", "cls", "tokens")


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout) and no weight gradients inside the block; both restored afterwards."""
    was_training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)


def check_finite(x: torch.Tensor, what: str, layer: int) -> None:
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"block {layer}: {what} contain NaN or inf (a float16 overflow?); load the model "
                                 "in float32 or bfloat16")


@torch.no_grad()
def capture_activations(model: nn.Module, batches: Iterable[Batch], reduction: str | None = None,
                        family: Family | None = None, progress: bool = False) -> list[torch.Tensor]:
    """Each block's FFN activations on ``batches``: one float32 CPU tensor (samples, neurons) per block.

    ``reduction`` defaults to ``"mean"`` for encoders and ``"tokens"`` for decoders. The model runs in
    eval mode and is left in its mode; the hooks are removed also when the model raises.
    """
    family = family or family_of(model)
    reduction = reduction or ("tokens" if family.causal else "mean")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    blocks = family.blocks(model)
    captured: list[list[torch.Tensor]] = [[] for _ in blocks]
    current: list[Batch] = []

    def hook(index: int):
        def fn(_module: nn.Module, args: tuple) -> None:
            a = token_grid(args[0], current[0]["input_ids"].shape).float()
            check_finite(a, "activations", index)
            captured[index].append(family.samples(a.cpu(), current[0], reduction))
        return fn

    handles = [family.down(b).register_forward_pre_hook(hook(i)) for i, b in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches, desc="activations", unit="batch", disable=not progress):
            if "input_ids" not in batch:
                raise ValueError("each batch needs input_ids (tokenise the calibration texts first)")
            current[:] = [batch]
            model(**model_inputs(model, batch))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not captured[0]:
        raise ValueError("no batches were given; pass at least one tokenised batch")
    return [torch.cat(chunks) for chunks in captured]


Accumulate = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], None]


def gradient_pass(model: nn.Module, batches: Iterable[Batch], objective: Callable[[nn.Module, Batch], torch.Tensor],
                  accumulate: Accumulate, family: Family | None = None, desc: str = "gradient scores",
                  progress: bool = False) -> None:
    """Forward/backward over ``batches``; calls ``accumulate(block, a, ∂L/∂a, ∂L/∂m, attention_mask)``.

    ``objective(model, batch)`` is the scalar ``L`` (a task loss, an entropy…). ``a`` and ``∂L/∂a``
    are (batch, tokens, neurons), ``∂L/∂m`` is (batch, neurons); the mask is ``None`` when the batch
    has no padding mask.
    """
    family = family or family_of(model)
    blocks = family.blocks(model)
    state: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    current: list[Batch] = []

    def hook(index: int):
        def fn(_m: nn.Module, args: tuple) -> tuple:
            a = token_grid(args[0], current[0]["input_ids"].shape)
            mask = torch.ones(a.shape[0], 1, a.shape[-1], dtype=a.dtype, device=a.device, requires_grad=True)
            out = a * mask  # equal to a; its gradient is ∂L/∂a, the mask's is Σ_tokens a ∂L/∂a
            state[index] = (a.detach(), out, mask)
            return (out.view_as(args[0]),)
        return fn

    with frozen(model):
        handles = [family.down(b).register_forward_pre_hook(hook(i)) for i, b in enumerate(blocks)]
        try:
            for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress):
                current[:] = [batch]
                with torch.enable_grad():
                    loss = objective(model, batch)
                    layers = sorted(state)
                    grads = torch.autograd.grad(loss, [state[i][1] for i in layers] + [state[i][2] for i in layers])
                mask = batch.get("attention_mask")
                for n, i in enumerate(layers):
                    a, ga, gm = state[i][0], grads[n], grads[len(layers) + n][:, 0]
                    check_finite(ga, "gradients", i)
                    accumulate(i, a.cpu(), ga.cpu(), gm.cpu(), None if mask is None else mask.cpu())
                state.clear()
        finally:
            for h in handles:
                h.remove()
