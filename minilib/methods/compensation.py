"""Reconstruct what is removed: compensation of a pruned FFN's down projection (chapter 9).

A block's FFN computes ``y = W a + b`` (``W`` = ``down``'s weight, hidden × D; ``b`` its bias, 0 if it
has none; ``a`` the neurons, :mod:`minilib.models.families`). Keeping the neurons ``S`` and removing
``R`` leaves ``W_S a_S + b``. With ``μ`` and ``Σ`` the mean and covariance of ``a`` over the
calibration tokens (padding never), the compensations are:

=================  ====================================================================================
``none``           ``W' = W_S``, ``b' = b`` (the paper; what every method did before chapter 9)
``bias``           ``b' = b + W_R μ_R``: the removed neurons' mean output (FLAP, An et al. 2024)
``least-squares``  ``W'_S = W_S + W_R Σ_RS (Σ_SS + λI)⁻¹``, ``b' = b + W_R μ_R − (W'_S − W_S) μ_S``
``merge``          every removed ``r`` folded into its partner ``p`` (a kept neuron):
                   ``W'_p += s_r W_r``, ``s_r = Σ_rp / Σ_pp``, ``b' = b + Σ_r W_r (μ_r − s_r μ_p)``
=================  ====================================================================================

``least-squares`` minimises ``Σ_tokens ‖W'_S a_S + b' − (W a + b)‖² + λ‖W'_S − W_S‖²``: the ridge
pulls the kept weights towards their dense values, so ``λ → ∞`` is ``bias`` and ``λ → 0`` the plain
refit ``W C[:, S] C[S, S]⁻¹`` of OSSCAR and GRAIL (in centred form: the intercept is free).
``merge`` is the same fit with one kept partner per removed neuron (neuron merging, Kim et al. 2020):
the paper's premise made literal, since a neuron whose information a kept one carries can go only
if the kept one takes over its output. The partner is the kept neuron the method's own similarity
map (MI, or ``|r|``) pairs it with most strongly.

**Guard.** The calibration tokens are split at random (``seed``) into a fit set and a held-out set
(``held_out`` of them). With ``M_h`` the held-out second moment of ``ã = [a; 1]`` and
``Δ = [W'_S − W_S | −W_R | b' − b]`` (the pruned block's error as a linear map of ``ã``), a layer's
held-out reconstruction error is ``E = tr(Δ M_h Δᵀ)``, the mean over held-out tokens of
``‖y' − y‖²``. ``λ`` is chosen on it from :data:`RIDGE` (relative to the mean of ``diag Σ_SS``), and a
compensated layer is kept only if its ``E`` is below the uncompensated one; otherwise the layer stays
uncompensated and :class:`LayerFix` says so.

**Fit inputs.** ``fit="dense"`` fits every layer on the dense model's activations (one pass per
group of layers); ``fit="sequential"`` fits layer ``ℓ`` on the inputs that the already pruned and
compensated layers below give it (its target is the dense FFN applied to that same input). The blocks'
calls are recorded in one dense pass and each block is then run alone on the states the pruned
blocks below produce (twice: to collect, then to pass on), about three forward passes in all.

**Fit tokens.** ``skip_first`` leaves every sequence's first position out of the fit: a decoder's
attention sink (huge, content-free activations) or an encoder's ``[CLS]``. ``None`` is the family's
choice (:attr:`~minilib.models.families.Family.fit_first_token`), from chapter 9's measurements: on
MiniLM the refit without ``[CLS]`` beat the one with it on 25 of 43 GLUE cells and helped 41 of them
over no compensation (34 with it); on SmolLM2 the first position moved perplexity by at most 0.2%.

**Memory.** A layer's statistics are two ``(D+1) × (D+1)`` float64 matrices (fit and held-out),
``16 (D+1)²`` bytes: 38 MB at D = 1,536, 1.9 GB at D = 11,008. ``fit="dense"`` collects as many
layers per pass as fit in ``max_bytes``; ``fit="sequential"`` holds one layer at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from minilib.models.families import Family, family_of, model_inputs, token_grid
from minilib.models.hooks import check_finite, frozen

__all__ = ["COMPENSATIONS", "FITS", "RIDGE", "Compensation", "LayerStats", "LayerFix", "collect_stats",
           "fix_layer", "partners_from_similarity", "compensate", "greedy_elimination"]

Batch = Mapping[str, torch.Tensor]
COMPENSATIONS = ("none", "bias", "least-squares", "merge")
FITS = ("dense", "sequential")
# λ / mean(diag Σ_SS) tried by least-squares; ∞ (bias compensation) is always among the candidates.
RIDGE = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class Compensation:
    """How the kept weights take over what is removed (see the module docstring).

    mode : one of :data:`COMPENSATIONS`. fit : ``"dense"`` or ``"sequential"`` inputs. skip_first : leave
    every sequence's first token out of the fit (``None``: the family's default). held_out : the fraction of calibration tokens the
    guard and the choice of λ read. ridge : the λ grid of least-squares, relative to mean diag Σ_SS.
    """

    mode: str = "none"
    fit: str = "dense"
    skip_first: bool | None = None
    held_out: float = 0.2
    ridge: tuple[float, ...] = RIDGE
    max_bytes: float = 4e9  # statistics held at once by fit="dense"

    def __post_init__(self) -> None:
        if self.mode not in COMPENSATIONS:
            raise ValueError(f"compensation must be one of {', '.join(COMPENSATIONS)}; got {self.mode!r}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be 'dense' or 'sequential', got {self.fit!r}")
        if not self.ridge or min(self.ridge) <= 0:
            raise ValueError(f"ridge is a grid of positive λ (relative to mean diag Σ_SS); got {self.ridge}")
        if not 0.0 < self.held_out < 1.0:
            raise ValueError(f"held_out is the fraction of calibration tokens kept for the guard, in (0, 1); "
                             f"got {self.held_out}")

    def as_dict(self) -> dict:
        return asdict(self)

    def resolved(self, family: Family) -> Compensation:
        """These settings with ``skip_first`` decided: the family's default where it is ``None``."""
        return self if self.skip_first is not None else replace(self, skip_first=not family.fit_first_token)


@dataclass
class LayerStats:
    """Sums of ``ã ãᵀ`` (``ã = [a; 1]``) over a layer's fit and held-out calibration tokens, float64."""

    fit: torch.Tensor
    held: torch.Tensor

    @property
    def n_fit(self) -> int:
        return int(self.fit[-1, -1].item())

    @property
    def n_held(self) -> int:
        return int(self.held[-1, -1].item())

    @property
    def mean(self) -> torch.Tensor:
        return self.fit[-1, :-1] / self.n_fit

    @property
    def cov(self) -> torch.Tensor:
        mu = self.mean
        return self.fit[:-1, :-1] / self.n_fit - torch.outer(mu, mu)

    def held_error(self, delta: torch.Tensor) -> float:
        """Mean over held-out tokens of ``‖Δ ã‖²``, ``Δ`` being hidden × (D + 1)."""
        return float(((delta @ self.held) * delta).sum() / self.n_held)


class _Stop(Exception):
    """Raised by the last hook of a pass: nothing above that layer is needed."""


def _token_mask(batch: Batch, shape: torch.Size, skip_first: bool) -> torch.Tensor:
    mask = batch.get("attention_mask")
    rows = torch.ones(shape, dtype=torch.bool) if mask is None else mask.bool().cpu()
    if skip_first:
        rows[:, 0] = False
    return rows


class _Accumulator:
    """Forward pre-hooks on ``down`` that add each batch's tokens to a layer's fit and held-out sums."""

    def __init__(self, family: Family, blocks: nn.ModuleList, layers: Sequence[int], stop: bool) -> None:
        self.out: dict[int, LayerStats] = {}
        self.rows = self.held = torch.empty(0, dtype=torch.bool)
        last = max(layers)
        self.handles = [family.down(blocks[i]).register_forward_pre_hook(self._hook(i, stop and i == last))
                        for i in layers]

    def _hook(self, index: int, stop: bool):
        def fn(_m: nn.Module, args: tuple) -> None:
            a = token_grid(args[0], self.rows.shape)
            check_finite(a, "activations", index)
            x = torch.cat([a.double(), torch.ones(*a.shape[:2], 1, dtype=torch.float64, device=a.device)], -1)
            if index not in self.out:
                zeros = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float64, device=a.device)
                self.out[index] = LayerStats(zeros, zeros.clone())
            rows, held = self.rows.to(a.device), self.held.to(a.device)
            fit, test = x[rows & ~held], x[rows & held]
            self.out[index].fit += fit.T @ fit
            self.out[index].held += test.T @ test
            if stop:
                raise _Stop
        return fn

    def batch(self, rows: torch.Tensor, held: torch.Tensor) -> None:
        self.rows, self.held = rows, held

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def result(self) -> dict[int, LayerStats]:
        for i, s in self.out.items():
            if s.n_fit < 2 or s.n_held < 1:
                raise ValueError(f"layer {i}: {s.n_fit} fit and {s.n_held} held-out calibration tokens are too few "
                                 "to compensate; give more calibration data")
        return self.out


def _token_masks(batches: Sequence[Batch], skip_first: bool, held_out: float, seed: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch, the tokens that count (padding never) and the held-out ones (one seeded draw)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for batch in batches:
        shape = batch["input_ids"].shape
        out.append((_token_mask(batch, shape, skip_first), torch.rand(shape, generator=generator) < held_out))
    return out


@torch.no_grad()
def collect_stats(model: nn.Module, batches: Sequence[Batch], layers: Sequence[int], *,
                  skip_first: bool | None = None, held_out: float = 0.2, seed: int = 0,
                  progress: bool = False) -> dict[int, LayerStats]:
    """The fit and held-out statistics of ``layers`` (the activations ``down`` receives, all D neurons).

    The same tokens are held out in every layer (one seeded draw per batch); the forward pass stops
    after the last layer asked for. ``skip_first=None`` is the family's default (:class:`Compensation`).
    """
    family = family_of(model)
    skip_first = not family.fit_first_token if skip_first is None else skip_first
    acc = _Accumulator(family, family.blocks(model), sorted(layers), stop=True)
    try:
        with frozen(model):
            for batch, (rows, held) in tqdm(list(zip(batches, _token_masks(batches, skip_first, held_out, seed))),
                                            desc="compensation statistics", unit="batch", disable=not progress):
                acc.batch(rows, held)
                try:
                    model(**model_inputs(model, batch))
                except _Stop:
                    pass
    finally:
        acc.close()
    return acc.result()


@torch.no_grad()
def _block_calls(model: nn.Module, family: Family, batches: Sequence[Batch]
                 ) -> tuple[list[torch.Tensor], list[list[tuple[tuple, dict]]]]:
    """One dense forward pass per batch recording the hidden states entering the first block and every
    block's other arguments (masks, rotary embeddings: references, shared across blocks), so that block
    ``ℓ`` can be run alone on the states the pruned blocks below it give."""
    blocks = family.blocks(model)
    hidden: list[torch.Tensor] = []
    calls: list[list[tuple[tuple, dict]]] = []

    def hook(index: int):
        def fn(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            if index == 0:
                hidden.append(args[0])
                calls.append([])
            calls[-1].append((args[1:], kwargs))
        return fn

    handles = [b.register_forward_pre_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    extra = {"use_cache": False} if family.causal else {}  # no key-value cache to grow when a block is replayed
    try:
        with frozen(model):
            for batch in batches:
                model(**model_inputs(model, batch), **extra)
    finally:
        for h in handles:
            h.remove()
    return hidden, calls


def _run_block(block: nn.Module, hidden: torch.Tensor, call: tuple[tuple, dict]) -> torch.Tensor:
    out = block(hidden, *call[0], **call[1])
    return out[0] if isinstance(out, tuple) else out


@dataclass
class LayerFix:
    """A layer's compensated ``down``: the kept columns, the bias, and what the guard measured."""

    weight: torch.Tensor  # hidden × |S|, float64
    bias: torch.Tensor  # hidden, float64
    mode: str  # the compensation applied ("none" where the guard refused it)
    ridge: float | None  # λ / mean(diag Σ_SS) of least-squares (inf: bias compensation won)
    error_none: float  # held-out mean ‖y' − y‖² per token without compensation
    error: float  # … with the compensation applied (= error_none where refused)

    def summary(self) -> dict:
        return {"mode": self.mode, "ridge": self.ridge, "error_none": self.error_none, "error": self.error}


def partners_from_similarity(similarity: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Each neuron's partner among the kept ones: itself if kept, else the kept neuron it is most
    similar to (the row's maximum over the kept columns)."""
    S = np.asarray(similarity, dtype=np.float64)
    keep = np.asarray(keep)
    partner = keep[np.argmax(S[:, keep], axis=1)]
    partner[keep] = keep
    return partner


def _delta(W: torch.Tensor, keep: torch.Tensor, removed: torch.Tensor, weight: torch.Tensor,
           bias_change: torch.Tensor) -> torch.Tensor:
    """``[W'_S − W_S | −W_R | b' − b]`` as one hidden × (D + 1) matrix (columns in neuron order)."""
    delta = torch.zeros(W.shape[0], W.shape[1] + 1, dtype=torch.float64, device=W.device)
    delta[:, keep] = weight - W[:, keep]
    delta[:, removed] = -W[:, removed]
    delta[:, -1] = bias_change
    return delta


@torch.no_grad()
def fix_layer(weight: torch.Tensor, bias: torch.Tensor | None, keep: Sequence[int], stats: LayerStats, mode: str,
              partners: np.ndarray | None = None, ridge: Sequence[float] = RIDGE) -> LayerFix:
    """The compensated ``down`` of one layer (module docstring), guarded on the held-out tokens."""
    if mode not in COMPENSATIONS:
        raise ValueError(f"compensation must be one of {', '.join(COMPENSATIONS)}; got {mode!r}")
    W = weight.detach().double().to(stats.fit.device)
    b = torch.zeros(W.shape[0], dtype=torch.float64, device=W.device) if bias is None else bias.detach().double().to(W.device)
    D = W.shape[1]
    keep = torch.as_tensor(np.sort(np.asarray(keep)), dtype=torch.long, device=W.device)
    removed_mask = torch.ones(D, dtype=torch.bool, device=W.device)
    removed_mask[keep] = False
    removed = removed_mask.nonzero().flatten()
    zero = torch.zeros_like(b)
    error_none = stats.held_error(_delta(W, keep, removed, W[:, keep], zero))
    none = LayerFix(W[:, keep].clone(), b.clone(), "none", None, error_none, error_none)
    if mode == "none" or len(removed) == 0:
        return none
    mu, W_R = stats.mean, W[:, removed]
    base_bias = W_R @ mu[removed]  # the removed neurons' mean output: bias compensation
    candidates: list[tuple[float | None, torch.Tensor, torch.Tensor]] = []
    if mode == "bias":
        candidates.append((None, W[:, keep], base_bias))
    elif mode == "least-squares":
        candidates.append((float("inf"), W[:, keep], base_bias))
        cov = stats.cov
        Sigma_SS, B = cov[keep][:, keep], W_R @ cov[removed][:, keep]
        scale = float(Sigma_SS.diagonal().mean().clamp(min=1e-30))
        eye = torch.eye(len(keep), dtype=torch.float64, device=W.device)
        for r in ridge:
            L, info = torch.linalg.cholesky_ex(Sigma_SS + r * scale * eye)
            if info.item() != 0:
                continue
            change = torch.cholesky_solve(B.T, L).T  # W_R Σ_RS (Σ_SS + λI)⁻¹
            candidates.append((r, W[:, keep] + change, base_bias - change @ mu[keep]))
    else:  # merge
        if partners is None:
            raise ValueError("merge needs each removed neuron's partner (a method with a similarity map)")
        p = torch.as_tensor(np.asarray(partners)[removed.cpu().numpy()], dtype=torch.long, device=W.device)
        cov = stats.cov
        var_p = cov[p, p]
        s = torch.where(var_p > 0, cov[removed, p] / var_p.clamp(min=1e-300), torch.zeros_like(var_p))
        full = W.clone()
        full.index_add_(1, p, W_R * s)  # each removed column, scaled, onto its partner's
        candidates.append((None, full[:, keep], W_R @ (mu[removed] - s * mu[p])))
    best = none
    for r, new_w, new_b in candidates:
        error = stats.held_error(_delta(W, keep, removed, new_w, new_b))
        if error < best.error:
            best = LayerFix(new_w, b + new_b, mode, r, error_none, error)
    return best


def _set_down(family: Family, model: nn.Module, layer: int, fix: LayerFix) -> None:
    down = family.down(family.blocks(model)[layer])
    if down.bias is None and bool(fix.bias.any()):
        family.ensure_down_bias(model)  # a bias to compensate into, recorded so that the model reloads
        down = family.down(family.blocks(model)[layer])
    with torch.no_grad():
        down.weight.copy_(fix.weight.to(down.weight.dtype))
        if down.bias is not None:
            down.bias.copy_(fix.bias.to(down.bias.dtype))


@torch.no_grad()
def compensate(model: nn.Module, keep: Sequence[np.ndarray], batches: Sequence[Batch],
               settings: Compensation = Compensation(), partners: Sequence[np.ndarray] | None = None,
               stats: dict[int, LayerStats] | None = None, seed: int = 0,
               progress: bool = False) -> tuple[nn.Module, list[LayerFix]]:
    """Remove every FFN neuron not in ``keep`` from ``model`` (in place) and compensate the kept weights.

    ``partners`` (per layer, from :func:`partners_from_similarity`) is needed by ``merge``; ``stats``
    are the dense model's statistics of any layers already collected (reused by ``fit="dense"``).
    Returns the model and one :class:`LayerFix` per layer (none for ``mode="none"``, which is
    exactly :meth:`~minilib.models.families.Family.prune`).
    """
    family = family_of(model)
    settings = settings.resolved(family)
    sizes = family.sizes(model)
    if len(keep) != len(sizes):
        raise ValueError(f"keep has {len(keep)} entries but the model has {len(sizes)} layers; give one per layer")
    if settings.mode == "none":
        return family.prune(model, keep), []
    if settings.mode == "merge" and partners is None:
        raise ValueError("merge compensation needs each removed neuron's partner: use it with a method that has a "
                         "similarity map (mi-mds, mi-alg1, pcc-mds …)")
    layers = list(range(len(sizes)))
    options = dict(skip_first=settings.skip_first, held_out=settings.held_out, seed=seed, progress=progress)
    blocks = family.blocks(model)
    fixes: dict[int, LayerFix] = {}
    if settings.fit == "sequential":  # each layer fitted on what the pruned, compensated layers below give it
        with frozen(model):
            hidden, calls = _block_calls(model, family, batches)
            masks = _token_masks(batches, settings.skip_first, settings.held_out, seed)
            for i in tqdm(layers, desc="compensation", unit="layer", disable=not progress):
                acc = _Accumulator(family, blocks, [i], stop=False)
                try:
                    for n, (rows, held) in enumerate(masks):
                        acc.batch(rows, held)
                        _run_block(blocks[i], hidden[n], calls[n][i])
                finally:
                    acc.close()
                down = family.down(blocks[i])
                fixes[i] = fix_layer(down.weight, down.bias, keep[i], acc.result()[i], settings.mode,
                                     None if partners is None else partners[i], settings.ridge)
                family.prune(model, {i: keep[i]})
                _set_down(family, model, i, fixes[i])
                hidden = [_run_block(blocks[i], h, calls[n][i]) for n, h in enumerate(hidden)]
        return model, [fixes[i] for i in layers]
    size = max(1, int(settings.max_bytes // (16.0 * (max(sizes) + 1) ** 2)))
    groups = [layers[i:i + size] for i in range(0, len(layers), size)]
    for group in tqdm(groups, desc="compensation", unit="layer group", disable=not progress or len(groups) < 2):
        reuse = stats is not None and all(i in stats for i in group)
        got = stats if reuse else collect_stats(model, batches, group, **options)
        for i in group:
            down = family.down(blocks[i])
            fixes[i] = fix_layer(down.weight, down.bias, keep[i], got[i], settings.mode,
                                 None if partners is None else partners[i], settings.ridge)
        del got
    family.prune(model, keep)  # every layer was fitted on the dense model: prune them all now
    for i in layers:
        _set_down(family, model, i, fixes[i])
    return model, [fixes[i] for i in layers]


@torch.no_grad()
def greedy_elimination(weight: torch.Tensor, stats: LayerStats, keep: int, ridge: float = 1e-3) -> np.ndarray:
    """The neurons to keep, chosen by what the least-squares refit cannot recover (OSSCAR, SlimGPT).

    Backward elimination on ``E(S) = min_{W'} tr((W' − W) H (W' − W)ᵀ)`` over ``W'`` zero outside ``S``,
    ``H = Σ + λI`` (``Σ`` the centred covariance, so the bias takes the means; ``λ`` = ``ridge`` times the
    mean of ``diag Σ``). Removing neuron ``j`` with the others refitted costs ``‖w_j‖² / [H⁻¹]_jj`` (the
    optimal-brain-surgeon step); the cheapest is removed, then ``W`` and ``H⁻¹`` get the rank-one updates
    ``W ← W − w_j [H⁻¹]_j,: / [H⁻¹]_jj`` and ``H⁻¹ ← H⁻¹ − [H⁻¹]_:,j [H⁻¹]_j,: / [H⁻¹]_jj``.
    Cost: one D×D inverse, then ``O(D² + hidden·D)`` per removed neuron.
    """
    W = weight.detach().double().to(stats.fit.device).clone()
    cov = stats.cov
    D = W.shape[1]
    if not 1 <= keep <= D:
        raise ValueError(f"keep must be between 1 and {D}, got {keep}")
    H = cov + ridge * float(cov.diagonal().mean().clamp(min=1e-30)) * torch.eye(D, dtype=torch.float64,
                                                                                   device=cov.device)
    G = torch.cholesky_inverse(torch.linalg.cholesky(H))
    alive = torch.ones(D, dtype=torch.bool, device=W.device)
    for _ in range(D - keep):
        cost = W.pow(2).sum(0) / G.diagonal().clamp(min=1e-300)
        cost[~alive] = float("inf")
        j = int(cost.argmin())
        g = G[j] / G[j, j]  # a new tensor: the updates below do not alias it
        W.addr_(W[:, j].clone(), g, alpha=-1.0)
        G.addr_(G[:, j].clone(), g, alpha=-1.0)
        W[:, j], G[j], G[:, j] = 0.0, 0.0, 0.0
        alive[j] = False
    return np.flatnonzero(alive.cpu().numpy())
