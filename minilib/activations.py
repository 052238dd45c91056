"""Capture the FFN intermediate activations of a BERT encoder (the neurons the paper prunes, §3.3.1).

Each BERT layer's FFN is ``output.dense(GELU(intermediate.dense(x)))``; the neurons are
the post-GELU outputs of ``intermediate`` (512 per layer in BERT-tiny). A neuron has a
value per token, so one "sample" of it needs a per-sentence reduction (method notes,
decision 1), a named choice here:

* ``"mean"`` (default): the mean over the sentence's non-padding tokens;
* ``"cls"``: the value at the ``[CLS]`` token;
* ``"tokens"``: every non-padding token is a sample of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

Reduction = Literal["mean", "cls", "tokens"]
REDUCTIONS: tuple[str, ...] = ("mean", "cls", "tokens")

__all__ = ["encoder_layers", "ffn_layers", "reduce_tokens", "capture_ffn_activations"]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder layers of a BERT model (``BertModel`` or ``BertFor*``), each with its FFN."""
    encoder = getattr(getattr(model, "base_model", model), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None or not all(hasattr(layer, "intermediate") for layer in layers):
        raise ValueError(
            f"{type(model).__name__} has no BERT-style encoder.layer[i].intermediate; "
            "pass a transformers BertModel or BertFor* model"
        )
    return layers


def ffn_layers(model: nn.Module) -> list[nn.Module]:
    """The ``intermediate`` module (dense + GELU) of every encoder layer of a BERT model."""
    return [layer.intermediate for layer in encoder_layers(model)]


def reduce_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Turn per-token activations (B, T, D) into samples: (B, D), or (non-padding tokens, D)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "cls":
        return hidden[:, 0]
    if reduction == "tokens":
        return hidden[attention_mask.bool()]
    mask = attention_mask.to(hidden.dtype)
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)


@torch.no_grad()
def capture_ffn_activations(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    reduction: Reduction = "mean",
    progress: bool = False,
) -> list[torch.Tensor]:
    """Run ``model`` on tokenised ``batches`` and return each layer's FFN activations.

    Parameters
    ----------
    model : a BERT model (``BertModel`` or ``BertFor*``); it is run in eval mode
        and left in the mode it was in.
    batches : mappings with ``input_ids`` and ``attention_mask`` (and optionally
        ``token_type_ids``), as a tokenizer or DataLoader gives them.
    reduction : ``"mean"``, ``"cls"`` or ``"tokens"`` (see the module docstring).

    Returns
    -------
    One float32 tensor per layer, (samples, neurons). The forward hooks are removed
    before returning, also when the model raises.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    modules = ffn_layers(model)
    captured: list[list[torch.Tensor]] = [[] for _ in modules]
    mask: list[torch.Tensor] = []

    def hook(index: int):
        def fn(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            captured[index].append(reduce_tokens(output.float(), mask[0], reduction))

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches, desc="activations", unit="batch", disable=not progress):
            if "input_ids" not in batch or "attention_mask" not in batch:
                raise ValueError("each batch needs input_ids and attention_mask (tokenise with padding)")
            mask[:] = [batch["attention_mask"]]
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not captured[0]:
        raise ValueError("no batches were given; pass at least one tokenised batch")
    return [torch.cat(chunks) for chunks in captured]
