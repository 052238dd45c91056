"""Model surgery: physically remove FFN neurons from a BERT encoder, and what that saves.

A BERT layer's FFN is ``output.dense(GELU(intermediate.dense(x)))``. Removing neuron ``j``
of a layer deletes row ``j`` of ``intermediate.dense`` (weight and bias) and column ``j`` of
``output.dense``; the output bias stays. This is exact: the pruned model computes what the
dense model computes with those neurons' activations set to zero (tests check both).

Layers may keep different numbers of neurons. A uniformly pruned model is an ordinary
``BertFor*`` with a smaller ``intermediate_size`` and reloads with ``from_pretrained``; a
non-uniform one records its sizes in ``config.ffn_sizes`` and reloads with
:func:`load_pruned` (which also reads uniform and dense folders).

Cost (method notes, decision 9) uses the per-layer MAC count of Kwon et al. (2022) at a
sequence length ``L`` (a task's mean dev length, :data:`MEAN_DEV_LENGTH`): per attention head
``3·L·d·d_h + 2·L²·d_h + L·d_h·d`` and per FFN neuron ``2·L·d``. Pruning only FFN neurons
leaves the attention untouched, so two ratios are reported: **FFN-relative FLOPs** (the kept
fraction of neurons) and **encoder-relative FLOPs** (MACs of the pruned encoder over the dense).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from .activations import encoder_layers, ffn_layers

# Mean dev-set length in word pieces, as used for BERT MACs by Kwon et al. (method notes, decision 9).
MEAN_DEV_LENGTH = {"sst2": 25.16, "stsb": 31.47, "mrpc": 53.24, "qqp": 30.55, "qnli": 50.97}

__all__ = ["MEAN_DEV_LENGTH", "ffn_sizes", "check_keep", "slice_linear", "prune_ffn", "load_pruned", "count_parameters",
           "encoder_macs", "relative_flops", "latency"]


def ffn_sizes(model: nn.Module) -> list[int]:
    """The number of FFN neurons in each layer."""
    return [m.dense.out_features for m in ffn_layers(model)]


def check_keep(keep: Sequence[Sequence[int]] | Mapping[int, Sequence[int]], sizes: list[int]) -> list[torch.Tensor]:
    """Validated keep-sets as sorted index tensors, one per layer (a mapping keeps all of unnamed layers)."""
    if isinstance(keep, Mapping):
        unknown = set(keep) - set(range(len(sizes)))
        if unknown:
            raise ValueError(f"keep names layers {sorted(unknown)}, but the model has layers 0..{len(sizes) - 1}")
        keep = [keep.get(i, range(n)) for i, n in enumerate(sizes)]
    if len(keep) != len(sizes):
        raise ValueError(f"keep has {len(keep)} entries but the model has {len(sizes)} layers; give one per layer")
    out = []
    for layer, (idx, n) in enumerate(zip(keep, sizes)):
        idx = torch.as_tensor(list(idx) if not isinstance(idx, torch.Tensor) else idx, dtype=torch.long).flatten()
        if idx.numel() == 0:
            raise ValueError(f"layer {layer}: keep at least one neuron (an empty FFN cannot be saved and reloaded)")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"layer {layer}: neuron indices must lie in 0..{n - 1}, got {idx.min()}..{idx.max()}")
        if idx.unique().numel() != idx.numel():
            raise ValueError(f"layer {layer}: keep lists a neuron twice; pass each kept neuron once")
        out.append(idx.sort().values)
    return out


def slice_linear(linear: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``idx`` along the weight's ``dim`` (0: outputs, 1: inputs)."""
    weight = linear.weight.detach().index_select(dim, idx).clone()
    bias = linear.bias.detach().clone() if linear.bias is not None else None
    if bias is not None and dim == 0:
        bias = bias[idx]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


@torch.no_grad()
def prune_ffn(model: PreTrainedModel, keep: Sequence[Sequence[int]] | Mapping[int, Sequence[int]]
              ) -> PreTrainedModel:
    """Remove every FFN neuron not in ``keep``, in place; returns the model.

    ``keep`` gives the kept neuron indices of each layer (a sequence with one entry per layer,
    or a mapping layer → indices where missing layers keep everything). The config is updated:
    ``intermediate_size`` when every layer keeps the same number, else ``config.ffn_sizes``.
    """
    kept = check_keep(keep, ffn_sizes(model))
    for layer, idx in zip(encoder_layers(model), kept):
        layer.intermediate.dense = slice_linear(layer.intermediate.dense, idx, 0)
        layer.output.dense = slice_linear(layer.output.dense, idx, 1)
    sizes = [len(i) for i in kept]
    if len(set(sizes)) == 1:
        model.config.intermediate_size = sizes[0]
        if hasattr(model.config, "ffn_sizes"):
            del model.config.ffn_sizes
    else:
        model.config.ffn_sizes = sizes
    return model


def load_pruned(path: str | os.PathLike, model_class: type[PreTrainedModel] = AutoModelForSequenceClassification
                ) -> PreTrainedModel:
    """Load a model saved after :func:`prune_ffn`, uniform or not (``from_pretrained`` covers uniform)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model at {path} (config.json missing); save one with model.save_pretrained")
    config = AutoConfig.from_pretrained(path)
    sizes = getattr(config, "ffn_sizes", None)
    if sizes is None:
        return model_class.from_pretrained(path)
    model = model_class.from_config(config)  # full-size layers, replaced by the recorded sizes before loading
    for layer, n in zip(getattr(model.base_model, "encoder").layer, sizes):
        d = layer.output.dense.out_features
        layer.intermediate.dense = nn.Linear(d, n)
        layer.output.dense = nn.Linear(n, d)
    missing, unexpected = model.load_state_dict(load_file(path / "model.safetensors"), strict=False)
    if unexpected or any("position_ids" not in k for k in missing):
        raise ValueError(f"{path} does not match its config: missing {missing}, unexpected {unexpected}")
    return model.eval()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of the whole model, of its encoder layers, and of their FFNs."""
    layers = encoder_layers(model)
    ffn = sum(p.numel() for layer in layers
              for p in (*layer.intermediate.parameters(), *layer.output.dense.parameters()))
    return {"total": sum(p.numel() for p in model.parameters()),
            "encoder": sum(p.numel() for p in layers.parameters()), "ffn": ffn}


def encoder_macs(config, ffn: Sequence[int] | None = None, seq_len: float = 128.0) -> float:
    """Multiply-accumulates of the encoder layers for one sequence of length ``seq_len``.

    Per layer: ``H·(3·L·d·d_h + 2·L²·d_h + L·d_h·d)`` for the attention (Q, K, V projections,
    scores and weighted sum, output projection) plus ``n·2·L·d`` for ``n`` FFN neurons
    (Kwon et al., 2022; method notes, decision 9). ``ffn`` gives the neurons per layer
    (default: ``config.intermediate_size`` everywhere).
    """
    d, heads, n_layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    d_h, L = d // heads, float(seq_len)
    ffn = list(ffn) if ffn is not None else [config.intermediate_size] * n_layers
    if len(ffn) != n_layers:
        raise ValueError(f"ffn has {len(ffn)} layer sizes but the config has {n_layers} layers")
    attention = heads * (3 * L * d * d_h + 2 * L * L * d_h + L * d_h * d)
    return sum(attention + n * 2 * L * d for n in ffn)


def relative_flops(config, kept: Sequence[int], seq_len: float = 128.0) -> dict[str, float]:
    """FFN-relative FLOPs (kept fraction of neurons) and encoder-relative FLOPs of a pruned model.

    ``config`` is the *dense* model's config; ``kept`` the neurons kept per layer.
    """
    dense = [config.intermediate_size] * config.num_hidden_layers
    return {"ffn": sum(kept) / sum(dense),
            "encoder": encoder_macs(config, kept, seq_len) / encoder_macs(config, dense, seq_len)}


@torch.inference_mode()
def latency(model: nn.Module, batch: Mapping[str, torch.Tensor], repeats: int = 30, warmup: int = 5,
            threads: int | None = None) -> dict[str, float]:
    """Median and spread of the wall-clock seconds of one forward pass on ``batch`` (CPU, eval mode)."""
    if repeats < 2:
        raise ValueError(f"repeats must be at least 2 to report a spread, got {repeats}")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(**batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)
    return {"median_s": statistics.median(times), "min_s": min(times),
            "iqr_s": statistics.quantiles(times, n=4)[2] - statistics.quantiles(times, n=4)[0]}
