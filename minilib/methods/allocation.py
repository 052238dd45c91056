"""How many neurons each layer keeps: the pruning budget across layers (chapter 9).

The paper keeps the same fraction in every layer (``"uniform"``, open decision 6 of the book's
introduction). Two budgets let layers differ, for the same total ``K = Σ_ℓ round(keep · D_ℓ)``:

* ``"global"`` (score-based methods; FLAP's adaptive structure): each layer's scores are standardised,
  ``z = (s − mean_ℓ) / std_ℓ``, and the ``K`` highest ``z`` over all layers are kept;
* ``"redundancy"`` (methods with a similarity map, such as the paper's MI): a neuron's *uniqueness* is
  ``u_j = 1 − max_{k≠j} S_jk / S_jj``, the share of its entropy ``S_jj = I(j; j)`` that no other neuron
  of its layer carries (``|r|`` maps have ``S_jj = 1``); dead neurons have ``u = 0``. The ``K`` most
  unique neurons over all layers set each layer's count: a layer full of redundant neurons gives up
  more of them. The method then chooses *which* neurons within each layer, with that count.

Both give every layer at least ``floor · keep · D_ℓ`` neurons (and at least one), so no layer's FFN
is emptied by a score scale that differs across depth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minilib.methods.scores import keep_fraction

__all__ = ["ALLOCATIONS", "DEFAULT_FLOOR", "uniform_counts", "budget", "global_counts", "uniqueness"]

ALLOCATIONS = ("uniform", "global", "redundancy")
DEFAULT_FLOOR = 0.5  # each layer keeps at least half the uniform count


def uniform_counts(sizes: Sequence[int], keep: float) -> list[int]:
    """``round(keep · D_ℓ)`` per layer (the paper's budget)."""
    return [keep_fraction(n, keep) for n in sizes]


def budget(values: Sequence[np.ndarray], keep: float, floor: float = DEFAULT_FLOOR) -> list[int]:
    """Per-layer counts keeping the globally highest ``values`` (comparable across layers), with the floor.

    The total is the uniform one; each layer first gets its floor (its own highest values), then the
    rest of the budget goes to the highest remaining values of any layer (ties: lower layer, lower index).
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor is a fraction of the uniform count, in [0, 1]; got {floor}")
    sizes = [len(v) for v in values]
    total = sum(uniform_counts(sizes, keep))
    counts = [max(1, int(np.floor(floor * keep * n))) for n in sizes]
    rest = []
    for layer, (v, c) in enumerate(zip(values, counts)):
        v = np.asarray(v, dtype=np.float64)
        if not np.isfinite(v).all():
            raise ValueError(f"layer {layer}: scores contain NaN or inf; cannot rank them across layers")
        order = np.argsort(-v, kind="stable")
        rest += [(-v[j], layer, j) for j in order[c:]]
    rest.sort()
    for _, layer, _ in rest[: max(0, total - sum(counts))]:
        counts[layer] += 1
    return counts


def global_counts(scores: Sequence[np.ndarray], keep: float, floor: float = DEFAULT_FLOOR) -> list[int]:
    """FLAP's allocation: scores standardised within each layer, then one ranking across layers."""
    z = []
    for s in scores:
        s = np.asarray(s, dtype=np.float64)
        std = s.std()
        z.append((s - s.mean()) / std if std > 0 else np.zeros_like(s))
    return budget(z, keep, floor)


def uniqueness(similarity: np.ndarray, alive: np.ndarray | None = None) -> np.ndarray:
    """``u_j = 1 − max_{k≠j} S_jk / S_jj`` for one layer (0 for dead neurons and zero self-similarity)."""
    S = np.asarray(similarity, dtype=np.float64)
    self_info = np.diag(S).copy()
    off = S.copy()
    np.fill_diagonal(off, -np.inf)
    shared = off.max(1) if len(S) > 1 else np.zeros(len(S))
    u = np.where(self_info > 0, 1.0 - shared / np.where(self_info > 0, self_info, 1.0), 0.0)
    if alive is not None:
        u = np.where(np.asarray(alive, bool), u, 0.0)
    return np.clip(u, 0.0, 1.0)
