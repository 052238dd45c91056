"""How long a pruning run takes, and how much memory, before running it: ``minilib prune … --estimate``.

The stages of :func:`minilib.prune` and where each one's figure comes from:

=====================  =======================================================================
stage                  predicted from
=====================  =======================================================================
calibration pass       the blocks' multiply-adds (:meth:`~minilib.models.families.Family.macs`,
                       plus a decoder's LM head) over the calibration tokens, at this machine's
                       float32 GEMM rate measured now (one 1,024² product), at :data:`FORWARD_EFFICIENCY`
                       of it; × 3 for the methods that also take gradients
MI map                 the cost model of chapter 3b (:mod:`minilib.estimator.cost`) at the rates
                       of :data:`minilib.estimator.cost.BOOK_CPU_RATES` (real activations), and "up
                       to" at those of the highest-rank layer measured
selection              this method's cluster step timed now on one random layer (at most 1,024
                       neurons, scaled by D²), × layers × M seeds
KL choice              M forward passes of the pruned candidates over the calibration data
compensation           one forward pass for the statistics and a (D+1)³ solve per layer
=====================  =======================================================================

Peak memory is the model's weights plus the largest stage's working set: the captured activations
(samples × D × layers, float32), the MI map's (:func:`~minilib.estimator.pairwise.memory_bytes` and
the stored maps), a compensation layer's float64 statistics.

Measured (``benchmarks/bench_estimate.py``, ``results/bench-estimate.csv``, 2 idle CPU threads at
31a8054; all-MiniLM-L6-v2 with ``wanda`` and with ``mi-mds`` + merge, SmolLM2-135M with ``hfprune``
and ``mi-mds``): every stage within a factor of 4 of its prediction (0.56–4.0; the worst, MiniLM's
compensation, took 9 s for 2.3 s predicted), the totals within 2.3 (0.81–2.3); the MI maps took 0.66
and 0.97 times the typical-rate prediction, well under "up to".
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from minilib.estimator.cost import BOOK_CPU_RATES, BOOK_CPU_RATES_HIGH_RANK, Workload, predict
from minilib.estimator.entropy import squared_distances
from minilib.methods import METHODS, Settings, selection
from minilib.models.families import family_of

__all__ = ["FORWARD_EFFICIENCY", "gemm_rate", "selection_seconds", "estimate"]

# A transformer forward pass on short sequences runs its GEMMs below the large-product peak (small
# matrices, attention, norms, Python); half of it is the working figure (bench_estimate.py checks it).
FORWARD_EFFICIENCY = 0.5
_SELECTION_PROBE = 1024


def gemm_rate(device: torch.device | str = "cpu", size: int = 1024, repeats: int = 3) -> float:
    """Float32 multiply-adds per second of one ``size``² product on ``device`` (the best of ``repeats``)."""
    a = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    best = math.inf
    for _ in range(repeats + 1):  # the first call warms up
        sync()
        t0 = time.perf_counter()
        a @ a
        sync()
        best = min(best, time.perf_counter() - t0)
    return size**3 / best


def selection_seconds(method: str, settings: Settings, neurons: int, keep: float, seed: int = 0) -> float:
    """Seconds of one layer's keep-set rule (one seed) for ``neurons`` neurons, timed on a random map."""
    d = min(neurons, _SELECTION_PROBE)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((d, 16)))
    S = np.exp(-squared_distances(x).numpy())  # a smooth similarity map, 1 on the diagonal
    k = max(1, round(keep * d))
    t0 = time.perf_counter()
    if method == "mi-alg1":
        selection.algorithm1(S, k, seed=seed)
    else:
        embedding = (selection.mds_embedding(S, settings.n_components, seed=seed, solver=settings.mds,
                                             mass=settings.mds_mass) if settings.cluster == "kmeans" else None)
        selection.mds_select(S, k, seed, embedding=embedding, cluster=settings.cluster)
    return (time.perf_counter() - t0) * (neurons / d) ** 2


def estimate(config: Any, method: str, settings: Settings, examples: int, tokens: int, keep: float, *,
             parameters: int, dtype_bytes: int = 4, compensation: str = "none", device: str = "cpu",
             rate: float | None = None) -> pd.DataFrame:
    """Predicted seconds and peak memory (GB) of each stage; one row per stage that this run has.

    ``up_to_seconds`` differs from ``seconds`` for the MI map only: its time at the rate of the
    highest-rank layer measured (the low-rank path slows as the activations' rank grows).

    ``examples`` and ``tokens`` count the calibration data (non-padding tokens); ``parameters`` is the
    model's size; ``rate`` the forward GEMM rate (default: :func:`gemm_rate` measured now).
    """
    family = family_of(config)
    spec = METHODS[method]
    layers, width, hidden = config.num_hidden_layers, family.width(config), config.hidden_size
    seq_len = tokens / max(examples, 1)
    rate = rate or gemm_rate(device)
    head = getattr(config, "vocab_size", 0) * hidden if family.causal else 0
    forward = (family.macs(config, seq_len=seq_len) * examples + head * tokens) / (rate * FORWARD_EFFICIENCY)
    model_gb = parameters * dtype_bytes / 2**30
    per_token = family.causal or settings.reduction == "tokens"
    samples = tokens - examples if family.causal else (tokens if per_token else examples)  # a decoder drops position 0
    rows, acts_gb = [], 0.0

    def row(stage: str, seconds: float, working_gb: float, basis: str, up_to: float | None = None) -> None:
        rows.append({"stage": stage, "seconds": seconds, "up_to_seconds": seconds if up_to is None else up_to,
                     "peak_gb": model_gb + working_gb, "basis": basis})

    grads = "gradients" in spec.needs
    if grads or "activations" in spec.needs:
        acts_gb = 4 * samples * width * layers / 2**30 if "activations" in spec.needs else 0.0
        row("calibration pass", forward * (3 if grads else 1), acts_gb,
            f"{examples:,} examples, {tokens:,} tokens; GEMM {rate / 1e9:.0f} G multiply-adds/s measured now")
    if spec.similarity is not None:
        batches = max(1, samples // settings.mi_batch)
        batches = min(batches, settings.max_batches or batches)
        path = "alpha2" if settings.alpha == 2.0 else ("default" if settings.mi_tol is not None else "exact")
        work = Workload(config.model_type, width, layers, batches, settings.mi_batch)
        p = predict(work, BOOK_CPU_RATES, path)
        row("MI map", p["seconds"], p["memory_gb"] + p["map_gb"] + acts_gb,
            f"{layers} × {width:,} neurons, {batches} batch(es) of {settings.mi_batch}; {BOOK_CPU_RATES.source}; "
            f"up to: {BOOK_CPU_RATES_HIGH_RANK.source}", predict(work, BOOK_CPU_RATES_HIGH_RANK, path)["seconds"])
    if spec.select_rule is not None and spec.similarity is not None:
        seeds = 1 if method == "mi-alg1" or settings.cluster == "agglomerative" else settings.mds_seeds
        one = selection_seconds(method, settings, width, keep)
        row("selection", one * layers * seeds, 8 * 3 * width**2 / 2**30,
            f"{settings.cluster if method != 'mi-alg1' else 'Algorithm 1'} timed now on a random "
            f"{min(width, _SELECTION_PROBE):,}-neuron layer, × {layers} layers × {seeds} seed(s)")
        if method != "mi-alg1":  # the dense representation and each candidate's (blocks only, no head)
            blocks = family.macs(config, seq_len=seq_len) * examples / (rate * FORWARD_EFFICIENCY)
            row("KL choice", blocks * (seeds + 1), 0.0, f"{seeds + 1} forward passes: the dense model and the "
                "pruned candidates (at most dense)")
    if compensation != "none":
        solve = layers * (width + 1) ** 3 / (rate * FORWARD_EFFICIENCY)
        row("compensation", forward + solve, 2 * 8 * (width + 1) ** 2 / 2**30,
            f"one forward pass for the statistics, a {(width + 1):,}² float64 solve per layer")
    table = pd.DataFrame(rows, columns=["stage", "seconds", "up_to_seconds", "peak_gb", "basis"])
    total = pd.DataFrame([{"stage": "total", "seconds": table.seconds.sum(), "up_to_seconds": table.up_to_seconds.sum(),
                           "peak_gb": table.peak_gb.max() if len(table) else model_gb, "basis": ""}])
    return pd.concat([table, total], ignore_index=True)
