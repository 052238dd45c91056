"""MI-PRUN block pruning (seed 001) and its peers: which decoder blocks can go (chapter 7).

Block ℓ maps the residual stream ``X_ℓ`` to ``X_{ℓ+1}``. MI-PRUN scores it by the
matrix-based Rényi MI ``I(X_ℓ; X_{ℓ+1})`` (Eq. 3 of the main paper, with multivariate RBF
Gram matrices over sampled tokens): a block whose output carries nearly all of its input's
information transforms little, so it is redundant. Our reading of the rest of the abstract:

* **Cost of a removal.** Removing the contiguous segment of blocks ``i … j−1`` feeds ``X_i``
  where ``X_j`` was expected; the information it loses is ``c(i, j) = I(X_j; X_j) − I(X_i; X_j)``,
  measured against the estimator's own ceiling ``I(X_j; X_j)`` (for an RBF kernel it is below
  ``S(X_j)``, chapter 1), so that a block that changes nothing costs exactly 0. A set of blocks
  splits into maximal segments and costs the sum over them.
* **The search.** A set of ``k`` blocks is chosen by the exact minimum of that cost,
  :func:`best_by_dynamic_programming` over (blocks decided, blocks removed), which needs the
  O(L·k) segment MIs of runs up to ``k`` long: a few seconds at 30 blocks. This is MI-PRUN's
  default here (method ``mi-prun`` in chapter 7).
* **Fast-Block-Select** (method ``mi-prun-fbs``), the abstract's search, is kept beside it as a
  heuristic with its measured gap (chapter 7). It starts from the better of the top-k blocks by
  MI and the best contiguous segment, then repeatedly looks at every one-block swap, discards the
  swaps whose DPI bound ``c(i, j) ≥ I(X_j; X_j) − min_{i≤k<j} I(X_k; X_{k+1})`` already costs more
  than the incumbent, verifies the ``verify`` most promising ones with their real segment MIs, and
  moves while the real cost falls. That bound would hold for a Markov chain of states; sampled
  token states are not one (a block's output at position t depends on every earlier position),
  and the estimate breaks it on some real segments (chapter 7's DPI check,
  :func:`minilib.experiments.lm_sweep.dpi_check`), so a swap it discards may have been better.

Peers: ShortGPT's Block Influence ``BI_ℓ = 1 − E cos(X_ℓ, X_{ℓ+1})`` (drop the lowest),
Gromov et al.'s angular distance ``arccos(cos(X_ℓ, X_{ℓ+n}))/π`` (drop the contiguous ``n``
blocks with the smallest), and random blocks. Hidden states are RMS-normalised per token
before any kernel (what a block's input norm sees; it tames LLMs' outlier dimensions) and the
kernel width is the median pairwise distance; the first position of every window (the
attention sink, with a huge norm) is never sampled.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from minilib.estimator.entropy import gram_matrix, mutual_information, squared_distances
from minilib.models.families import family_of

__all__ = ["hidden_states", "BlockMI", "block_influence", "angular_distance", "fast_block_select",
           "best_by_dynamic_programming", "random_blocks", "remove_blocks", "segments"]


@torch.inference_mode()
def hidden_states(model: nn.Module, windows: torch.Tensor, n_tokens: int, seed: int = 0) -> torch.Tensor:
    """The residual stream before block 0 and after every block, at ``n_tokens`` random positions.

    Returns a float32 tensor of shape (L + 1, n_tokens, d); entry ℓ is ``X_ℓ``, the input of block ℓ
    (the last is the output of the last block, before the final norm). Position 0 of a window is
    never drawn. The same seed draws the same positions.
    """
    layers = family_of(model).blocks(model)
    count, length = windows.shape
    if n_tokens > count * (length - 1):
        raise ValueError(f"n_tokens={n_tokens} exceeds the {count * (length - 1)} positions the windows offer")
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(count * (length - 1), generator=g)[:n_tokens].sort().values
    rows, cols = flat // (length - 1), flat % (length - 1) + 1
    out = torch.empty(len(layers) + 1, n_tokens, model.config.hidden_size)
    captured: list[torch.Tensor] = []

    def first(_m, args, kwargs):
        captured.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    def after(_m, _args, _kwargs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handles = [layers[0].register_forward_pre_hook(first, with_kwargs=True)]
    handles += [b.register_forward_hook(after, with_kwargs=True) for b in layers]
    model.eval()
    try:
        for w in range(count):
            pick = cols[rows == w]
            if len(pick) == 0:
                continue
            captured.clear()
            model(input_ids=windows[w:w + 1])
            where = (rows == w).nonzero().squeeze(1)
            for ell, h in enumerate(captured):
                out[ell, where] = h[0, pick].float()
    finally:
        for h in handles:
            h.remove()
    return out


def _rms(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x / x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)


def _gram(x: torch.Tensor) -> torch.Tensor:
    """RBF Gram matrix of RMS-normalised tokens with the median pairwise distance as σ."""
    x = _rms(x)
    d2 = squared_distances(x)
    sigma = d2[torch.triu_indices(len(x), len(x), 1).unbind()].median().sqrt().item()
    if not sigma > 0:
        raise ValueError("the sampled hidden states are all identical; sample more tokens or other windows")
    return gram_matrix(x, sigma)


@dataclass
class BlockMI:
    """Matrix-based Rényi MI between the residual-stream states of a model, averaged over token batches.

    ``states`` has shape (L + 1, N, d) (from :func:`hidden_states`); the N tokens are split into
    batches of ``batch`` and every quantity is the mean over batches. Segment MIs are computed on
    demand and cached, so the search's cost is the number of segments it verifies.

    Attributes set on construction: ``block`` (L,), the single-block MIs ``I(X_ℓ; X_{ℓ+1})``, and
    ``ceiling`` (L + 1,), the self-information ``I(X_ℓ; X_ℓ)`` that costs are measured against.
    Tokens left over after the last whole batch are not used.
    """

    states: torch.Tensor
    alpha: float = 1.01
    batch: int = 256
    _grams: list[list[torch.Tensor]] = field(default_factory=list, init=False, repr=False)
    _segment: dict[tuple[int, int], float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.states.ndim != 3 or self.states.shape[0] < 2:
            raise ValueError(f"states must have shape (L + 1, N, d) with L ≥ 1, got {tuple(self.states.shape)}")
        if not torch.isfinite(self.states).all():
            raise ValueError("hidden states contain NaN or inf; check the model's weights and inputs")
        n = self.states.shape[1]
        if n < 2 or self.batch < 2:
            raise ValueError(f"need at least 2 tokens per batch, got N={n}, batch={self.batch}")
        starts = range(0, n - self.batch + 1, self.batch) if n >= self.batch else [0]
        size = min(self.batch, n)
        self._grams = [[_gram(s[b:b + size]) for b in starts] for s in self.states]
        self.ceiling = np.array([np.mean([self._mi(K, K) for K in g]) for g in self._grams])
        self.block = np.array([self.segment(i, i + 1) for i in range(self.n_blocks)])

    @property
    def n_blocks(self) -> int:
        return len(self._grams) - 1

    @property
    def segments_estimated(self) -> int:
        """How many segment MIs have been estimated so far (the search's real cost)."""
        return len(self._segment)

    def segment(self, i: int, j: int) -> float:
        """``I(X_i; X_j)`` in bits: the MI across the contiguous blocks ``i … j−1``."""
        if not 0 <= i < j <= self.n_blocks:
            raise ValueError(f"segment ({i}, {j}) is not within 0 ≤ i < j ≤ {self.n_blocks}")
        if (i, j) not in self._segment:
            self._segment[(i, j)] = float(np.mean([self._mi(a, b) for a, b in zip(self._grams[i], self._grams[j])]))
        return self._segment[(i, j)]

    def _mi(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return mutual_information(a, b, self.alpha).item()

    def dpi_bound(self, i: int, j: int) -> float:
        """``min_{i≤k<j} I(X_k; X_{k+1})``: the DPI bound on ``I(X_i; X_j)`` if the states were a Markov chain.

        They are not (module docstring), and the estimates can exceed it: a heuristic, not a guarantee.
        """
        return float(self.block[i:j].min())

    def cost(self, blocks: Sequence[int], bound: bool = False) -> float:
        """Σ over the segments of ``blocks`` of ``I(X_j; X_j) − I(X_i; X_j)`` (with ``bound``: its DPI lower bound)."""
        mi = self.dpi_bound if bound else self.segment
        return float(sum(self.ceiling[j] - mi(i, j) for i, j in segments(blocks)))


def segments(blocks: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal contiguous runs of ``blocks`` as half-open ``(start, stop)`` pairs."""
    runs: list[tuple[int, int]] = []
    for b in sorted(set(blocks)):
        if runs and runs[-1][1] == b:
            runs[-1] = (runs[-1][0], b + 1)
        else:
            runs.append((b, b + 1))
    return runs


def _check_k(k: int, n_blocks: int) -> None:
    if not 1 <= k < n_blocks:
        raise ValueError(f"cannot remove {k} of {n_blocks} blocks; choose 1 ≤ k < {n_blocks}")


def fast_block_select(mi: BlockMI, k: int, verify: int = 8, max_rounds: int = 50) -> list[int]:
    """MI-PRUN's Fast-Block-Select (our reading; a heuristic, see the module docstring): ``k`` blocks to remove."""
    L = mi.n_blocks
    _check_k(k, L)
    by_mi = sorted(np.argsort(-mi.block, kind="stable")[:k].tolist())
    start = min(range(L - k + 1), key=lambda s: mi.cost(range(s, s + k)))
    best = min([by_mi, list(range(start, start + k))], key=mi.cost)
    best_cost = mi.cost(best)
    for _ in range(max_rounds):
        inside = set(best)
        swaps = {tuple(sorted(inside - {b} | {c})) for b in inside for c in range(L) if c not in inside}
        promising = sorted((mi.cost(s, bound=True), s) for s in swaps)
        promising = [s for b, s in promising if b < best_cost][:verify]  # MI-PRUN's DPI pruning (a heuristic here)
        if not promising:
            break
        cand = min(promising, key=mi.cost)
        if mi.cost(cand) >= best_cost:
            break
        best, best_cost = list(cand), mi.cost(cand)
    return sorted(best)


def best_by_dynamic_programming(mi: BlockMI, k: int) -> list[int]:
    """MI-PRUN's search: the exact minimum-cost set of ``k`` blocks (needs O(L·k) segment MIs).

    State ``(p, r)``: blocks ``0 … p−1`` are decided, ``r`` of them removed, and block ``p−1`` is
    kept (or ``p = 0``), so a new run of removed blocks may start at ``p``.
    """
    L = mi.n_blocks
    _check_k(k, L)
    h = np.full((L + 1, k + 1), np.inf)
    h[0, 0] = 0.0
    back: dict[tuple[int, int], tuple[int, int, int]] = {}
    best, end = np.inf, None
    for p in range(L + 1):
        for r in range(k + 1):
            if not np.isfinite(h[p, r]):
                continue
            if p == L:
                if r == k and h[p, r] < best:
                    best, end = h[p, r], ((p, r), 0)
                continue
            for length in range(k - r + 1):  # remove blocks p … p+length−1, keep block p+length
                stop = p + length
                if stop > L:
                    break
                cost = h[p, r] + (mi.ceiling[stop] - mi.segment(p, stop) if length else 0.0)
                if stop == L:
                    if r + length == k and cost < best:
                        best, end = cost, ((p, r), length)
                elif cost < h[stop + 1, r + length]:
                    h[stop + 1, r + length] = cost
                    back[(stop + 1, r + length)] = (p, r, length)
    (state, length) = end
    removed = list(range(state[0], state[0] + length))
    while state != (0, 0):
        p, r, length = back[state]
        removed += range(p, p + length)
        state = (p, r)
    return sorted(removed)


def random_blocks(n_blocks: int, k: int, seed: int = 0) -> list[int]:
    """``k`` distinct blocks drawn uniformly (the lower reference)."""
    _check_k(k, n_blocks)
    return sorted(np.random.default_rng(seed).choice(n_blocks, size=k, replace=False).tolist())


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).clamp(-1.0, 1.0)


def block_influence(states: torch.Tensor) -> np.ndarray:
    """ShortGPT's Block Influence per block, ``1 − mean_tokens cos(X_ℓ, X_{ℓ+1})``; low = removable."""
    return np.array([1.0 - _cosine(states[i], states[i + 1]).mean().item() for i in range(len(states) - 1)])


def angular_distance(states: torch.Tensor, n: int) -> np.ndarray:
    """Gromov et al.'s ``mean_tokens arccos(cos(X_ℓ, X_{ℓ+n})) / π`` for every start ℓ; low = removable."""
    _check_k(n, len(states) - 1)
    return np.array([(torch.arccos(_cosine(states[i], states[i + n])) / np.pi).mean().item()
                     for i in range(len(states) - n)])


def remove_blocks(model: nn.Module, blocks: Sequence[int]) -> nn.Module:
    """A copy of ``model`` without the given decoder blocks; it saves and reloads with ``from_pretrained``."""
    layers = family_of(model).blocks(model)
    drop = set(blocks)
    if not drop <= set(range(len(layers))) or len(drop) >= len(layers):
        raise ValueError(f"blocks {sorted(drop)} must be distinct indices in 0…{len(layers) - 1}, leaving at least one")
    pruned = copy.deepcopy(model)
    kept = [b for i, b in enumerate(family_of(pruned).blocks(pruned)) if i not in drop]
    for i, b in enumerate(kept):  # the KV cache is indexed by layer_idx
        b.self_attn.layer_idx = i
    pruned.model.layers = nn.ModuleList(kept)
    config = pruned.config
    if getattr(config, "layer_types", None):
        config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in drop]
    config.num_hidden_layers = len(kept)
    return pruned
