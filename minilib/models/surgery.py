"""Model surgery: physically remove FFN neurons from any supported model, and what that saves.

Removing neuron ``j`` of a block deletes row ``j`` of every up-projection and column ``j`` of
``down`` (:mod:`minilib.models.families`); ``down``'s bias stays. This is exact: the pruned model computes
what the dense model computes with those neurons' activations set to zero (tests check both).

Blocks may keep different numbers of neurons. A uniformly pruned model is an ordinary model of
its class with a smaller FFN width in its config and reloads with ``from_pretrained``; a non-uniform
one records its sizes in ``config.ffn_sizes`` and reloads with :func:`load_pruned` (which also
reads uniform and dense folders).

Cost: multiply-adds of the blocks (:meth:`minilib.models.families.Family.macs`; for BERT the per-layer
count of Kwon et al., 2022) at a sequence length ``L`` (for GLUE a task's mean dev length,
:data:`MEAN_DEV_LENGTH`). Pruning only FFN neurons leaves the attention untouched, so two ratios
are reported: **FFN-relative FLOPs** (the kept fraction of neurons) and **encoder-relative FLOPs**
(MACs of the pruned blocks over the dense).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from minilib.models.families import family_of

# Mean dev-set length in word pieces, as used for BERT MACs by Kwon et al. (2022).
MEAN_DEV_LENGTH = {"sst2": 25.16, "stsb": 31.47, "mrpc": 53.24, "qqp": 30.55, "qnli": 50.97}

__all__ = ["MEAN_DEV_LENGTH", "ffn_sizes", "prune_ffn", "load_pruned", "count_parameters", "macs", "relative_flops",
           "latency"]


def ffn_sizes(model: nn.Module) -> list[int]:
    """The number of FFN neurons in each block."""
    return family_of(model).sizes(model)


def prune_ffn(model: PreTrainedModel, keep: Sequence[Sequence[int]] | Mapping[int, Sequence[int]]
              ) -> PreTrainedModel:
    """Remove every FFN neuron not in ``keep``, in place; returns the model.

    ``keep`` gives the kept neuron indices of each block (a sequence with one entry per block,
    or a mapping block → indices where missing blocks keep everything). The config is updated:
    its width (``intermediate_size`` mostly) when every block keeps the same number, else ``config.ffn_sizes``.
    """
    return family_of(model).prune(model, keep)


def load_pruned(path: str | os.PathLike, model_class: type[PreTrainedModel] = AutoModelForSequenceClassification,
                **kwargs: Any) -> PreTrainedModel:
    """Load a model saved after :func:`prune_ffn`, uniform or not, with or without a compensation bias
    (``from_pretrained`` covers a uniform model whose family's config can switch the bias on); ``kwargs``
    go to ``from_pretrained`` (``dtype=…``). A dense model loads as ``from_pretrained`` would load it."""
    path = Path(path)
    if not path.exists() and not path.is_absolute() and len(path.parts) <= 2:  # a Hub id: an ordinary model
        return model_class.from_pretrained(str(path), **kwargs)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model at {path} (config.json missing); save one with model.save_pretrained")
    config = AutoConfig.from_pretrained(path)
    sizes = getattr(config, "ffn_sizes", None)
    down_bias = getattr(config, "ffn_down_bias", False)
    if sizes is None and not down_bias:
        return model_class.from_pretrained(path, **kwargs)
    cls = getattr(model_class, "_model_mapping", {}).get(type(config), model_class)  # an Auto class's own

    class Pruned(cls):  # built in the pruned shapes, so from_pretrained loads it as any model (renamed, tied keys)
        def __init__(self, config, *args, **kwargs):
            super().__init__(config, *args, **kwargs)
            if sizes is not None:
                prune_ffn(self, [range(n) for n in sizes])
            if down_bias:
                family_of(self).ensure_down_bias(self)

    # under the class's own names, so transformers applies its checkpoint conversions (GPT-NeoX's embed_out)
    Pruned.__name__, Pruned.__qualname__, Pruned.__module__ = cls.__name__, cls.__qualname__, cls.__module__
    model, info = Pruned.from_pretrained(path, output_loading_info=True, **kwargs)
    wrong = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if wrong:
        raise ValueError(f"{path} does not match its config: {wrong}")
    model.__class__ = cls
    return model.eval()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of the whole model, of its blocks, and of their FFNs (up-projections and ``down``)."""
    family = family_of(model)
    blocks = family.blocks(model)
    ffn = sum(p.numel() for block in blocks
              for m in (*family.ups(block).values(), family.down(block)) for p in m.parameters())
    return {"total": sum(p.numel() for p in model.parameters()),
            "blocks": sum(p.numel() for p in blocks.parameters()), "ffn": ffn}


def macs(config, ffn: Sequence[int] | None = None, seq_len: float = 128.0) -> float:
    """Multiply-accumulates of the blocks for one sequence of ``seq_len`` tokens.

    ``ffn`` gives the neurons per block (default: the config's dense width everywhere); the
    per-block count is the family's (:meth:`minilib.models.families.Family.block_macs`).
    """
    return family_of(config).macs(config, ffn, seq_len)


def relative_flops(config, kept: Sequence[int], seq_len: float = 128.0) -> dict[str, float]:
    """FFN-relative FLOPs (kept fraction of neurons) and block-relative FLOPs of a pruned model.

    ``config`` is the *dense* model's config; ``kept`` the neurons kept per block. The second
    ratio is called ``"encoder"`` for the BERT chapters' tables, whatever the family.
    """
    dense = [family_of(config).width(config)] * config.num_hidden_layers
    return {"ffn": sum(kept) / sum(dense), "encoder": macs(config, kept, seq_len) / macs(config, dense, seq_len)}


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
