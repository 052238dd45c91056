"""Model families: the one place that knows where a transformer keeps its FFN neurons.

Every supported model computes, in each of its blocks, a feed-forward network ``y = down(a)``
whose **neurons** are the inputs ``a_j`` of one linear map ``down``:

=================  ==========================================  ==============================
family             ``a`` (one entry per neuron)                 ``down``
=================  ==========================================  ==============================
``encoder-ffn``    ``GELU(intermediate.dense(x))``              ``output.dense``
(BERT, MiniLM,
RoBERTa, ELECTRA)
``gated-mlp``      ``silu(gate_proj(x)) · up_proj(x)``          ``mlp.down_proj``
(Llama, SmolLM2,
Mistral, Qwen2/3)
=================  ==========================================  ==============================

So one forward pre-hook on ``down`` captures the activations and carries the gradient mask of
every method (:mod:`minilib.models.hooks`), and removing neuron ``j`` deletes row ``j`` of every
up-projection and column ``j`` of ``down`` (exact: the pruned model computes what the dense one
computes with ``a_j = 0``). A family also says what the subsidiary KL criterion (Eq. 2) compares
(:meth:`Family.representation`), which output distribution HFPrune's entropy reads
(:meth:`Family.output_distribution`), and how many multiply-adds a block costs.

Compensation (chapter 9) may give ``down`` a bias it did not have (:meth:`Family.ensure_down_bias`):
Llama's config switches it on with ``mlp_bias`` (the model reloads with ``from_pretrained``), Mistral,
Qwen2 and Qwen3 have no such switch and record ``config.ffn_down_bias`` for
:func:`minilib.models.surgery.load_pruned`. No supported family's config holds per-layer FFN widths in
``transformers``, so a non-uniform model records ``config.ffn_sizes`` and reloads through ``load_pruned``.

Adding a family is one small subclass registered in :data:`FAMILIES`; any other model fails at
once with one line naming the supported families (:func:`family_of`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Family", "EncoderFFN", "GatedMLP", "FAMILIES", "family_of", "check_keep", "slice_linear", "with_bias",
           "model_inputs", "SIMILARITY_SCALE"]

# The inverse temperature of sentence-transformers' in-batch contrastive loss, which trained all-MiniLM-L6-v2.
SIMILARITY_SCALE = 20.0


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
    idx = idx.to(linear.weight.device)
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


def with_bias(linear: nn.Linear) -> nn.Linear:
    """A copy of a bias-free Linear with a zero bias."""
    new = nn.Linear(linear.in_features, linear.out_features, bias=True, device=linear.weight.device,
                    dtype=linear.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(linear.weight)
        new.bias.zero_()
    return new


def model_inputs(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The forward arguments of a batch, on the model's device (labels and other columns left out)."""
    device = next(model.parameters()).device
    return {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


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
    """Where one family of models keeps its FFN neurons (subclass and register in :data:`FAMILIES`).

    A subclass names the layout by attribute paths inside a block (``down_path``, ``up_paths``,
    ``ffn_input_path``) and gives what depends on the family's arithmetic (the abstract methods).
    """

    name: str = ""
    model_types: frozenset[str] = frozenset()  # ``config.model_type`` values this family serves
    examples: str = ""
    causal: bool = False  # one sample of a neuron is a token (decoders) rather than a sentence
    batch_size: int = 32  # calibration texts per forward pass by default
    down_path: str = ""  # the linear map whose inputs are the neurons
    up_paths: tuple[str, ...] = ()  # the up-projections, one output row per neuron
    ffn_input_path: str = ""  # the module whose first input is the FFN's input ``x``
    bias_switch: str | None = None  # the config flag that gives the FFN's linear maps biases, if any
    # compensation's default for each sequence's first token (chapter 9 measured both): a decoder's is
    # fitted like any other (SmolLM2: within 0.2% either way), an encoder's [CLS] is left out
    fit_first_token: bool = True

    # -- what each family defines ---------------------------------------------------------------
    @abstractmethod
    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The model's blocks (checked to have the family's layout)."""

    @abstractmethod
    def activation(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``a`` from the FFN's input ``x`` (what ``down`` receives)."""

    @abstractmethod
    def magnitude(self, block: nn.Module) -> torch.Tensor:
        """The weight-magnitude score of each neuron (higher = keep)."""

    @abstractmethod
    def block_macs(self, config: Any, neurons: int, seq_len: float) -> float:
        """Multiply-adds of one block with ``neurons`` FFN neurons for a sequence of ``seq_len`` tokens."""

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

    # -- shared logic -----------------------------------------------------------------------------
    def down(self, block: nn.Module) -> nn.Linear:
        return _get(block, self.down_path)

    def ups(self, block: nn.Module) -> dict[str, nn.Linear]:
        return {path: _get(block, path) for path in self.up_paths}

    def ffn_input(self, block: nn.Module) -> nn.Module:
        return _get(block, self.ffn_input_path)

    def sizes(self, model: nn.Module) -> list[int]:
        """The number of FFN neurons in each block."""
        return [self.down(b).in_features for b in self.blocks(model)]

    def base(self, model: nn.Module) -> nn.Module:
        return getattr(model, "base_model", model)

    def has_head(self, model: nn.Module) -> bool:
        return self.base(model) is not model

    @torch.no_grad()
    def prune(self, model: nn.Module, keep: Sequence[Sequence[int]] | Mapping[int, Sequence[int]]) -> nn.Module:
        """Remove every FFN neuron not in ``keep``, in place; returns the model.

        The config records the new size: ``intermediate_size`` when every block keeps the same
        number (an ordinary ``from_pretrained`` folder), else ``config.ffn_sizes``.
        """
        sizes = self.sizes(model)
        kept = check_keep(keep, sizes)
        for block, idx, n in zip(self.blocks(model), kept, sizes):
            if len(idx) == n:  # every neuron kept: nothing to cut
                continue
            for path, linear in self.ups(block).items():
                _set(block, path, slice_linear(linear, idx, 0))
            _set(block, self.down_path, slice_linear(self.down(block), idx, 1))
        sizes = [len(i) for i in kept]
        if len(set(sizes)) == 1:
            model.config.intermediate_size = sizes[0]
            if hasattr(model.config, "ffn_sizes"):
                del model.config.ffn_sizes
        else:
            model.config.ffn_sizes = sizes
        return model

    @torch.no_grad()
    def ensure_down_bias(self, model: nn.Module) -> None:
        """Give every block's ``down`` a bias (zeros) if it has none, so compensation has a place for the
        removed neurons' mean output, and record it so the model reloads: through the config's own switch
        where the family has one (:attr:`bias_switch`, e.g. Llama's ``mlp_bias``, which also gives the
        up-projections zero biases), else as ``config.ffn_down_bias`` for
        :func:`minilib.models.surgery.load_pruned`."""
        blocks = self.blocks(model)
        if all(self.down(b).bias is not None for b in blocks):
            return
        switch = self.bias_switch if hasattr(model.config, self.bias_switch or "\0") else None
        for block in blocks:
            paths = (*self.up_paths, self.down_path) if switch else (self.down_path,)
            for path in paths:
                linear = _get(block, path)
                if linear.bias is None:
                    _set(block, path, with_bias(linear))
        if switch:
            setattr(model.config, switch, True)
        else:
            model.config.ffn_down_bias = True

    def macs(self, config: Any, sizes: Sequence[int] | None = None, seq_len: float = 128.0) -> float:
        """Multiply-adds of all blocks (embeddings and heads excluded) for one sequence."""
        sizes = list(sizes) if sizes is not None else [config.intermediate_size] * config.num_hidden_layers
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


class EncoderFFN(Family):
    """BERT-style encoders: ``layer.intermediate.dense`` → GELU → ``layer.output.dense``."""

    name = "encoder-ffn"
    model_types = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert"})
    examples = "BERT, MiniLM, RoBERTa, ELECTRA"
    down_path, up_paths, ffn_input_path = "output.dense", ("intermediate.dense",), "intermediate"
    # [CLS] out: a neuron firing on it alone made bias compensation spread its mean over every token
    fit_first_token = False

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        layers = getattr(getattr(self.base(model), "encoder", None), "layer", None)
        if layers is None or not all(hasattr(layer, "intermediate") for layer in layers):
            raise ValueError(f"{type(model).__name__} has no encoder.layer[i].intermediate (the BERT layout)")
        return layers

    def activation(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.intermediate(x)

    def magnitude(self, block: nn.Module) -> torch.Tensor:
        """``‖W1[j, :]‖₁``, the L1 norm of the neuron's input weights (Li et al., 2017)."""
        return block.intermediate.dense.weight.detach().abs().sum(1)

    def block_macs(self, config: Any, neurons: int, seq_len: float) -> float:
        """Kwon et al. (2022): ``H·(3·L·d·d_h + 2·L²·d_h + L·d_h·d)`` attention + ``n·2·L·d`` FFN."""
        d, heads, L = config.hidden_size, config.num_attention_heads, seq_len
        d_h = d // heads
        return heads * (3 * L * d * d_h + 2 * L * L * d_h + L * d_h * d) + neurons * 2 * L * d

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


class GatedMLP(Family):
    """Llama-style decoders: ``mlp.down_proj(silu(mlp.gate_proj(x)) · mlp.up_proj(x))``."""

    name = "gated-mlp"
    model_types = frozenset({"llama", "mistral", "qwen2", "qwen3"})
    examples = "Llama, SmolLM2, Mistral, Qwen2, Qwen3"
    causal = True
    batch_size = 4  # B·T·V log-probabilities in float64 (V ≈ 50k): 4 × 128 tokens ≈ 0.2 GB per copy
    down_path, up_paths, ffn_input_path = "mlp.down_proj", ("mlp.gate_proj", "mlp.up_proj"), "mlp"
    bias_switch = "mlp_bias"  # Llama's config has it; Mistral, Qwen2 and Qwen3 have no FFN biases at all

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        layers = getattr(self.base(model), "layers", None)
        if layers is None or not all(hasattr(getattr(b, "mlp", None), "down_proj") for b in layers):
            raise ValueError(f"{type(model).__name__} has no layers[i].mlp.gate_proj/up_proj/down_proj (the Llama layout)")
        return layers

    def activation(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.mlp.act_fn(block.mlp.gate_proj(x)) * block.mlp.up_proj(x)

    def magnitude(self, block: nn.Module) -> torch.Tensor:
        """``‖gate_j‖₁ + ‖up_j‖₁ + ‖down_{:,j}‖₁``: every weight of the neuron (in a gated MLP no single
        projection sets the neuron's scale)."""
        m = block.mlp
        return (m.gate_proj.weight.abs().sum(1) + m.up_proj.weight.abs().sum(1)
                + m.down_proj.weight.abs().sum(0)).detach()

    def block_macs(self, config: Any, neurons: int, seq_len: float) -> float:
        """Q and O ``2·L·d²``, K and V ``2·L·d·d_kv``, scores and weighted sum ``2·L²·d`` (full, not
        causal-halved), MLP ``3·L·d·n``."""
        d, L = config.hidden_size, seq_len
        d_h = getattr(config, "head_dim", None) or d // config.num_attention_heads
        q = config.num_attention_heads * d_h
        kv = getattr(config, "num_key_value_heads", config.num_attention_heads) * d_h
        return L * d * (2 * q + 2 * kv) + 2 * L * L * q + 3 * L * d * neurons

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


FAMILIES: tuple[Family, ...] = (EncoderFFN(), GatedMLP())


def family_of(model_or_config: nn.Module | Any) -> Family:
    """The family of a ``transformers`` model (or config); one line naming the supported ones if none."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = "; ".join(f"{f.name} ({f.examples})" for f in FAMILIES)
    raise ValueError(f"unsupported architecture {model_type or type(model_or_config).__name__!r}: minilib prunes "
                     f"the FFN neurons of {supported}")
