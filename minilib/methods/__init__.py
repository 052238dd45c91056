"""One registry of pruning methods: the paper's and every peer's, for every model family.

A method maps ``(state, keep, seed)`` to one keep-set per block, where ``keep`` is the number of
FFN neurons each block keeps (one number, or one per block: :func:`layer_counts` turns an allocation
into counts) and ``state`` (a :class:`PruningState`) holds what any method may
read: the model, its family, the calibration batches, the MI map and the paper's settings
(:class:`Settings`, documented once). Each :class:`Method` declares what it needs, so a caller
can refuse a method before any expensive step (labels it was not given, a class distribution
that a regression head does not have). Scores, MI maps and MDS fits are computed once per state
and reused by every level of a sweep. A method also names its own compensation and allocation
(FLAP's are part of it), and :func:`check_plan` refuses the combinations that are not defined.
"""

from __future__ import annotations

import copy
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from minilib.methods import allocation as al
from minilib.methods import compensation as cp
from minilib.methods import scores as sc
from minilib.methods import selection
from minilib.models.families import Family, family_of
from minilib.models.hooks import capture_activations
from minilib.estimator.mimap import MIMap, compute_mi_map
from minilib.estimator.pairwise import DEFAULT_TOL

__all__ = ["Settings", "PruningState", "Calibrated", "Method", "METHODS", "NEEDS", "mds_candidates", "kl_choice",
           "kl_dims_sensitivity", "check_method", "check_plan", "layer_counts"]

Batch = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Settings:
    """The choices of the paper's method (§3.3–3.4), with the paper's values where it states them.

    Parameters
    ----------
    alpha
        Rényi order of the MI map (the paper: 1.01).
    widths
        ``"aligned"``, per-neuron kernel widths by alignment with the layer kernel and EMA
        (§3.4, Eqs. 4–8); ``"scott"``, Scott's rule for every neuron (the paper's Fig. 3 variant).
    gamma, beta
        Scott's constant γ (Eq. 4; the paper: 1) and the EMA factor β (Eq. 8; not
        stated, 0.9).
    reduction
        One sample of a neuron per sentence, ``"mean"`` over its tokens, or ``"cls"``, or
        every token (``"tokens"``); ``None`` = ``"mean"`` for encoders, ``"tokens"`` for decoders
        (the paper does not say; chapter 6 compares them).
    mi_batch
        Samples per MI batch (the paper: 100); the MI map averages over batches.
    max_batches
        Use at most this many MI batches (``None``: all).
    mds_seeds
        ``M``, the candidate keep-sets of the subsidiary KL condition (Eq. 2). The paper
        uses 500; 20 is the default here (chapter 6 measures 1, 5, 20, 100).
    n_components
        MDS dimensions (not stated in the paper; 8).
    mds
        ``"smacof"`` (metric MDS, one random start per seed; the book's tables) or ``"classical"``
        (Torgerson's, one eigendecomposition per layer, seed-free: the M candidates then differ only in
        their k-means seeds); see :func:`minilib.methods.selection.mds_embedding`.
    mds_mass
        With classical MDS, keep the fewest axes holding this share of the positive eigenvalue
        mass instead of ``n_components`` (``None``: ``n_components``).
    cluster
        The cluster step. ``"kmedoids"`` (the default): FasterPAM on the distances of Eq. 1
        themselves, one medoid kept per cluster; ``"agglomerative"``: average linkage on the same
        distances, each cluster's medoid kept (:func:`minilib.methods.selection.distance_clusters`);
        ``"kmeans"``: k-means on the ``n_components``-dimensional MDS coordinates, the member nearest
        each centroid kept (the paper's literal pipeline; chapter 8's first tables). Chosen by
        measurement (chapters 4, 6 and 8): the paper asks for the neurons whose information a kept
        neuron carries to go, and k-medoids removes them (the removed neurons' closest kept match
        1.5–2.1× Random's on MiniLM), where 8-D k-means removes the *least* redundant ones (0.3–0.7×).
        ``mi-mds-wanda`` keeps each cluster's highest-Wanda member instead (the importance rule).
    mi_tol
        Certified error bound, in bits, of every entry of the MI map on its low-rank path
        (:func:`minilib.estimator.pairwise.pairwise_mutual_information`; ``None``: exact joint spectra).
    """

    alpha: float = 1.01
    widths: str = "aligned"
    gamma: float = 1.0
    beta: float = 0.9
    reduction: str | None = None
    mi_batch: int = 100
    max_batches: int | None = None
    mds_seeds: int = 20
    n_components: int = 8
    mds: str = "smacof"
    mds_mass: float | None = None
    cluster: str = "kmedoids"
    mi_tol: float | None = DEFAULT_TOL

    def __post_init__(self) -> None:
        if self.widths not in ("aligned", "scott"):
            raise ValueError(f"widths must be 'aligned' or 'scott', got {self.widths!r}")
        if self.mds not in selection.MDS_SOLVERS:
            raise ValueError(f"mds must be one of {selection.MDS_SOLVERS}, got {self.mds!r}")
        if self.mds_mass is not None and (self.mds != "classical" or not 0 < self.mds_mass <= 1):
            raise ValueError(f"mds_mass is a share of the eigenvalue mass in (0, 1] and needs mds='classical'; "
                             f"got mds_mass={self.mds_mass}, mds={self.mds!r}")
        if self.cluster not in selection.CLUSTERINGS:
            raise ValueError(f"cluster must be one of {selection.CLUSTERINGS}, got {self.cluster!r}")
        if self.reduction not in (None, "mean", "cls", "tokens"):
            raise ValueError(f"reduction must be 'mean', 'cls' or 'tokens', got {self.reduction!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0 (the paper: 1.01), got {self.alpha}")
        for name in ("mi_batch", "mds_seeds", "n_components"):
            if getattr(self, name) < (2 if name == "mi_batch" else 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.mi_tol is not None and not self.mi_tol > 0:
            raise ValueError(f"mi_tol must be a positive number of bits or None (exact), got {self.mi_tol}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be ≥ 1 or None, got {self.max_batches}")

    def as_dict(self) -> dict:
        return asdict(self)

    def map_settings(self) -> dict:
        """The settings the MI map depends on (a cache key; the selection's are left out)."""
        selection_only = ("mds_seeds", "n_components", "mds", "mds_mass", "cluster")
        return {k: v for k, v in self.as_dict().items() if k not in selection_only}


class PruningState(ABC):
    """What every method reads. Subclasses provide :attr:`model`, :attr:`batches` and the MI map.

    ``seed`` draws the calibration order; ``settings`` are the paper's choices; ``progress`` shows
    tqdm bars for the long steps (the MI map, the gradient and activation passes of the scores).
    """

    settings: Settings
    seed: int
    progress: bool = False
    model: nn.Module  # provided by subclasses, with batches and compute_mi_map
    batches: list[Batch]
    # which tokens compensation (and lsq-greedy's objective) fits on, and its held-out share (chapter 9)
    fit_options: cp.Compensation = cp.Compensation()

    def __init__(self) -> None:
        self.scores: dict[str, object] = {}  # per-method scores and matrices, computed once
        self.embeddings: dict[tuple[str, int, int], np.ndarray] = {}
        self.maps: dict[str, MIMap] = {}
        self.seconds: dict[str, float] = {}  # wall time of each stage (minilib.estimate's names)
        self._inner: list[float] = []

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of ``stage`` to :attr:`seconds`, less that of the stages timed inside it."""
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed

    @abstractmethod
    def compute_mi_map(self, widths: str) -> MIMap:
        """The MI map with ``"aligned"`` or ``"scott"`` kernel widths (computed once, by :meth:`mi_map_with`)."""

    @cached_property
    def family(self) -> Family:
        return family_of(self.model)

    @property
    def sizes(self) -> list[int]:
        return self.family.sizes(self.model)

    def mi_map_with(self, widths: str) -> MIMap:
        """The MI map with per-neuron ``"aligned"`` widths (the method) or plain ``"scott"`` ones (Fig. 3)."""
        if widths not in self.maps:
            with self.timed("MI map"):
                self.maps[widths] = self.compute_mi_map(widths)
        return self.maps[widths]

    @property
    def mi_map(self) -> MIMap:
        return self.mi_map_with(self.settings.widths)

    def similarity(self, matrix: str) -> tuple[MIMap, np.ndarray]:
        """The map and the similarity the MDS pipeline reads: ``"mi"``, ``"mi-scott"`` or ``"pcc"`` (|r|)."""
        m = self.mi_map_with("scott") if matrix == "mi-scott" else self.mi_map
        return m, np.abs(m.pearson) if matrix == "pcc" else m.mi

    def embedding(self, matrix: str, layer: int, seed: int) -> np.ndarray:
        """MDS coordinates of a layer's live neurons (one fit per seed, reused at every level)."""
        classical = self.settings.mds == "classical"
        key = (matrix, layer, 0 if classical else seed)  # classical MDS does not depend on the seed
        if key not in self.embeddings:
            m, S = self.similarity(matrix)
            live = np.flatnonzero(m.alive[layer])
            self.embeddings[key] = selection.mds_embedding(S[layer][np.ix_(live, live)], self.settings.n_components,
                                                           seed=seed, solver=self.settings.mds,
                                                           mass=self.settings.mds_mass)
        return self.embeddings[key]

    def cached(self, name: str, compute: Callable[[], object]) -> object:
        if name not in self.scores:
            self.scores[name] = compute()
        return self.scores[name]

    @cached_property
    def representation(self) -> torch.Tensor:
        """The dense model's representations of the calibration sample (the ``z_o`` of Eq. 2)."""
        return self.represent(self.model)

    def represent(self, model: nn.Module) -> torch.Tensor:
        batches = self.batches  # built (if lazily) outside inference mode: the gradient scores reuse them
        with torch.inference_mode():
            return torch.cat([self.family.representation(model, b).cpu() for b in batches])

    def pruned(self, keep: Sequence[np.ndarray]) -> nn.Module:
        return self.family.prune(copy.deepcopy(self.model), keep)

    @property
    def fit_batches(self) -> list[Batch]:
        """The batches compensation fits on (chapter 9): the methods' own unless a subclass draws more."""
        return self.batches

    def compensation_stats(self, collect: bool = True) -> dict[int, cp.LayerStats] | None:
        """The dense model's fit and held-out statistics of every layer under :attr:`fit_options`
        (chapter 9), computed once (``collect=False``: only if already computed, else ``None``)."""
        skip_first, held_out = self.fit_options.skip_first, self.fit_options.held_out
        key = f"stats-{skip_first}-{held_out}"
        if not collect:
            return self.scores.get(key)
        def collect() -> dict[int, cp.LayerStats]:
            with self.timed("compensation"):
                return cp.collect_stats(self.model, self.fit_batches, range(len(self.sizes)), skip_first=skip_first,
                                        held_out=held_out, seed=self.seed, progress=self.progress)
        return self.cached(key, collect)


class Calibrated(PruningState):
    """A model and its calibration batches: the state :func:`minilib.prune` builds."""

    def __init__(self, model: nn.Module, batches: Sequence[Batch], settings: Settings | None = None,
                 seed: int = 0, progress: bool = False, cache: str | os.PathLike | None = None) -> None:
        """``cache``: a folder where each MI map is saved once computed and read back after, for a
        map that takes an hour; the caller keys the folder by everything the map depends on."""
        super().__init__()
        self.model, self.batches = model, list(batches)
        self.settings, self.seed, self.progress = settings or Settings(), seed, progress
        self.cache = None if cache is None else Path(cache)

    @cached_property
    def activations(self) -> list[torch.Tensor]:
        """Every block's activations on the calibration sample, rows in a seeded random order."""
        with self.timed("calibration pass"):
            acts = capture_activations(self.model, self.batches, self.settings.reduction, self.family, self.progress)
        perm = torch.as_tensor(np.random.default_rng(self.seed).permutation(acts[0].shape[0]))
        return [a[perm] for a in acts]

    def compute_mi_map(self, widths: str) -> MIMap:
        s = self.settings
        device = next(self.model.parameters()).device  # a model on a GPU gets its MI map computed there
        return MIMap.cached(None if self.cache is None else self.cache / f"mimap-{widths}.npz", lambda: compute_mi_map(
            self.activations, s.mi_batch, s.alpha, max_batches=s.max_batches, widths=widths, tol=s.mi_tol,
            device=device, progress=self.progress, gamma=s.gamma, **({"beta": s.beta} if widths == "aligned" else {})))


# What a method may need (its Method.needs), checked before any expensive step.
NEEDS = {"labels": "labels (a decoder's are its next tokens)", "outputs": "the model's output distribution",
         "gradients": "backward passes", "activations": "FFN activations on the calibration data"}


@dataclass(frozen=True)
class Method:
    """A pruning method: how it is labelled in tables, what it needs, and its keep-set rule.

    Score-based methods give ``score(state, seed)`` (higher = keep) and keep the top neurons;
    the others give ``select(state, keep, seed)`` directly.
    """

    labels: str  # "U" unsupervised, "S" supervised, "Self-S" self-supervised (Table 2's column)
    description: str
    needs: frozenset[str] = frozenset()
    score: Callable[[PruningState, int], sc.Scores] | None = None
    select_rule: Callable[[PruningState, list[int], int], list[np.ndarray]] | None = None  # per-layer counts
    tune: Callable[[PruningState, Sequence[np.ndarray]], nn.Module] | None = None  # retraining-free weight fix
    trials: int = 1  # seeds averaged in the book's tables (10 for Random, as in the paper)
    similarity: str | None = None  # the map a redundancy method reads ("mi", "mi-scott", "pcc"): merge, budget
    compensation: str = "none"  # its own compensation and allocation (FLAP's are part of the method)
    allocation: str = "uniform"

    def __post_init__(self) -> None:
        if (self.score is None) == (self.select_rule is None):
            raise ValueError("a Method gives exactly one of score= and select_rule=")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"unknown needs {sorted(unknown)}; a method may need {sorted(NEEDS)}")

    def select(self, state: PruningState, keep: int | Sequence[int], seed: int = 0) -> list[np.ndarray]:
        """Keep-sets with ``keep`` neurons in every layer, or ``keep[ℓ]`` in layer ``ℓ``."""
        counts = [int(keep)] * len(state.sizes) if isinstance(keep, (int, np.integer)) else [int(k) for k in keep]
        if self.select_rule is not None:
            return self.select_rule(state, counts, seed)
        return sc.keep_top(self.score(state, seed), counts)

    def partners(self, state: PruningState, keep: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        """Each neuron's kept partner by the method's similarity map (what ``merge`` folds it into)."""
        if self.similarity is None:
            return None
        _, S = state.similarity(self.similarity)
        return [cp.partners_from_similarity(S[layer], k) for layer, k in enumerate(keep)]

    @property
    def reads_output(self) -> bool:
        """Reads a class or token distribution: undefined on a regression head such as STS-B's."""
        return "outputs" in self.needs


def _scored(name: str, compute: Callable[[PruningState], sc.Scores]) -> Callable[[PruningState, int], sc.Scores]:
    def score(state: PruningState, _seed: int) -> sc.Scores:
        def run() -> sc.Scores:
            with state.timed("calibration pass"):  # a pass (or a gradient pass) over the calibration data
                return compute(state)
        return state.cached(name, run)
    return score


def mds_candidates(state: PruningState, keep: int | Sequence[int], seeds: Sequence[int], matrix: str = "mi",
                   importance: str | None = None) -> list[list[np.ndarray]]:
    """One keep-set per layer for every seed: the cluster step (§3.3.3; ``Settings.cluster``) on a similarity map.

    ``keep`` is the count of every layer, or one count per layer.

    ``matrix`` is ``"mi"`` (the state's widths), ``"mi-scott"`` (Scott's widths) or ``"pcc"`` (|Pearson r|).
    ``importance`` names a score-based method whose scores pick each cluster's kept member
    (default: the medoid, or with k-means the member nearest the centroid, as in the paper).
    """
    m, S = state.similarity(matrix)
    counts = [keep] * m.n_layers if isinstance(keep, (int, np.integer)) else list(keep)
    weights = METHODS[importance].score(state, 0) if importance else [None] * m.n_layers
    cluster = state.settings.cluster
    with state.timed("selection"):
        return [[selection.mds_select(S[layer], counts[layer], s, alive=m.alive[layer], importance=weights[layer],
                                      embedding=state.embedding(matrix, layer, s) if cluster == "kmeans" else None,
                                      cluster=cluster)
                 for layer in range(m.n_layers)] for s in seeds]


def kl_choice(state: PruningState, candidates: Sequence[Sequence[np.ndarray]],
              dims: int | None = None) -> tuple[int, list[float]]:
    """The subsidiary condition (Eq. 2) on the calibration sample: (winner, every KL)."""
    with state.timed("KL choice"):
        return selection.choose_by_kl(candidates, lambda keep: state.represent(state.pruned(keep)), state.representation,
                                      dims)


def kl_dims_sensitivity(state: PruningState, candidates: Sequence[Sequence[np.ndarray]],
                        dims: Sequence[int | None] = (1, 2, 4, 8, 16, None)) -> pd.DataFrame:
    """:func:`selection.kl_dims_table` for these candidates (each pruned model run once)."""
    reps = [state.represent(state.pruned(keep)) for keep in candidates]
    return selection.kl_dims_table(state.representation, reps, dims)


Rule = Callable[[PruningState, list[int], int], list[np.ndarray]]


def _mds_kl(matrix: str, importance: str | None = None) -> Rule:
    """The proposed pipeline: M seeds of the cluster step, the candidate closest in KL kept."""
    def select(state: PruningState, keep: list[int], seed: int) -> list[np.ndarray]:
        count = 1 if state.settings.cluster == "agglomerative" else state.settings.mds_seeds  # seed-free: one
        candidates = mds_candidates(state, keep, [seed * 100_003 + s for s in range(count)], matrix, importance)
        return candidates[kl_choice(state, candidates)[0]]
    return select


def _algorithm1(state: PruningState, keep: list[int], seed: int) -> list[np.ndarray]:
    m = state.mi_map
    with state.timed("selection"):
        return [selection.algorithm1(m.mi[layer], keep[layer], seed=seed, alive=m.alive[layer])
                for layer in range(m.n_layers)]


def _greedy_reconstruction(state: PruningState, keep: list[int], _seed: int) -> list[np.ndarray]:
    stats = state.compensation_stats()
    return [cp.greedy_elimination(state.family.down(block).weight, stats[layer], keep[layer])
            for layer, block in enumerate(state.family.blocks(state.model))]


def _rearranged_fisher(state: PruningState, keep: list[int], _seed: int) -> list[np.ndarray]:
    F = state.cached("fisher-matrices", lambda: sc.fisher_matrices(state.model, state.batches))
    start = sc.keep_top([np.diag(f) for f in F], keep)
    return [sc.rearrange_mask(k, f) for k, f in zip(start, F)]


def _least_squares(state: PruningState, keep: Sequence[np.ndarray]) -> nn.Module:
    return sc.least_squares_tuning(state.model, state.pruned(keep), state.batches)


GRAD = frozenset({"gradients"})
ACTS = frozenset({"activations"})

#: The one registry of pruning methods: name → :class:`Method` (the paper's, its peers, chapters 5-9).
METHODS: dict[str, Method] = {
    "random": Method("U", "uniformly random neurons", score=lambda state, seed: sc.random_scores(state.sizes, seed),
                     trials=10),
    "magnitude": Method("U", "weight magnitude of the neuron (the family's norm)",
                        score=_scored("magnitude", lambda s: sc.magnitude_scores(s.model))),
    "taylor": Method("S", "TextPruner first-order Taylor, task loss", GRAD | {"labels"},
                     score=_scored("taylor", lambda s: sc.taylor_scores(s.model, s.batches, progress=s.progress))),
    "taylor-self": Method("Self-S", "TextPruner Taylor, the model's own predictions", GRAD | {"outputs"},
                          score=_scored("taylor-self", lambda s: sc.taylor_scores(s.model, s.batches, "self", progress=s.progress))),
    "fisher": Method("S", "Kwon et al. mask Fisher information (no rearrangement or tuning)", GRAD | {"labels"},
                     score=_scored("fisher", lambda s: sc.fisher_scores(s.model, s.batches, progress=s.progress))),
    "mask-tuning": Method("S", "Kwon et al.: Fisher mask, mask rearrangement, least-squares tuning", GRAD | {"labels"},
                          select_rule=_rearranged_fisher, tune=_least_squares),
    "hfprune": Method("U", "HFPrune entropy-Taylor score", GRAD | {"outputs"},
                      score=_scored("hfprune", lambda s: sc.token_taylor_scores(s.model, s.batches, "entropy", progress=s.progress))),
    "taylor-ce": Method("S", "first-order Taylor |a·∂CE/∂a| per token (LLM-Pruner's criterion)", GRAD | {"labels"},
                        score=_scored("taylor-ce", lambda s: sc.token_taylor_scores(s.model, s.batches, "supervised", progress=s.progress))),
    "wanda": Method("U", "Wanda: ‖down column‖₁ · ‖activation‖₂", ACTS,
                    score=_scored("wanda", lambda s: sc.wanda_scores(s.model, s.batches))),
    "kcm": Method("U", "KCM's R2D2: kernelised convex-hull rank of down columns × mean-activation rank", ACTS,
                  score=_scored("kcm", lambda s: sc.kcm_scores(s.model, s.batches))),
    "mi-alg1": Method("U", "proposed: Algorithm 1 on the MI map, calibrated T_r", ACTS, select_rule=_algorithm1,
                      similarity="mi"),
    "pcc-mds": Method("U", "the proposed pipeline with |Pearson r| in place of MI", ACTS, select_rule=_mds_kl("pcc"),
                      similarity="pcc"),
    "mi-mds": Method("U", "proposed: clusters of the MI distances (Settings.cluster), KL among M seeds", ACTS,
                     select_rule=_mds_kl("mi"), similarity="mi"),
    "mi-mds-scott": Method("U", "the proposed pipeline with Scott's widths (Fig. 3)", ACTS,
                           select_rule=_mds_kl("mi-scott"), similarity="mi-scott"),
    # beyond the paper: MI clusters say which neurons are redundant, Wanda which member of each matters
    "mi-mds-wanda": Method("U", "MI clusters (Settings.cluster), each cluster's highest-Wanda member, KL among M seeds",
                           ACTS, select_rule=_mds_kl("mi", importance="wanda"), similarity="mi"),
    # chapter 9: what the leading retraining-free pruners do with what they cut
    "flap": Method("U", "FLAP: fluctuation Var(a)·‖down col‖², standardised global budget, bias compensation", ACTS,
                   score=_scored("flap", lambda s: sc.flap_scores(s.model, s.batches)), compensation="bias",
                   allocation="global"),
    "lsq-greedy": Method("U", "greedy elimination on the least-squares refit's error (OBS updates), then the refit",
                         ACTS, select_rule=_greedy_reconstruction, compensation="least-squares"),
}


def check_method(name: str, has_labels: bool | None = None) -> Method:
    """The registered method ``name``; one line if it is unknown or needs labels that are not there."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    method = METHODS[name]
    if has_labels is False and "labels" in method.needs:
        raise ValueError(f"{name} is supervised and needs labels in the calibration data (a 'label' column, or "
                         "glue:TASK); give labelled data or pick a label-free method such as mi-mds or hfprune")
    return method



def check_plan(name: str, compensation: str | None = None, allocation: str | None = None
               ) -> tuple[Method, str, str]:
    """The method with its compensation and allocation (``None``: the method's own), or one line saying why
    the combination is undefined; checked before any expensive step."""
    method = check_method(name)
    compensation = method.compensation if compensation is None else compensation
    allocation = method.allocation if allocation is None else allocation
    if compensation not in cp.COMPENSATIONS:
        raise ValueError(f"unknown compensation {compensation!r}; choose from {', '.join(cp.COMPENSATIONS)}")
    if allocation not in al.ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}; choose from {', '.join(al.ALLOCATIONS)}")
    redundancy = [n for n, m in METHODS.items() if m.similarity]
    if compensation == "merge" and method.similarity is None:
        raise ValueError(f"merge folds removed neurons into their cluster's kept one, and {name} has no clusters; use "
                         f"merge with {', '.join(redundancy)}, or compensation bias or least-squares")
    if compensation != "none" and method.tune is not None:
        raise ValueError(f"{name} refits its kept weights itself; use it with compensation none")
    if allocation == "global" and method.score is None:
        raise ValueError(f"allocation global ranks scores across layers and {name} has none; use uniform, or "
                         "redundancy for a method with a similarity map")
    if allocation == "redundancy" and method.similarity is None:
        raise ValueError(f"allocation redundancy reads a similarity map and {name} has none; use uniform or global "
                         f"(or a method among {', '.join(redundancy)})")
    return method, compensation, allocation


def layer_counts(state: PruningState, method: str, allocation: str, keep: float,
                 floor: float = al.DEFAULT_FLOOR, seed: int = 0) -> list[int]:
    """How many neurons each layer keeps under ``allocation`` (:mod:`minilib.methods.allocation`)."""
    spec = METHODS[method]
    if allocation == "uniform":
        return al.uniform_counts(state.sizes, keep)
    if allocation == "global":
        return al.global_counts(spec.score(state, seed), keep, floor)
    m, S = state.similarity(spec.similarity)
    return al.budget([al.uniqueness(S[layer], m.alive[layer]) for layer in range(m.n_layers)], keep, floor)
