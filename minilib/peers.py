"""Importance scores of FFN neurons for the peers of the paper's Table 2 (method notes, peers table).

Every scorer returns one array per layer, **higher = more important**; :func:`keep_top` turns
scores into keep-sets for :func:`minilib.surgery.prune_ffn`. Which peers read labels:

=====================  ========================================================================
``random_scores``      none: uniform noise (the book averages 10 seeds)
``magnitude_scores``   none: ``‖W1[j, :]‖₁``, the L1 norm of the neuron's input weights (Li et al.)
``taylor_scores``      supervised (task loss) or self-supervised (the model's own predicted
                       class as the label): TextPruner's first-order Taylor score
                       ``|Σ W2[:, j] ⊙ ∂L/∂W2[:, j]|`` per batch, summed over batches
``fisher_scores``      supervised: Kwon et al.'s Fisher information of a neuron mask,
                       ``Σ_samples (∂L_i/∂m_j)²``
``entropy_taylor_scores``  none: HFPrune's ``Σ_samples Σ_tokens |a_j · ∂H/∂a_j|`` with ``H`` the
                       entropy of the predicted class distribution (seed 002)
``kcm_scores``         none: KCM's R2D2 (Nova et al., 2023), gradient-free: how well a neuron's
                       output weights represent the others' (kernelised convex hull, R2) combined
                       with its mean activation on unlabelled text (D2)
=====================  ========================================================================

All gradient scores come from one mechanism: a forward hook multiplies each layer's post-GELU
activations ``a`` (batch × tokens × neurons) by a mask ``m`` of ones (one row per sample), so
``∂L/∂m_j`` of sample ``i`` is ``Σ_tokens a_j ∂L_i/∂a_j`` (TextPruner's sum over ``W2``'s column
equals it), and ``a``'s own gradient gives the per-token terms HFPrune needs. The self-supervised
Taylor score and HFPrune need a class distribution, so they refuse the STS-B regression task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn
from tqdm.auto import tqdm

from .activations import capture_ffn_activations, encoder_layers, ffn_layers
from .entropy import squared_distances
from .surgery import ffn_sizes

Scores = list[np.ndarray]

__all__ = ["frozen", "keep_top", "random_scores", "magnitude_scores", "taylor_scores", "fisher_scores",
           "entropy_taylor_scores", "representative_ranking",
           "kcm_scores", "fisher_matrices", "rearrange_mask", "least_squares_tuning"]


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
        if np.isnan(s).any():
            raise ValueError(f"layer {layer}: scores contain NaN")
        out.append(np.sort(np.argsort(-s, kind="stable")[:k]))
    return out


def random_scores(sizes: Sequence[int], seed: int = 0) -> Scores:
    """Uniform random scores: a random keep-set of every size."""
    rng = np.random.default_rng(seed)
    return [rng.random(n) for n in sizes]


def magnitude_scores(model: nn.Module) -> Scores:
    """``‖W1[j, :]‖₁``: the L1 norm of each neuron's row of ``intermediate.dense`` (Li et al., 2017)."""
    return [m.dense.weight.detach().abs().sum(1).double().numpy() for m in ffn_layers(model)]


def _loss(kind: str, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """A per-batch loss, summed over samples so each sample's mask gradient is its own."""
    regression = logits.shape[-1] == 1
    if kind == "supervised":
        if labels is None:
            raise ValueError("supervised scores need labels in every batch")
        if regression:
            return F.mse_loss(logits.squeeze(-1), labels.float(), reduction="sum")
        return F.cross_entropy(logits, labels, reduction="sum")
    if regression:
        raise ValueError(f"the {kind} score needs a class distribution; STS-B is a regression task "
                         "(use a supervised score or a label-free one that does not read the output)")
    if kind == "self":
        return F.cross_entropy(logits, logits.argmax(-1).detach(), reduction="sum")
    if kind == "entropy":
        logp = F.log_softmax(logits, -1)
        return -(logp.exp() * logp).sum()
    raise ValueError(f"unknown loss kind {kind!r}")


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout) and no weight gradients inside the block; both restored afterwards.

    The gradient scores need ``∂L/∂(activation)`` only: freezing the weights spares their gradients
    and guarantees that scoring leaves the model as it was.
    """
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


def _gradient_pass(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], kind: str,
                   accumulate: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None],
                   progress: bool = False) -> None:
    """Forward/backward over ``batches``; calls ``accumulate(layer, a, ∂L/∂a, ∂L/∂m, attention_mask)``.

    The model runs in eval mode (no dropout); its weights get no gradients and are left unchanged.
    """
    modules = ffn_layers(model)
    state: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def hook(index: int):
        def fn(_m: nn.Module, _i: tuple, a: torch.Tensor) -> torch.Tensor:
            mask = torch.ones(a.shape[0], 1, a.shape[-1], requires_grad=True)
            out = a * mask  # equal to a; its gradient is ∂L/∂a, the mask's is Σ_tokens a ∂L/∂a
            state[index] = (a.detach(), out, mask)
            return out
        return fn

    with frozen(model):
        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
        try:
            for batch in tqdm(batches, desc=f"{kind} scores", unit="batch", disable=not progress):
                inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
                with torch.enable_grad():
                    loss = _loss(kind, model(**inputs).logits, batch.get("labels"))
                    layers = sorted(state)
                    grads = torch.autograd.grad(loss, [state[i][1] for i in layers] + [state[i][2] for i in layers])
                for n, i in enumerate(layers):
                    accumulate(i, state[i][0], grads[n], grads[len(layers) + n][:, 0], batch["attention_mask"])
                state.clear()
        finally:
            for h in handles:
                h.remove()


def taylor_scores(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], labels: str = "supervised",
                  progress: bool = False) -> Scores:
    """TextPruner's first-order Taylor score; ``labels`` is ``"supervised"`` or ``"self"``."""
    if labels not in ("supervised", "self"):
        raise ValueError(f"labels must be 'supervised' or 'self', got {labels!r}")
    total = [torch.zeros(n, dtype=torch.float64) for n in ffn_sizes(model)]

    def add(layer, _a, _ga, gm, _mask):
        total[layer] += gm.sum(0).double().abs()  # |Σ over the batch|, as TextPruner accumulates it

    _gradient_pass(model, batches, labels, add, progress)
    return [t.numpy() for t in total]


def fisher_scores(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], progress: bool = False) -> Scores:
    """Kwon et al.'s (2022) Fisher information of the neuron masks: ``Σ_i (∂L_i/∂m_j)²`` (supervised)."""
    total = [torch.zeros(n, dtype=torch.float64) for n in ffn_sizes(model)]

    def add(layer, _a, _ga, gm, _mask):
        total[layer] += (gm.double() ** 2).sum(0)

    _gradient_pass(model, batches, "supervised", add, progress)
    return [t.numpy() for t in total]


def entropy_taylor_scores(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                          progress: bool = False) -> Scores:
    """HFPrune (seed 002): ``Σ_samples Σ_tokens |a_j ∂H/∂a_j|``, H = entropy of the class distribution.

    Label-free. Padding tokens are left out; the products are accumulated in float64.
    """
    total = [torch.zeros(n, dtype=torch.float64) for n in ffn_sizes(model)]

    def add(layer, a, ga, _gm, mask):
        total[layer] += ((a.double() * ga.double()).abs() * mask[..., None]).sum((0, 1))

    _gradient_pass(model, batches, "entropy", add, progress)
    return [t.numpy() for t in total]


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


def kcm_scores(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], sigma: float | None = None,
               tol: float = 1e-3) -> Scores:
    """KCM's R2D2 score (Nova et al., ICML 2023), label-free and gradient-free.

    R2 = :func:`representative_ranking` of the neurons' output weight vectors (``W2[:, j]``); D2 =
    the neuron's mean post-GELU activation over the non-padding tokens of ``batches``. The two
    are combined by their ranks (mean of the normalised ranks, our reading of "R2D2 combines the
    ranks"): a neuron is kept if it is both hard to replace and active.
    """
    acts = capture_ffn_activations(model, batches, "tokens")
    out = []
    for layer, a in zip(encoder_layers(model), acts):
        r2 = representative_ranking(layer.output.dense.weight.detach().double().T.numpy(), sigma, tol)
        d2 = a.double().mean(0).numpy()
        out.append((rankdata(r2) + rankdata(d2)) / (2 * len(r2)))
    return out


def fisher_matrices(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], progress: bool = False
                    ) -> list[np.ndarray]:
    """Each layer's empirical Fisher of the neuron masks, ``F = Σ_i g_i g_iᵀ`` (its diagonal is
    :func:`fisher_scores`); Kwon et al.'s mask rearrangement reads the off-diagonal terms."""
    total = [torch.zeros(n, n, dtype=torch.float64) for n in ffn_sizes(model)]

    def add(layer, _a, _ga, gm, _mask):
        g = gm.double()
        total[layer] += g.T @ g

    _gradient_pass(model, batches, "supervised", add, progress)
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
def least_squares_tuning(dense: nn.Module, pruned: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                         ridge: float = 1e-4) -> nn.Module:
    """Kwon et al.'s mask tuning: rescale each kept neuron so every pruned FFN reproduces the dense one.

    Layer by layer, with the inputs the *pruned* model gives that layer and the dense model's FFN
    output as the target, the scales ``m`` minimise ``Σ_tokens ‖Σ_j m_j a_j W2[:, j] − y‖²``, a
    linear least-squares problem whose normal equations are ``(C ⊙ W2ᵀW2) m = r`` with
    ``C = Σ a aᵀ``; ``ridge`` (times the mean diagonal) keeps them well posed. The scales are folded
    into ``output.dense``'s columns, in place; returns ``pruned``.
    """
    batches = list(batches)
    dense_layers = dense.base_model.encoder.layer
    layers = pruned.base_model.encoder.layer
    for index, (layer_d, layer_p) in enumerate(zip(dense_layers, layers)):
        kept_w = layer_p.output.dense.weight.double()  # (hidden, kept)
        C = torch.zeros(kept_w.shape[1], kept_w.shape[1], dtype=torch.float64)
        r = torch.zeros(kept_w.shape[1], dtype=torch.float64)
        captured: dict[str, torch.Tensor] = {}
        hooks = [layer_p.intermediate.register_forward_hook(lambda _m, i, o: captured.update(a=o, x=i[0]))]
        for b in batches:
            inputs = {k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in b}
            pruned.eval()(**inputs)
            mask = b["attention_mask"].bool()
            a = captured["a"][mask].double()  # (tokens, kept), the pruned model's activations
            y = layer_d.output.dense(layer_d.intermediate(captured["x"]))[mask].double()  # dense FFN, same input
            C += a.T @ a
            r += ((a.T @ (y - layer_p.output.dense.bias.double())) * kept_w.T).sum(1)
        for h in hooks:
            h.remove()
        G = C * (kept_w.T @ kept_w)
        G += ridge * G.diagonal().mean() * torch.eye(len(G), dtype=torch.float64)
        m = torch.linalg.solve(G, r)
        layer_p.output.dense.weight.mul_(m.to(layer_p.output.dense.weight.dtype)[None, :])
    return pruned
