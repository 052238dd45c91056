"""Importance scores of FFN neurons for every peer of the paper, on any family (chapters 5 and 7).

Every scorer returns one float64 array per block, **higher = more important**; :func:`keep_top`
turns scores into keep-sets. With ``a`` the neuron's activation (:mod:`minilib.models.families`):

=========================  =====================================================================
``random_scores``          uniform noise (the book averages several seeds)
``magnitude_scores``       the family's weight norm: ``‖W1[j,:]‖₁`` for an encoder (Li et al.),
                           ``‖gate_j‖₁ + ‖up_j‖₁ + ‖down_{:,j}‖₁`` for a gated MLP
``taylor_scores``          TextPruner's first-order Taylor score ``|Σ_batch Σ_tokens a_j ∂L/∂a_j|``
                           per batch, summed over batches; ``L`` = the task loss (``"supervised"``;
                           a decoder's is the next-token cross-entropy) or the model's own argmax
                           class as the label (``"self"``)
``fisher_scores``          Kwon et al.'s Fisher information of a neuron mask, ``Σ_i (∂L_i/∂m_j)²``
``token_taylor_scores``    ``Σ_samples Σ_tokens |a_j ∂L/∂a_j|``: with ``L = H``, the entropy of the
                           output distributions, it is **HFPrune** (seed 002); with the supervised
                           loss it is the first-order criterion of LLM-Pruner, |·| per token
``wanda_scores``           Wanda's ``|W|·‖X‖`` for the neuron's ``down`` column: ``‖down_{:,j}‖₁·‖a_j‖₂``
``flap_scores``            FLAP's fluctuation ``Var(a_j)·‖down_{:,j}‖₂²`` (chapter 9)
``kcm_scores``             KCM's R2D2 (Nova et al., 2023): how hard the neuron's ``down`` column is to
                           express by the others (kernelised convex hull) × its mean activation
=========================  =====================================================================

All gradient scores come from :func:`minilib.models.hooks.gradient_pass`. Products are accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from minilib.estimator.entropy import squared_distances
from minilib.models.families import Family, family_of, model_inputs, token_grid
from minilib.models.hooks import capture_activations, gradient_pass

Scores = list[np.ndarray]
Batch = Mapping[str, torch.Tensor]

__all__ = ["Scores", "keep_top", "keep_fraction", "objective", "random_scores", "magnitude_scores", "taylor_scores",
           "fisher_scores", "token_taylor_scores", "token_moments", "wanda_scores", "flap_scores", "representative_ranking", "kcm_scores",
           "fisher_matrices", "rearrange_mask", "least_squares_tuning"]


def keep_top(scores: Scores, keep: int | Sequence[int]) -> list[np.ndarray]:
    """The sorted indices of the ``keep`` highest-scoring neurons of each layer (ties: lower index)."""
    keep = [keep] * len(scores) if isinstance(keep, (int, np.integer)) else list(keep)
    if len(keep) != len(scores):
        raise ValueError(f"keep has {len(keep)} counts for {len(scores)} layers")
    out = []
    for layer, (s, k) in enumerate(zip(scores, keep)):
        s = np.asarray(s, dtype=np.float64)
        if not 1 <= k <= len(s):
            raise ValueError(f"layer {layer}: keep must be between 1 and {len(s)}, got {k}")
        if not np.isfinite(s).all():
            raise ValueError(f"layer {layer}: scores contain NaN or inf (a float16 overflow?); score in float32")
        out.append(np.sort(np.argsort(-s, kind="stable")[:k]))
    return out


def keep_fraction(size: int, keep: float) -> int:
    """``round(keep · size)`` neurons, refusing fractions outside (0, 1] and counts that round to 0."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep is the fraction of each layer's FFN neurons kept, in (0, 1]; got {keep}")
    n = round(keep * size)
    if n < 1:
        raise ValueError(f"keep={keep} of {size} neurons rounds to 0; keep at least {0.5 / size:.2g}")
    return n


def objective(kind: str, family: Family):
    """The scalar ``L(model, batch)`` of a gradient score: ``"supervised"``, ``"self"`` or ``"entropy"``."""
    if kind == "supervised":
        return family.supervised_loss

    def from_distribution(model: nn.Module, batch: Batch) -> torch.Tensor:
        logp, valid = family.output_distribution(model, batch)
        if kind == "self":  # the model's own most likely class (or next token) as the label
            nll = -logp.gather(-1, logp.argmax(-1, keepdim=True).detach()).squeeze(-1)
            return (nll if valid is None else nll * valid).sum()
        if kind == "entropy":
            h = -(logp.exp() * logp)
            return (h if valid is None else h * valid[..., None]).sum()
        raise ValueError(f"unknown objective {kind!r}; use 'supervised', 'self' or 'entropy'")
    return from_distribution


def random_scores(sizes: Sequence[int], seed: int = 0) -> Scores:
    """Uniform random scores: a random keep-set of every size."""
    rng = np.random.default_rng(seed)
    return [rng.random(n) for n in sizes]


def magnitude_scores(model: nn.Module) -> Scores:
    """The family's weight magnitude of each neuron (:meth:`minilib.models.families.Family.magnitude`)."""
    family = family_of(model)
    return [family.magnitude(b).double().cpu().numpy() for b in family.blocks(model)]


def _totals(model: nn.Module, family: Family) -> list[torch.Tensor]:
    return [torch.zeros(n, dtype=torch.float64) for n in family.sizes(model)]


def taylor_scores(model: nn.Module, batches: Iterable[Batch], labels: str = "supervised",
                  progress: bool = False) -> Scores:
    """TextPruner's first-order Taylor score; ``labels`` is ``"supervised"`` or ``"self"``."""
    if labels not in ("supervised", "self"):
        raise ValueError(f"labels must be 'supervised' or 'self', got {labels!r}")
    family = family_of(model)
    total = _totals(model, family)

    def add(layer, _a, _ga, gm, _mask):
        total[layer] += gm.sum(0).double().abs()  # |Σ over the batch|, as TextPruner accumulates it

    gradient_pass(model, batches, objective(labels, family), add, family, f"{labels} Taylor", progress)
    return [t.numpy() for t in total]


def fisher_scores(model: nn.Module, batches: Iterable[Batch], progress: bool = False) -> Scores:
    """Kwon et al.'s (2022) Fisher information of the neuron masks: ``Σ_i (∂L_i/∂m_j)²`` (supervised)."""
    family = family_of(model)
    total = _totals(model, family)

    def add(layer, _a, _ga, gm, _mask):
        total[layer] += (gm.double() ** 2).sum(0)

    gradient_pass(model, batches, objective("supervised", family), add, family, "Fisher", progress)
    return [t.numpy() for t in total]


def token_taylor_scores(model: nn.Module, batches: Iterable[Batch], kind: str = "entropy",
                        progress: bool = False) -> Scores:
    """``Σ_samples Σ_tokens |a_j ∂L/∂a_j|``; ``kind="entropy"`` is HFPrune, ``"supervised"`` CE-Taylor.

    Padding tokens add nothing without a mask here: the objective reads real positions only and no
    real position attends to a padded one, so ``∂L/∂a`` is exactly 0 at padded positions, and a padded
    batch scores the same as its sentences one by one (tested on an encoder and a decoder).
    """
    family = family_of(model)
    total = _totals(model, family)

    def add(layer, a, ga, _gm, _mask):
        total[layer] += (a.double() * ga.double()).abs().sum((0, 1))

    gradient_pass(model, batches, objective(kind, family), add, family, f"{kind} token Taylor", progress)
    return [t.numpy() for t in total]


@torch.inference_mode()
def token_moments(model: nn.Module, batches: Iterable[Batch]) -> list[torch.Tensor]:
    """Per block, ``(n, Σ a_j, Σ a_j²)`` over every non-padding calibration token: a (3, D) float64 tensor."""
    family = family_of(model)
    blocks = family.blocks(model)
    sums = [torch.zeros(3, n, dtype=torch.float64) for n in family.sizes(model)]
    current: list[Batch] = []

    def hook(index: int):
        def fn(_m, args):
            a = token_grid(args[0], current[0]["input_ids"].shape).double().cpu()
            mask = current[0].get("attention_mask")
            rows = a.reshape(-1, a.shape[-1]) if mask is None else a[mask.bool()]
            sums[index] += torch.stack([torch.full_like(rows[0], len(rows)), rows.sum(0), rows.pow(2).sum(0)])
        return fn

    handles = [family.down(b).register_forward_pre_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        for batch in batches:
            current[:] = [batch]
            model(**model_inputs(model, batch))
    finally:
        for h in handles:
            h.remove()
    return sums


def wanda_scores(model: nn.Module, batches: Iterable[Batch]) -> Scores:
    """Wanda's ``‖down_{:,j}‖₁ · ‖a_j‖₂`` over every (non-padding) calibration token."""
    family = family_of(model)
    return [(family.down(b).weight.detach().abs().sum(0).double().cpu() * m[2].sqrt()).numpy()
            for b, m in zip(family.blocks(model), token_moments(model, batches))]


def flap_scores(model: nn.Module, batches: Iterable[Batch]) -> Scores:
    """FLAP's fluctuation (An et al., AAAI 2024): ``Var(a_j) · ‖down_{:,j}‖₂²`` over the calibration tokens,
    how much the block's output moves when the neuron is replaced by its mean (which bias
    compensation then adds back)."""
    family = family_of(model)
    out = []
    for b, (n, s1, s2) in zip(family.blocks(model), token_moments(model, batches)):
        var = (s2 / n - (s1 / n) ** 2).clamp(min=0.0)
        out.append((family.down(b).weight.detach().double().cpu().pow(2).sum(0) * var).numpy())
    return out


def representative_ranking(points: np.ndarray, sigma: float | None = None, tol: float = 1e-3,
                           max_iter: int = 1000) -> np.ndarray:
    """KCM's representative ranking (R2): ``diag(C)`` of a kernelised convex-hull fit of the rows.

    With the RBF kernel ``K_ij = exp(−‖x_i − x_j‖² / (2σ²))`` (``σ`` = the median pairwise
    distance when ``None``), ``C ≥ 0`` starts at ``1/n`` and follows the multiplicative update
    ``C ← C ⊙ sqrt(K / (K C))`` (which drives ``K C`` towards ``K``: every point written as a
    combination of the others) until the relative change ``|Σ ΔC| / Σ|C|`` falls below ``tol``.
    A point that the others cannot express (a vertex of the hull) has to keep a large weight on
    itself: high ``C_ii`` = representative. The ranking settles long before ``C`` converges, so
    the early stop is part of the method (as in the K-prune authors' re-implementation).
    """
    X = np.asarray(points, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2 or not np.isfinite(X).all():
        raise ValueError(f"points must be a finite (n ≥ 2) × dims array, got shape {X.shape}")
    D2 = squared_distances(torch.from_numpy(X)).numpy()
    if sigma is None:
        sigma = float(np.median(np.sqrt(D2[~np.eye(len(X), dtype=bool)])))
    if not sigma > 0:
        raise ValueError("all points coincide (median distance 0); pass a positive sigma")
    K = np.exp(-D2 / (2 * sigma**2))
    C = np.full_like(K, 1.0 / len(X))
    for _ in range(max_iter):
        KC = K @ C  # 0 only where K is 0 too (far-apart points): those weights stay 0
        new = C * np.sqrt(np.divide(K, KC, out=np.zeros_like(K), where=KC > 0))
        change = abs((new - C).sum()) / np.abs(C).sum()
        C = new
        if change < tol:
            break
    return np.diag(C).copy()


def kcm_scores(model: nn.Module, batches: Iterable[Batch], sigma: float | None = None, tol: float = 1e-3) -> Scores:
    """KCM's R2D2 score (Nova et al., ICML 2023), label-free and gradient-free.

    R2 = :func:`representative_ranking` of the neurons' output weight vectors (``down``'s columns);
    D2 = the neuron's mean activation over the calibration tokens. The two are combined by their
    ranks (mean of the normalised ranks, our reading of "R2D2 combines the ranks"): a neuron is
    kept if it is both hard to replace and active.
    """
    family = family_of(model)
    acts = capture_activations(model, batches, "tokens", family)
    out = []
    for block, a in zip(family.blocks(model), acts):
        r2 = representative_ranking(family.down(block).weight.detach().double().cpu().T.numpy(), sigma, tol)
        d2 = a.double().mean(0).numpy()
        out.append((rankdata(r2) + rankdata(d2)) / (2 * len(r2)))
    return out


def fisher_matrices(model: nn.Module, batches: Iterable[Batch], progress: bool = False) -> list[np.ndarray]:
    """Each layer's empirical Fisher of the neuron masks, ``F = Σ_i g_i g_iᵀ`` (its diagonal is
    :func:`fisher_scores`); Kwon et al.'s mask rearrangement reads the off-diagonal terms."""
    family = family_of(model)
    total = [torch.zeros(n, n, dtype=torch.float64) for n in family.sizes(model)]

    def add(layer, _a, _ga, gm, _mask):
        g = gm.double()
        total[layer] += g.T @ g

    gradient_pass(model, batches, objective("supervised", family), add, family, "Fisher matrices", progress)
    return [t.numpy() for t in total]


def rearrange_mask(keep: np.ndarray, fisher: np.ndarray, max_swaps: int = 10_000) -> np.ndarray:
    """Kwon et al.'s (2022) mask rearrangement within one layer, as a greedy swap search.

    The loss increase of pruning the set ``P`` is approximated by ``1_Pᵀ F 1_P`` (the Fisher
    block of the layer, not just its diagonal). Starting from ``keep``, the (pruned, kept) swap
    that lowers it most is made until none does; the number kept never changes.
    """
    F = np.asarray(fisher, dtype=np.float64)
    kept = np.zeros(len(F), bool)
    kept[np.asarray(keep)] = True
    diag = np.diag(F)
    for _ in range(max_swaps):
        P, K = np.flatnonzero(~kept), np.flatnonzero(kept)
        if not len(P) or not len(K):
            break
        u = F[:, P].sum(1)  # F 1_P
        # swapping pruned p back in and kept q out changes the loss by:
        delta = (-2 * u[P] + diag[P])[:, None] + (2 * u[K] + diag[K])[None, :] - 2 * F[np.ix_(P, K)]
        p, q = np.unravel_index(np.argmin(delta), delta.shape)
        if delta[p, q] >= -1e-12 * max(1.0, abs(u[P]).max()):
            break
        kept[P[p]], kept[K[q]] = True, False
    return np.flatnonzero(kept)


@torch.no_grad()
def least_squares_tuning(dense: nn.Module, pruned: nn.Module, batches: Iterable[Batch],
                         ridge: float = 1e-4) -> nn.Module:
    """Kwon et al.'s mask tuning: rescale each kept neuron so every pruned FFN reproduces the dense one.

    Block by block, with the inputs the *pruned* model gives that block's FFN and the dense FFN's
    output on the same input as the target, the scales ``m`` minimise
    ``Σ_tokens ‖Σ_j m_j a_j down[:, j] − y‖²``, a linear least-squares problem whose normal
    equations are ``(C ⊙ downᵀdown) m = r`` with ``C = Σ a aᵀ``; ``ridge`` (times the mean
    diagonal) keeps them well posed. The scales are folded into ``down``'s columns, in place;
    returns ``pruned``.
    """
    batches = list(batches)
    family = family_of(pruned)
    pruned.eval()
    for block_d, block_p in zip(family.blocks(dense), family.blocks(pruned)):
        down_p, down_d = family.down(block_p), family.down(block_d)
        kept_w = down_p.weight.double()  # (hidden, kept)
        C = torch.zeros(kept_w.shape[1], kept_w.shape[1], dtype=torch.float64, device=kept_w.device)
        r = torch.zeros(kept_w.shape[1], dtype=torch.float64, device=kept_w.device)
        captured: dict[str, torch.Tensor] = {}
        hooks = [family.ffn_input(block_p).register_forward_hook(lambda _m, i, _o: captured.update(x=i[0])),
                 down_p.register_forward_pre_hook(lambda _m, i: captured.update(a=i[0]))]
        try:
            for b in batches:
                pruned(**model_inputs(pruned, b))
                mask, shape = b.get("attention_mask"), b["input_ids"].shape
                rows = (torch.ones(shape, dtype=torch.bool) if mask is None else mask.bool()).to(captured["a"].device)
                a = token_grid(captured["a"], shape)[rows].double()  # (tokens, kept), the pruned model's activations
                y = token_grid(down_d(family.activation(block_d, captured["x"])), shape)[rows].double()  # dense FFN
                if down_p.bias is not None:
                    y = y - down_p.bias.double()
                C += a.T @ a
                r += ((a.T @ y) * kept_w.T).sum(1)
        finally:
            for h in hooks:
                h.remove()
        G = C * (kept_w.T @ kept_w)
        G += ridge * G.diagonal().mean() * torch.eye(len(G), dtype=torch.float64, device=G.device)
        m = torch.linalg.solve(G, r)
        down_p.weight.mul_(m.to(down_p.weight.dtype)[None, :])
    return pruned
