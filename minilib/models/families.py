"""Model families: the one place that knows where a transformer keeps its FFN neurons.

Every supported model computes, in each of its blocks, a feed-forward network ``y = down(a)``
whose **neurons** are the inputs ``a_j`` of one linear map ``down``. A plain FFN has
``a = act(up(x))``; a gated one (GLU) has ``a = act(gate(x)) · up(x)``, with ``gate`` and ``up``
either two maps or the two halves of one fused map (Phi-3's ``gate_up_proj``, ModernBERT's ``Wi``).
Four families, by what a sample of a neuron is (a sentence for an encoder, a token for a decoder)
and by the FFN's arithmetic:

===============  ==========================================  =======================================
family           architectures (``config.model_type``)        where the FFN is (inside each block)
===============  ==========================================  =======================================
``encoder-ffn``  BERT, MiniLM, RoBERTa, XLM-R, ELECTRA,       ``intermediate.dense`` → ``output.dense``
                 CamemBERT, DeBERTa(-v2); DistilBERT          (DistilBERT: ``ffn.lin1`` → ``ffn.lin2``)
``encoder-glu``  ModernBERT                                   fused ``mlp.Wi`` → ``mlp.Wo``
``decoder-mlp``  GPT-2, OPT, GPT-NeoX (Pythia)                ``mlp.c_fc`` → ``mlp.c_proj`` (GPT-2's
                                                              transposed ``Conv1D``), ``fc1`` → ``fc2``,
                                                              ``mlp.dense_h_to_4h`` → ``mlp.dense_4h_to_h``
``gated-mlp``    Llama, SmolLM2, Mistral, Qwen2/3,            ``mlp.gate_proj``, ``mlp.up_proj`` →
                 Gemma 1-3, Phi-3                             ``mlp.down_proj`` (Phi-3: fused
                                                              ``mlp.gate_up_proj``)
===============  ==========================================  =======================================

One :class:`Layout` per architecture names these paths; :data:`FAMILIES` holds one family object per
layout, and any other model (mixture-of-experts ones included) fails at once with one line naming the
supported architectures (:func:`family_of`).

So one forward pre-hook on ``down`` captures the activations and carries the gradient mask of
every method (:mod:`minilib.models.hooks`), and removing neuron ``j`` deletes its output row of every
up-projection (both halves of a fused one) and column ``j`` of ``down`` (exact: the pruned model
computes what the dense one computes with ``a_j = 0``). A family also says what the subsidiary KL
criterion (Eq. 2) compares (:meth:`Family.representation`), which output distribution HFPrune's
entropy reads (:meth:`Family.output_distribution`), and how many multiply-adds a block costs.
:meth:`Family.down` always gives ``down`` as an ``nn.Linear`` would look (GPT-2's ``Conv1D`` through
a transposed view), so no other module needs to know about weight layouts.

Compensation (chapter 9) may give ``down`` a bias it did not have (:meth:`Family.ensure_down_bias`):
through the config's own switch where there is one (Llama's and ModernBERT's ``mlp_bias``, so the model
reloads with ``from_pretrained``), else recorded as ``config.ffn_down_bias`` for
:func:`minilib.models.surgery.load_pruned`. No supported config holds per-layer FFN widths in
``transformers``, so a non-uniform model records ``config.ffn_sizes`` and reloads through ``load_pruned``.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

__all__ = ["Layout", "Family", "Encoder", "Decoder", "FAMILIES", "family_of", "check_keep", "slice_layer",
           "with_bias", "model_inputs", "token_grid", "SIMILARITY_SCALE"]

# The inverse temperature of sentence-transformers' in-batch contrastive loss, which trained all-MiniLM-L6-v2.
SIMILARITY_SCALE = 20.0


@dataclass(frozen=True)
class Layout:
    """Where one architecture keeps its FFN: attribute paths inside each block, and its config's width."""

    model_types: tuple[str, ...]  # the ``config.model_type`` values it serves
    examples: str  # what users call these models, for messages
    blocks: str  # the ModuleList of blocks, from the base model
    up: tuple[str, ...]  # (up,) plain; (gate, up) gated; (gate_up,) gated and fused, halves in that order
    act: str  # the activation module
    down: str  # the linear map whose inputs are the neurons
    width: str = "intermediate_size"  # the config attribute holding the FFN width
    fused: bool = False  # up[0] holds gate and up as its two halves of output rows
    bias_switch: str | None = None  # the config flag that gives the FFN's linear maps biases, if any

    @property
    def gated(self) -> bool:
        return len(self.up) == 2 or self.fused


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
        idx = torch.as_tensor(list(idx) if not isinstance(idx, torch.Tensor) else idx, dtype=torch.long,
                              device="cpu").flatten()  # cpu also inside a meta-device context (load_pruned)
        if idx.numel() == 0:
            raise ValueError(f"layer {layer}: keep at least one neuron (an empty FFN cannot be saved and reloaded)")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"layer {layer}: neuron indices must lie in 0..{n - 1}, got {idx.min()}..{idx.max()}")
        if idx.unique().numel() != idx.numel():
            raise ValueError(f"layer {layer}: keep lists a neuron twice; pass each kept neuron once")
        out.append(idx.sort().values)
    return out


class TransposedView:
    """``transformers``' ``Conv1D`` (GPT-2 stores ``weight`` as (in, out)) seen as an ``nn.Linear``:
    ``weight`` is the transposed view, so reads and in-place writes reach the module's own storage;
    calls, hooks, ``bias`` and ``parameters()`` go to the module."""

    def __init__(self, module: Conv1D):
        self.module = module

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight.T

    @property
    def in_features(self) -> int:
        return self.module.weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.module.weight.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


def slice_layer(layer: nn.Linear | Conv1D, idx: torch.Tensor, dim: int) -> nn.Linear | Conv1D:
    """A new layer of the same kind keeping ``idx`` of its outputs (``dim=0``) or inputs (``dim=1``)."""
    transposed = isinstance(layer, Conv1D)
    idx = idx.to(layer.weight.device)
    weight = layer.weight.detach().index_select(1 - dim if transposed else dim, idx).clone()
    bias = layer.bias.detach().clone() if layer.bias is not None else None
    if bias is not None and dim == 0:
        bias = bias[idx]
    if transposed:
        new = Conv1D(weight.shape[1], weight.shape[0]).to(device=weight.device, dtype=weight.dtype)
    else:
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                        dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def with_bias(linear: nn.Linear) -> nn.Linear:
    """A copy of a bias-free Linear with a zero bias."""
    new = nn.Linear(linear.in_features, linear.out_features, bias=True, device=linear.weight.device,
                    dtype=linear.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(linear.weight)
        new.bias.zero_()
    return new


@functools.cache
def _forward_arguments(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def model_inputs(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The forward arguments of a batch that the model takes, on its device (labels and other columns,
    and token types for a model without them such as DistilBERT, left out)."""
    device = next(model.parameters()).device
    accepted = _forward_arguments(type(model))
    return {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")
            if k in batch and k in accepted}


def token_grid(a: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """What ``down`` received as (batch, tokens, neurons) for a batch of ``input_ids`` of ``shape``:
    OPT's blocks flatten the tokens before their FFN."""
    return a if a.ndim == 3 else a.view(*shape, a.shape[-1])


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return hidden.mean(1)
    m = mask.to(hidden.dtype)[..., None]
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    *parents, last = path.split(".")
    setattr(_get(module, ".".join(parents)) if parents else module, last, value)


class Family(ABC):
    """One architecture's FFN (its :class:`Layout`) and what a sample of its neurons is.

    :class:`Encoder` and :class:`Decoder` give what depends on the model's role (representation,
    output distribution, loss, attention cost); the layout gives where the neurons are.
    """

    causal: bool = False  # one sample of a neuron is a token (decoders) rather than a sentence
    batch_size: int = 32  # calibration texts per forward pass by default
    # compensation's default for each sequence's first token (chapter 9 measured both): a decoder's is
    # fitted like any other (SmolLM2: within 0.2% either way), an encoder's [CLS] is left out
    fit_first_token: bool = True

    def __init__(self, layout: Layout):
        self.layout = layout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.layout.examples})"

    @property
    def name(self) -> str:
        """``encoder-ffn``, ``encoder-glu``, ``decoder-mlp`` or ``gated-mlp``."""
        if self.causal:
            return "gated-mlp" if self.layout.gated else "decoder-mlp"
        return "encoder-glu" if self.layout.gated else "encoder-ffn"

    @property
    def model_types(self) -> tuple[str, ...]:
        return self.layout.model_types

    # -- what each role defines -------------------------------------------------------------------
    @abstractmethod
    def attention_macs(self, config: Any, seq_len: float) -> float:
        """Multiply-adds of one block's attention for a sequence of ``seq_len`` tokens."""

    @abstractmethod
    def representation(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """What the subsidiary KL criterion (Eq. 2) compares: one float64 row per sample."""

    @abstractmethod
    def output_distribution(self, model: nn.Module, batch: Mapping[str, torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probabilities of the model's output distributions and a mask of the rows that count."""

    @abstractmethod
    def supervised_loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The task loss, summed over samples (each sample's mask gradient is its own)."""

    # -- the layout -------------------------------------------------------------------------------
    def base(self, model: nn.Module) -> nn.Module:
        return getattr(model, "base_model", model)

    def has_head(self, model: nn.Module) -> bool:
        return self.base(model) is not model

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The model's blocks (checked to have the layout's FFN)."""
        lay = self.layout
        try:
            blocks = _get(self.base(model), lay.blocks)
            for block in blocks:
                for path in (*lay.up, lay.act, lay.down):
                    _get(block, path)
        except AttributeError:
            raise ValueError(f"{type(model).__name__} has no {lay.blocks}[i] with {', '.join(lay.up)}, {lay.act} and "
                             f"{lay.down} (the {lay.examples.split(',')[0]} layout)") from None
        return blocks

    def down(self, block: nn.Module) -> nn.Linear | TransposedView:
        """``down`` as an ``nn.Linear`` looks: ``weight`` is (hidden, neurons)."""
        layer = _get(block, self.layout.down)
        return TransposedView(layer) if isinstance(layer, Conv1D) else layer

    def ups(self, block: nn.Module) -> dict[str, nn.Module]:
        return {path: _get(block, path) for path in self.layout.up}

    def ffn_input(self, block: nn.Module) -> nn.Module:
        """The module whose first input is the FFN's input ``x``."""
        return _get(block, self.layout.up[0])

    def up_weights(self, block: nn.Module) -> list[torch.Tensor]:
        """The up-projections' weights, (neurons, hidden) each: ``[up]`` or ``[gate, up]``."""
        weights = [m.weight.T if isinstance(m, Conv1D) else m.weight for m in self.ups(block).values()]
        return list(weights[0].chunk(2)) if self.layout.fused else weights

    def activation(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``a`` from the FFN's input ``x`` (what ``down`` receives)."""
        act, ups = _get(block, self.layout.act), list(self.ups(block).values())
        if not self.layout.gated:
            return act(ups[0](x))
        gate, up = ups[0](x).chunk(2, -1) if self.layout.fused else (ups[0](x), ups[1](x))
        return act(gate) * up

    def magnitude(self, block: nn.Module) -> torch.Tensor:
        """The weight-magnitude score of each neuron (higher = keep): ``‖up_j‖₁``, the L1 norm of its input
        weights (Li et al., 2017), for a plain FFN; ``‖gate_j‖₁ + ‖up_j‖₁ + ‖down_{:,j}‖₁``, every weight of
        the neuron, for a gated one (where no single projection sets the neuron's scale)."""
        scores = sum(w.detach().abs().sum(1) for w in self.up_weights(block))
        if self.layout.gated:
            scores = scores + self.down(block).weight.detach().abs().sum(0)
        return scores

    def width(self, config: Any) -> int:
        """The dense FFN width in the config (GPT-2's ``n_inner`` of ``None`` means 4 × hidden)."""
        value = getattr(config, self.layout.width, None)
        return int(value) if value is not None else 4 * config.hidden_size

    def sizes(self, model: nn.Module) -> list[int]:
        """The number of FFN neurons in each block."""
        return [self.down(b).in_features for b in self.blocks(model)]

    @torch.no_grad()
    def prune(self, model: nn.Module, keep: Sequence[Sequence[int]] | Mapping[int, Sequence[int]]) -> nn.Module:
        """Remove every FFN neuron not in ``keep``, in place; returns the model.

        The config records the new size: its width attribute (``intermediate_size`` mostly) when every
        block keeps the same number (an ordinary ``from_pretrained`` folder), else ``config.ffn_sizes``.
        """
        sizes = self.sizes(model)
        kept = check_keep(keep, sizes)
        for block, idx, n in zip(self.blocks(model), kept, sizes):
            if len(idx) == n:  # every neuron kept: nothing to cut
                continue
            rows = torch.cat([idx, idx + n]) if self.layout.fused else idx
            for path, layer in self.ups(block).items():
                _set(block, path, slice_layer(layer, rows, 0))
            _set(block, self.layout.down, slice_layer(_get(block, self.layout.down), idx, 1))
        sizes = [len(i) for i in kept]
        if len(set(sizes)) == 1:
            setattr(model.config, self.layout.width, sizes[0])
            if hasattr(model.config, "ffn_sizes"):
                del model.config.ffn_sizes
        else:
            model.config.ffn_sizes = sizes
        return model

    @torch.no_grad()
    def ensure_down_bias(self, model: nn.Module) -> None:
        """Give every block's ``down`` a bias (zeros) if it has none, so compensation has a place for the
        removed neurons' mean output, and record it so the model reloads: through the config's own switch
        where the layout has one (:attr:`Layout.bias_switch`, e.g. Llama's ``mlp_bias``, which also gives the
        up-projections zero biases), else as ``config.ffn_down_bias`` for
        :func:`minilib.models.surgery.load_pruned`."""
        blocks = self.blocks(model)
        if all(self.down(b).bias is not None for b in blocks):
            return
        switch = self.layout.bias_switch if hasattr(model.config, self.layout.bias_switch or "\0") else None
        for block in blocks:
            paths = (*self.layout.up, self.layout.down) if switch else (self.layout.down,)
            for path in paths:
                linear = _get(block, path)
                if linear.bias is None:
                    _set(block, path, with_bias(linear))
        if switch:
            setattr(model.config, switch, True)
        else:
            model.config.ffn_down_bias = True

    def block_macs(self, config: Any, neurons: int, seq_len: float) -> float:
        """Multiply-adds of one block with ``neurons`` FFN neurons for a sequence of ``seq_len`` tokens:
        the attention (:meth:`attention_macs`) and ``2·L·d·n`` for a plain FFN, ``3·L·d·n`` for a gated one."""
        ffn = (3 if self.layout.gated else 2) * seq_len * config.hidden_size * neurons
        return self.attention_macs(config, seq_len) + ffn

    def macs(self, config: Any, sizes: Sequence[int] | None = None, seq_len: float = 128.0) -> float:
        """Multiply-adds of all blocks (embeddings and heads excluded) for one sequence."""
        sizes = list(sizes) if sizes is not None else [self.width(config)] * config.num_hidden_layers
        if len(sizes) != config.num_hidden_layers:
            raise ValueError(f"got {len(sizes)} layer sizes but the config has {config.num_hidden_layers} layers")
        return sum(self.block_macs(config, n, float(seq_len)) for n in sizes)

    def samples(self, hidden: torch.Tensor, batch: Mapping[str, torch.Tensor], reduction: str) -> torch.Tensor:
        """Per-token activations (B, T, D) → samples of the neurons: (B, D), or (tokens, D)."""
        mask = batch.get("attention_mask")
        if reduction == "cls":
            return hidden[:, 0]
        if reduction == "tokens":
            keep = torch.ones(hidden.shape[:2], dtype=torch.bool) if mask is None else mask.bool().cpu()
            if self.causal:
                keep[:, 0] = False  # the attention sink: a huge, content-free outlier in every window
            return hidden[keep]
        if reduction == "mean":
            return _masked_mean(hidden, None if mask is None else mask.cpu())
        raise ValueError(f"reduction must be 'mean', 'cls' or 'tokens', got {reduction!r}")


class Encoder(Family):
    """Bidirectional encoders: a sample of a neuron is a sentence."""

    # [CLS] out: a neuron firing on it alone made bias compensation spread its mean over every token
    fit_first_token = False

    def attention_macs(self, config: Any, seq_len: float) -> float:
        """Kwon et al. (2022): ``H·(3·L·d·d_h + 2·L²·d_h + L·d_h·d)``."""
        d, heads, L = config.hidden_size, config.num_attention_heads, seq_len
        d_h = d // heads
        return heads * (3 * L * d * d_h + 2 * L * L * d_h + L * d_h * d)

    def representation(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The sentence representation: what a task head reads (BERT's pooler output when the model has
        a head and a pooler, else the ``[CLS]`` state), or, for a bare encoder (a sentence-embedding
        model such as all-MiniLM-L6-v2), the mean of its token states, as sentence-transformers pools."""
        inputs = model_inputs(model, batch)
        out = self.base(model)(**inputs)
        if not self.has_head(model):
            return _masked_mean(out.last_hidden_state, inputs.get("attention_mask")).double()
        pooled = getattr(out, "pooler_output", None)
        return (pooled if pooled is not None else out.last_hidden_state[:, 0]).double()

    def output_distribution(self, model: nn.Module, batch: Mapping[str, torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A classifier's class distribution, or, for a bare sentence encoder, each sentence's in-batch
        similarity distribution ``softmax_j≠i(s · cos(z_i, z_j))`` over the other sentences (``s`` =
        :data:`SIMILARITY_SCALE`; the distribution its contrastive training shaped)."""
        if not self.has_head(model):
            z = F.normalize(self.representation(model, batch).float(), dim=-1)
            if len(z) < 2:
                raise ValueError("a bare encoder's in-batch similarity distribution needs batches of ≥ 2 texts")
            self_pairs = torch.eye(len(z), dtype=torch.bool, device=z.device)
            sim = (SIMILARITY_SCALE * z @ z.T).masked_fill(self_pairs, float("-inf"))
            return torch.log_softmax(sim, -1).masked_fill(self_pairs, 0.0), None  # p log p = 0 on the diagonal
        logits = model(**model_inputs(model, batch)).logits
        if logits.ndim != 2 or logits.shape[-1] == 1:
            raise ValueError("this score needs a class distribution; a regression head (e.g. STS-B) has none "
                             "(use a supervised score or a label-free one that does not read the output)")
        return F.log_softmax(logits.float(), -1), None

    def supervised_loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not self.has_head(model):
            raise ValueError(f"{type(model).__name__} has no task head, so it has no supervised loss; load the "
                             "model with its head (e.g. AutoModelForSequenceClassification) or use a label-free method")
        labels = batch.get("labels")
        if labels is None:
            raise ValueError("supervised scores need labels in every batch")
        logits = model(**model_inputs(model, batch)).logits
        labels = labels.to(logits.device)
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(-1), labels.float(), reduction="sum")
        return F.cross_entropy(logits, labels, reduction="sum")



class Decoder(Family):
    """Causal language models: a sample of a neuron is a token."""

    causal = True
    batch_size = 4  # B·T·V log-probabilities in float64 (V ≈ 50k): 4 × 128 tokens ≈ 0.2 GB per copy

    def attention_macs(self, config: Any, seq_len: float) -> float:
        """Q and O ``2·L·d²``, K and V ``2·L·d·d_kv``, scores and weighted sum ``2·L²·d`` (full, not
        causal-halved)."""
        d, L = config.hidden_size, seq_len
        d_h = getattr(config, "head_dim", None) or d // config.num_attention_heads
        q = config.num_attention_heads * d_h
        kv = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * d_h
        return L * d * (2 * q + 2 * kv) + 2 * L * L * q

    def representation(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The final (normed) hidden state at every sampled token: what the LM head reads."""
        inputs = model_inputs(model, batch)
        hidden = self.base(model)(**inputs).last_hidden_state
        return self.samples(hidden.cpu(), batch, "tokens").double()

    def output_distribution(self, model: nn.Module, batch: Mapping[str, torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next-token distributions at every position that has a next token."""
        out = model(**model_inputs(model, batch))
        logits = getattr(out, "logits", None)
        if logits is None:
            raise ValueError(f"{type(model).__name__} has no LM head; load it with AutoModelForCausalLM")
        mask = batch.get("attention_mask")
        valid = None if mask is None else (mask[:, :-1] * mask[:, 1:]).to(logits.device)
        return torch.log_softmax(logits[:, :-1].double(), -1), valid

    def supervised_loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The next-token cross-entropy, summed over the positions with a next token."""
        logp, valid = self.output_distribution(model, batch)
        ids = batch["input_ids"].to(logp.device)
        nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        return (nll if valid is None else nll * valid).sum()



_BERT = dict(blocks="encoder.layer", up=("intermediate.dense",), act="intermediate.intermediate_act_fn",
             down="output.dense")
_GATED = dict(blocks="layers", up=("mlp.gate_proj", "mlp.up_proj"), act="mlp.act_fn", down="mlp.down_proj")

FAMILIES: tuple[Family, ...] = (
    Encoder(Layout(("bert", "roberta", "xlm-roberta", "electra", "camembert"),
                   "BERT, MiniLM, RoBERTa, XLM-R, ELECTRA", **_BERT)),
    Encoder(Layout(("deberta", "deberta-v2"), "DeBERTa", **_BERT)),
    Encoder(Layout(("distilbert",), "DistilBERT", "transformer.layer", ("ffn.lin1",), "ffn.activation", "ffn.lin2",
                   width="hidden_dim")),
    Encoder(Layout(("modernbert",), "ModernBERT", "layers", ("mlp.Wi",), "mlp.act", "mlp.Wo", fused=True,
                   bias_switch="mlp_bias")),
    Decoder(Layout(("gpt2",), "GPT-2", "h", ("mlp.c_fc",), "mlp.act", "mlp.c_proj", width="n_inner")),
    Decoder(Layout(("opt",), "OPT", "decoder.layers", ("fc1",), "activation_fn", "fc2", width="ffn_dim")),
    Decoder(Layout(("gpt_neox",), "GPT-NeoX, Pythia", "layers", ("mlp.dense_h_to_4h",), "mlp.act",
                   "mlp.dense_4h_to_h")),
    # Llama's config switches FFN biases on; Mistral, Qwen2/3 and Gemma have no such switch
    Decoder(Layout(("llama",), "Llama, SmolLM2", **_GATED, bias_switch="mlp_bias")),
    Decoder(Layout(("mistral", "qwen2", "qwen3"), "Mistral, Qwen2, Qwen3", **_GATED)),
    Decoder(Layout(("gemma", "gemma2", "gemma3_text"), "Gemma, Gemma 2, Gemma 3", **_GATED)),
    Decoder(Layout(("phi3",), "Phi-3", "layers", ("mlp.gate_up_proj",), "mlp.activation_fn", "mlp.down_proj",
                   fused=True)),
)


def family_of(model_or_config: nn.Module | Any) -> Family:
    """The family of a ``transformers`` model (or config); one line naming the supported ones if none."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = "; ".join(f"{f.layout.examples} ({f.name})" for f in FAMILIES)
    raise ValueError(f"unsupported architecture {model_type or type(model_or_config).__name__!r}: minilib prunes "
                     f"the FFN neurons of {supported}")
