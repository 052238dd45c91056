"""Chapters 7–8's runs on a causal LM: block pruning (MI-PRUN vs peers), MLP pruning (the paper's
method, HFPrune and peers), and the zero-shot accuracy of the pruned models.

Every evaluated model is a cell cached as JSON under ``<cache>/lm-runs/<setting>/``, so an
interrupted run resumes where it stopped and identical choices (two methods picking the same
blocks) are evaluated once; the zero-shot table re-reads the sweeps' cached choices. Command line
(the full profile writes the committed tables)::

    python -m minilib.experiments.lm_sweep --profile full --out results
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from minilib.console import ArgumentParser
from minilib.methods import blocks
from minilib.models import lm
from minilib.models import surgery
from minilib.methods import METHODS, Calibrated, Settings, check_plan
from minilib.methods.compensation import COMPENSATIONS, compensate
from minilib.methods.selection import CLUSTERINGS
from minilib.methods.scores import keep_fraction, keep_top, magnitude_scores
from minilib.cache import (cache_dir, check_output, code_fingerprint, code_revision, data_fingerprint, short_hash,
                           write_table)
from minilib.cache import cell as cached_cell
from minilib.data import zeroshot
from minilib.experiments import engine
from minilib.experiments.profile import select

BLOCK_METHODS = ("mi-prun", "mi-prun-fbs", "block-influence", "angular", "random")
MLP_PEERS = ("hfprune", "taylor-ce", "magnitude", "wanda", "random")  # chapter 7
MLP_METHODS = ("mi-mds", "mi-mds-wanda", *MLP_PEERS)  # the paper's method and the combination (chapter 8) first

__all__ = ["BLOCK_METHODS", "MLP_PEERS", "MLP_METHODS", "settings", "Setup", "prepare", "choose_blocks", "block_sweep", "search_gap",
           "keep_ratio", "prune_mlp", "mlp_sweep", "ZEROSHOT_LIMIT", "zeroshot_sweep", "zeroshot_summary", "with_compensation", "speed", "UPDATE_KEYS", "run_all", "summarize", "dpi_check", "dpi_summary", "timings", "at_levels"]


def settings(profile: str):
    """Windows, levels and trials of a profile (quick: CI in minutes; full: the committed tables)."""
    return select(profile,
                  quick=dict(eval_windows=4, eval_length=256, calib_windows=2, calib_length=256, mi_tokens=256,
                             mi_batch=128, neuron_mi_batch=32, neuron_mi_batches=1, n_blocks=[1, 2],
                             ratios=[0.2, 0.3], trials=1, speed_repeats=3, zeroshot_tasks=["piqa", "arc_easy"],
                             zeroshot_limit=8, zeroshot_ratios=[0.2], zeroshot_blocks=[2]),
                  full=dict(eval_windows=8, eval_length=1024, calib_windows=8, calib_length=512, mi_tokens=2048,
                            mi_batch=256, neuron_mi_batch=100, neuron_mi_batches=4, n_blocks=[1, 2, 3, 4, 5, 6, 7, 8],
                            ratios=[0.1, 0.2, 0.3, 0.4, 0.5], trials=3, speed_repeats=20,
                            zeroshot_tasks=list(zeroshot.TASKS), zeroshot_limit=ZEROSHOT_LIMIT,
                            zeroshot_ratios=[0.2, 0.3], zeroshot_blocks=[2, 4, 6]))


@dataclass
class Setup:
    """A model with its evaluation windows (WikiText-2 test) and calibration windows (valid)."""

    model: torch.nn.Module
    eval_windows: torch.Tensor
    calib_windows: torch.Tensor
    name: str
    folder: Path
    mi_tokens: int = 2048
    mi_batch: int = 256
    neuron_mi_batch: int = 100  # token positions per batch of the MLP neurons' MI map (the paper: 100)
    neuron_mi_batches: int | None = None  # batches averaged in that map (None: all)
    seed: int = 0
    tokenizer: object = None  # the zero-shot tasks tokenise their prompts
    progress: bool = False  # tqdm bars for the MLP neurons' MI map and the peers' scores
    maps: Path | None = None  # where the MLP neurons' MI map is saved (None: ``folder/mimaps``)
    cluster: str = Settings.cluster  # the cluster step of mi-mds (Settings; "kmeans": the paper's literal one)

    @cached_property
    def states(self) -> torch.Tensor:
        """The residual stream at ``mi_tokens`` calibration tokens (:func:`minilib.methods.blocks.hidden_states`)."""
        return blocks.hidden_states(self.model, self.calib_windows, self.mi_tokens, self.seed)

    @cached_property
    def state(self) -> Calibrated:
        """The calibration windows as the method registry reads them (one window per batch).

        The MLP neurons' MI map (``mi-mds``) samples one token position per row, in batches of
        ``neuron_mi_batch`` (the paper's 100 in the full profile), and averages the first
        ``neuron_mi_batches``: a map of SmolLM2's 30 blocks costs about 15 minutes per batch of 100
        on two cores (chapter 3b). With ``cluster="kmeans"`` MDS is classical (one eigendecomposition
        per block): SMACOF takes 10–17 s per block and seed at 1,536 neurons, 1.5 hours for 20 seeds
        of 30 blocks.
        The map is saved under :attr:`maps` once computed, so an interrupted sweep resumes after it;
        :func:`prepare` keys that folder by the code that computes the map, not by the methods'.
        """
        settings = Settings(mi_batch=self.neuron_mi_batch, max_batches=self.neuron_mi_batches, mds="classical",
                            cluster=self.cluster)
        maps = (self.maps or self.folder / "mimaps") / short_hash(json.dumps(settings.map_settings(), sort_keys=True))
        return Calibrated(self.model, [{"input_ids": w[None]} for w in self.calib_windows], settings, seed=self.seed,
                          progress=self.progress, cache=maps)

    @cached_property
    def mi(self) -> blocks.BlockMI:
        return blocks.BlockMI(self.states, batch=self.mi_batch)

    def cell(self, kind: str, key: str, compute) -> dict:
        """Read a cached result, or compute it and write it atomically."""
        return cached_cell(self.folder / kind / f"{key}.json", compute)

    def perplexity(self, model: torch.nn.Module) -> float:
        return lm.perplexity(model, self.eval_windows)

    def dense_perplexity(self) -> float:
        return self.cell("dense", "perplexity", lambda: {"perplexity": self.perplexity(self.model)})["perplexity"]


def prepare(profile: str = "quick", source: str = "auto", cache: str | os.PathLike | None = None,
            data_dir: str | os.PathLike | None = None, seed: int = 0, first_blocks: int | None = None,
            progress: bool = False, cluster: str = Settings.cluster) -> Setup:
    """Load the model and cut the profile's windows; results are cached per (model, windows, seed).

    ``first_blocks`` keeps only the model's first blocks: a small model for a live run of the MLP
    MI map, whose cost grows with the number of blocks (chapter 8's quick profile). ``cluster`` is the
    cluster step of ``mi-mds`` (:class:`~minilib.methods.Settings`); it keys the results' folder, not the map's.
    """
    Settings(cluster=cluster)  # checked before the model is loaded
    s = settings(profile)
    model, tokenizer = lm.load_lm(source, cache)
    if first_blocks is not None:
        model = blocks.remove_blocks(model, range(first_blocks, model.config.num_hidden_layers))
    test = lm.windows(lm.wikitext_ids(tokenizer, "test", data_dir), s.eval_length, s.eval_windows)
    calib = lm.windows(lm.wikitext_ids(tokenizer, "valid", data_dir), s.calib_length, s.calib_windows)
    name = lm.describe_lm(source, cache) + (f", first {first_blocks} blocks" if first_blocks is not None else "")
    data = data_fingerprint(*(lm.lm_data_dir(data_dir) / lm.SPLITS[split] for split in ("test", "valid")))
    key = short_hash(f"{name}|{lm.resolve_source(source)}|{s.eval_windows}x{s.eval_length}|{s.calib_windows}x"
                     f"{s.calib_length}|{s.mi_tokens}/{s.mi_batch}|{s.neuron_mi_batch}x{s.neuron_mi_batches}|{seed}|data {data}|"
                     f"code {code_fingerprint('minilib.experiments.lm_sweep')}"
                     + ("" if cluster == Settings.cluster else f"|cluster {cluster}"))
    # the hour-long MLP map: keyed by its inputs and by the estimator's, the hook's and the loader's code only
    # (the map's own settings, batch size and count included, name a folder below it: Setup.state)
    maps = short_hash(f"{name}|{lm.resolve_source(source)}|{s.calib_windows}x{s.calib_length}|{seed}|data {data}|"
                      f"code {code_fingerprint('minilib.estimator.mimap', 'minilib.models.hooks', 'minilib.models.lm')}")
    return Setup(model, test, calib, name, cache_dir(cache) / "lm-runs" / key, s.mi_tokens, s.mi_batch,
                 s.neuron_mi_batch, s.neuron_mi_batches, seed, tokenizer, progress,
                 cache_dir(cache) / "lm-maps" / maps, cluster)


def _block_cells(methods, n_blocks, trials: int) -> list[engine.Cell]:
    return [engine.Cell(m, k, t) for k in n_blocks for m in methods for t in range(trials if m == "random" else 1)]


def _mlp_jobs(setup: Setup, methods, ratios, trials: int) -> list[tuple[float, engine.Cell]]:
    size = setup.state.sizes[0]
    return [(r, engine.Cell(m, keep_fraction(size, 1.0 - r), t)) for m in methods
            for t in range(trials if m == "random" else 1) for r in ratios]


def _choose_mlp(setup: Setup):
    return lambda c: METHODS[c.method].select(setup.state, c.level, setup.seed + c.trial)


def _apply_mlp(setup: Setup, compensation: str = "none"):
    """A cell's pruned copy of the model, its kept weights compensated (chapter 9) on the calibration
    windows unless ``compensation`` is ``"none"``; ``merge`` folds each removed neuron into its partner."""
    if compensation == "none":
        return lambda _c, keep: prune_mlp(setup.model, keep)

    def apply(c: engine.Cell, keep) -> torch.nn.Module:
        state = setup.state
        partners = METHODS[c.method].partners(state, keep) if compensation == "merge" else None
        return compensate(copy.deepcopy(setup.model), keep, state.batches, replace(state.fit_options, mode=compensation),
                          partners, state.compensation_stats(), setup.seed)[0]
    return apply


def _eval_key(compensation: str, prefix: str = ""):
    """A pruned model's evaluation key: its choice (keep-sets or blocks), after ``prefix`` and the
    compensation when there is one."""
    tag = "".join(f"{p}-" for p in (prefix, "" if compensation == "none" else compensation) if p)
    return lambda _cell, choice: tag + short_hash(json.dumps(choice))


def _choose_block_set(setup: Setup):
    return lambda c: choose_blocks(setup, c.method, c.level, c.trial)


def choose_blocks(setup: Setup, method: str, k: int, trial: int = 0) -> list[int]:
    """The ``k`` blocks a method removes (``trial`` seeds the random choice)."""
    n = setup.model.config.num_hidden_layers
    if method == "mi-prun":  # the exact optimum of MI-PRUN's cost (module docstring of blocks)
        return blocks.best_by_dynamic_programming(setup.mi, k)
    if method == "mi-prun-fbs":
        return blocks.fast_block_select(setup.mi, k)
    if method == "block-influence":
        return sorted(np.argsort(blocks.block_influence(setup.states), kind="stable")[:k].tolist())
    if method == "angular":
        start = int(np.argmin(blocks.angular_distance(setup.states, k)))
        return list(range(start, start + k))
    if method == "random":
        return blocks.random_blocks(n, k, seed=setup.seed + trial)
    raise ValueError(f"unknown block method {method!r}; use one of {BLOCK_METHODS}")


def block_sweep(setup: Setup, n_blocks: list[int], methods=BLOCK_METHODS, trials: int = 3,
                progress: bool = True) -> pd.DataFrame:
    """Perplexity after removing ``k`` blocks, for every method and k (random: ``trials`` draws).

    ``mi_cost`` is every chosen set's cost under MI-PRUN's objective (bits, :meth:`BlockMI.cost`),
    so a table shows both how well each method does on that cost and whether the cost predicts
    perplexity.
    """
    dense = setup.dense_perplexity()
    records = engine.run(_block_cells(methods, n_blocks, trials), _choose_block_set(setup),
                         lambda _c, chosen: blocks.remove_blocks(setup.model, chosen),
                         lambda model: {"perplexity": setup.perplexity(model)}, setup.folder / "blocks",
                         lambda _c, chosen: "-".join(map(str, chosen)), progress, "block pruning")
    return pd.DataFrame([{"method": r["cell"].method, "blocks_removed": r["cell"].level, "trial": r["cell"].trial,
                          "blocks": " ".join(map(str, r["choice"])), "mi_cost": setup.mi.cost(r["choice"]),
                          "perplexity": r["metrics"]["perplexity"], "dense_perplexity": dense, "select_seconds": r["select_seconds"],
                          "eval_seconds": r["eval_seconds"]} for r in records])


def search_gap(table: pd.DataFrame) -> pd.DataFrame:
    """Per number of blocks removed: Fast-Block-Select (``mi-prun-fbs``) against the exact optimum
    (``mi-prun``) of the same cost, from a :func:`block_sweep` table holding both.

    ``cost_gap`` (bits) is FBS's cost minus the optimum's, 0 where it found the optimum.
    """
    missing = {"mi-prun", "mi-prun-fbs"} - set(table.method)
    if missing:
        raise ValueError(f"the table has no {sorted(missing)} rows; run block_sweep with both MI-PRUN searches")
    dp, fbs = (table[table.method == m].set_index("blocks_removed") for m in ("mi-prun", "mi-prun-fbs"))
    out = pd.DataFrame({"blocks_exact": dp.blocks, "blocks_fbs": fbs.blocks, "cost_exact": dp.mi_cost,
                        "cost_fbs": fbs.mi_cost, "perplexity_exact": dp.perplexity, "perplexity_fbs": fbs.perplexity})
    out["cost_gap"] = out.cost_fbs - out.cost_exact
    out["same_set"] = out.blocks_exact == out.blocks_fbs
    return out.dropna()


def keep_ratio(scores: list[np.ndarray], ratio: float) -> list[np.ndarray]:
    """The highest-scoring ``round((1 − ratio)·m)`` neurons of every block (pruning ``ratio`` of them)."""
    return keep_top(scores, [keep_fraction(len(s), 1.0 - ratio) for s in scores])


def prune_mlp(model: torch.nn.Module, keep: list[np.ndarray]) -> torch.nn.Module:
    """A pruned copy of ``model`` (the dense one stays for the next cell)."""
    return surgery.prune_ffn(copy.deepcopy(model), keep)


def mlp_sweep(setup: Setup, ratios: list[float], methods=MLP_METHODS, trials: int = 3,
              progress: bool = True, compensation: str = "none") -> pd.DataFrame:
    """Perplexity after pruning a uniform ``ratio`` of every block's MLP neurons, per method.

    A method's scores are computed once (the first of its cells pays for them, ``select_seconds``).
    ``compensation`` refits what the kept neurons give (chapter 9; ``merge`` for the clustered methods);
    the keep-sets are the same cached choices under every compensation.
    """
    for m in methods:
        check_plan(m, compensation)
    dense = setup.dense_perplexity()
    jobs = _mlp_jobs(setup, methods, ratios, trials)
    records = engine.run([c for _, c in jobs], _choose_mlp(setup), _apply_mlp(setup, compensation),
                         lambda model: {"perplexity": setup.perplexity(model)}, setup.folder / "mlp",
                         _eval_key(compensation), progress, "MLP pruning")
    return pd.DataFrame([{"method": r["cell"].method, "compensation": compensation, "ratio": ratio, "trial": r["cell"].trial,
                          "kept_per_block": r["cell"].level, "perplexity": r["metrics"]["perplexity"],
                          "dense_perplexity": dense, "select_seconds": r["select_seconds"],
                          "eval_seconds": r["eval_seconds"]} for (ratio, _), r in zip(jobs, records)])


# examples per task, the same seeded subset for every model. One model's 8 tasks take ~5.4 s per
# example on one thread (81 s at 15), so 50 is ~4.5 min a model and ~28 models ~2 CPU-hours;
# the standard error of an accuracy near 50% is then ~7 points per task, ~2.5 on the 8-task mean
ZEROSHOT_LIMIT = 50


def zeroshot_sweep(setup: Setup, ratios=(0.2, 0.3), n_blocks=(2, 4, 6), tasks=tuple(zeroshot.TASKS),
                   limit: int | None = ZEROSHOT_LIMIT, mlp_methods=MLP_METHODS, block_methods=BLOCK_METHODS,
                   progress: bool = True, compensation: str = "none") -> pd.DataFrame:
    """Zero-shot accuracy (lm-evaluation-harness, with its standard error) of the dense model, every
    MLP method at ``ratios`` and every block method at ``n_blocks`` (trial 0 of Random).

    The keep-sets and blocks are the cached choices of :func:`mlp_sweep` and :func:`block_sweep`
    (computed here if those have not run); each task is scored on the same ``limit`` examples.
    One row per (model, task, metric): ``pruning`` (dense, mlp, blocks), ``method``, ``compensation``
    (``compensation`` for the MLP models, as in :func:`mlp_sweep`; none for the others), ``level``
    (the ratio removed, or the blocks removed), ``value``, ``stderr`` and ``examples``.
    """
    for m in mlp_methods:
        check_plan(m, compensation)
    if setup.tokenizer is None:
        raise ValueError("zero-shot scoring needs the model's tokenizer; build the Setup with prepare()")
    tag = f"zeroshot-{short_hash(repr((list(tasks), limit, setup.seed)))}"

    def score(model: torch.nn.Module) -> dict[str, float]:
        df = zeroshot.evaluate(model, setup.tokenizer, list(tasks), limit, setup.seed)
        return {f"{r.task}|{r.metric}|{field}": float(getattr(r, field))
                for r in df.itertuples() for field in ("value", "stderr", "examples")}

    runs = [("dense", "dense", "none", 0.0, setup.cell("dense", tag, lambda: score(setup.model)))]
    jobs = _mlp_jobs(setup, mlp_methods, ratios, trials=1)
    for (ratio, _), r in zip(jobs, engine.run([c for _, c in jobs], _choose_mlp(setup), _apply_mlp(setup, compensation),
                                              score, setup.folder / "mlp", _eval_key(compensation, tag), progress,
                                              "zero-shot (MLP)")):
        runs.append(("mlp", r["cell"].method, compensation, ratio, r["metrics"]))
    for r in engine.run(_block_cells(block_methods, n_blocks, trials=1), _choose_block_set(setup),
                        lambda _c, chosen: blocks.remove_blocks(setup.model, chosen), score, setup.folder / "blocks",
                        _eval_key("none", tag), progress, "zero-shot (blocks)"):
        runs.append(("blocks", r["cell"].method, "none", float(r["cell"].level), r["metrics"]))
    rows = []
    for pruning, method, comp, level, metrics in runs:
        for name in {k.rsplit("|", 1)[0] for k in metrics}:
            task, metric = name.split("|")
            rows.append({"pruning": pruning, "method": method, "compensation": comp, "level": level,
                         "task": task, "metric": metric,
                         "value": metrics[f"{name}|value"], "stderr": metrics[f"{name}|stderr"],
                         "examples": int(metrics[f"{name}|examples"])})
    return pd.DataFrame(rows).sort_values(["pruning", "method", "level", "task", "metric"], kind="stable",
                                          ignore_index=True)


def zeroshot_summary(table: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """:func:`zeroshot_sweep`'s ``metric`` in percent, one row per model and one column per task,
    with their ``mean`` and, beside each, its standard error (columns ``(task, "value" | "stderr")``).

    The mean's standard error treats the tasks' subsets as independent: √(Σ se²) / n_tasks.
    """
    t = with_compensation(table[table.metric == metric])
    if t.empty:
        raise ValueError(f"no {metric!r} rows; the metrics are {sorted(table.metric.unique())}")
    index = ["pruning", "method", "level"]
    value = 100 * t.pivot_table(index=index, columns="task", values="value", sort=False)
    err = 100 * t.pivot_table(index=index, columns="task", values="stderr", sort=False)
    value["mean"], err["mean"] = value.mean(axis=1), np.sqrt((err**2).sum(axis=1)) / err.shape[1]
    return pd.concat({"value": value, "stderr": err}, axis=1).swaplevel(axis=1)[list(value.columns)]


def speed(setup: Setup, n_blocks=(2, 4, 6), ratios=(0.2, 0.3, 0.5), repeats: int = 20,
          threads: int | None = None) -> pd.DataFrame:
    """CPU tokens/s of one forward pass over an evaluation window, dense vs pruned.

    Which blocks or neurons go does not change the cost (uniform shapes), so one choice per level
    (MI-PRUN's blocks, the magnitude neurons) stands for every method. Settings are timed
    round-robin in rounds of 5 passes (against drift in the machine's load).
    """
    window = {"input_ids": setup.eval_windows[:1]}
    models = {("dense", 0.0): setup.model}
    for k in n_blocks:
        models[("blocks", k)] = blocks.remove_blocks(setup.model, blocks.best_by_dynamic_programming(setup.mi, k))
    for r in ratios:
        models[("mlp", r)] = prune_mlp(setup.model, keep_ratio(magnitude_scores(setup.model), r))
    times: dict = {key: [] for key in models}
    for _ in range(max(1, repeats // 5)):
        for key, model in models.items():
            times[key].append(surgery.latency(model, window, repeats=5, warmup=1, threads=threads)["median_s"])
    tokens = window["input_ids"].numel()
    dense = float(np.median(times[("dense", 0.0)]))
    rows = []
    for (kind, level), t in times.items():
        med = float(np.median(t))
        params = sum(p.numel() for p in models[(kind, level)].parameters())
        rows.append({"pruning": kind, "level": level, "parameters": params, "seconds_per_window": med,
                     "round_spread": float(np.ptp(t)) / med,  # (slowest − fastest round) / median
                     "tokens_per_second": tokens / med, "speedup": dense / med, "threads": torch.get_num_threads()
                     if threads is None else threads, "window_tokens": tokens})
    return pd.DataFrame(rows)


def with_compensation(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each compensated model as its method's own row (``"mi-mds + merge"``), so that no
    summary averages a method's models with and without compensation."""
    if "compensation" not in table:
        return table
    comp = table.compensation.fillna("none")
    return table.assign(method=table.method.where(comp == "none", table.method + " + " + comp))


def summarize(table: pd.DataFrame, x: str) -> pd.DataFrame:
    """Mean and standard deviation of perplexity over trials per (method, ``x``), in the table's method order
    (compensated models apart: :func:`with_compensation`)."""
    t = with_compensation(table)
    return t.groupby(["method", x], sort=False).perplexity.agg(["mean", "std", "count"]).reset_index()


def at_levels(table: pd.DataFrame, x: str, levels: list) -> pd.DataFrame:
    """Methods × levels of mean perplexity (chapter 7's table)."""
    s = summarize(table[table[x].isin(levels)], x)
    order = with_compensation(table).method.unique()
    return s.pivot(index="method", columns=x, values="mean").reindex(order).dropna(how="all")


def dpi_check(mi: blocks.BlockMI, max_length: int | None = None) -> pd.DataFrame:
    """Every segment's estimated MI against its DPI bound ``min_k I(X_k; X_{k+1})``.

    The bound holds for the true MI; the estimator need not obey it, and this table says how often
    and by how much it does not (``excess`` > 0) on real hidden states.
    """
    L = mi.n_blocks
    rows = [{"start": i, "stop": j, "length": j - i, "mi": mi.segment(i, j), "bound": mi.dpi_bound(i, j)}
            for i in range(L) for j in range(i + 2, min(L, i + (max_length or L)) + 1)]
    df = pd.DataFrame(rows)
    df["excess"] = df["mi"] - df["bound"]
    return df


def dpi_summary(dpi: pd.DataFrame) -> pd.DataFrame:
    """Per segment length, how many segments :func:`dpi_check` looked at, the share that break the
    DPI bound and the largest excess (bits)."""
    return dpi.assign(violated=dpi.excess > 0).groupby("length").agg(
        segments=("mi", "size"), violated=("violated", "mean"), max_excess_bits=("excess", "max"))


def timings(tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Seconds of the committed sweeps (``lm-blocks`` and ``lm-mlp`` tables): walls, selections, evaluations."""
    blocks_t, mlp_t = tables["blocks"], tables["mlp"]
    return {"block sweep, wall (s)": float(blocks_t.wall_seconds.iloc[0]),
            "MI-PRUN: states + block MIs + search, first call (s)":
                float(blocks_t[blocks_t.method == "mi-prun"].select_seconds.max()),
            "block cell evaluation, median (s)": float(blocks_t.eval_seconds.median()),
            "MLP sweep, wall (s)": float(mlp_t.wall_seconds.iloc[0]),
            **{f"{m} scores (s)": float(v) for m, v in mlp_t.groupby("method").select_seconds.max().items()}}


TABLES = ("blocks", "mlp", "zeroshot", "speed")


# How ``update`` matches a table's rows (the mlp and zeroshot tables; before their compensation
# column was added, every row was uncompensated)
UPDATE_KEYS = {"mlp": ("method", "compensation"), "zeroshot": ("pruning", "method", "compensation")}


def run_all(profile: str, out: str | os.PathLike, source: str = "auto", cache=None,
            tables: tuple[str, ...] = ("blocks", "mlp", "speed"), cluster: str = Settings.cluster,
            methods: tuple[str, ...] | None = None, compensation: str = "none", update: bool = False
            ) -> dict[str, pd.DataFrame]:
    """The sweeps, the zero-shot and the speed tables of a profile, written to ``out/lm-<table>.csv``.

    ``cluster``: the cluster step of ``mi-mds``, recorded in the mlp and zeroshot tables. ``methods``
    (default: all) limits the block and MLP methods; ``compensation`` applies to the MLP models
    (:func:`mlp_sweep`). ``update`` replaces only this run's rows of the existing mlp and zeroshot
    tables (:data:`UPDATE_KEYS`) and keeps the others, each row naming its commit.
    """
    s = settings(profile)
    unknown = set(tables) - set(TABLES)
    if unknown:  # before the model is loaded
        raise ValueError(f"unknown tables {sorted(unknown)}; choose from {', '.join(TABLES)}")
    methods = tuple(methods or dict.fromkeys(BLOCK_METHODS + MLP_METHODS))
    bad = [m for m in methods if m not in BLOCK_METHODS + MLP_METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {', '.join(dict.fromkeys(BLOCK_METHODS + MLP_METHODS))}")
    mlp_methods, block_methods = [m for m in MLP_METHODS if m in methods], [m for m in BLOCK_METHODS if m in methods]
    for m in mlp_methods:
        check_plan(m, compensation)
    if compensation != "none" and set(tables) - {"mlp", "zeroshot"}:
        raise ValueError(f"--compensation {compensation} applies to the MLP tables; run it with --tables mlp zeroshot")
    if update:
        fixed = set(tables) - set(UPDATE_KEYS)
        if fixed:
            raise ValueError(f"--update rewrites rows of the mlp and zeroshot tables; write {sorted(fixed)} whole")
        absent = [t for t in tables if not (Path(out) / f"lm-{t}.csv").is_file()]
        if absent:
            raise ValueError(f"--update: no lm-{absent[0]}.csv in {out} yet; run without --update to write it")
    check_output(out)  # results/ from a clean tree only, refused before the model is loaded
    code = code_revision()  # the code that runs, even if the tree changes before a table is written
    setup = prepare(profile, source, cache, progress=True, cluster=cluster)
    runs = {"blocks": lambda: block_sweep(setup, s.n_blocks, block_methods, trials=s.trials),
            "mlp": lambda: mlp_sweep(setup, s.ratios, mlp_methods, trials=s.trials, compensation=compensation),
            "zeroshot": lambda: zeroshot_sweep(setup, s.zeroshot_ratios, s.zeroshot_blocks, s.zeroshot_tasks,
                                               s.zeroshot_limit, mlp_methods, block_methods,
                                               compensation=compensation),
            "speed": lambda: speed(setup, repeats=s.speed_repeats)}
    done = {}
    for name in tables:
        t0 = time.perf_counter()
        df = runs[name]()
        df["wall_seconds"] = time.perf_counter() - t0  # the whole table, cached cells included
        df["model"], df["code"], df["eval_tokens"] = setup.name, code, setup.eval_windows.numel()
        if name in ("mlp", "zeroshot"):  # the tables with mi-mds rows
            df["cluster"] = cluster
        done[name] = write_table(Path(out) / f"lm-{name}.csv", df, UPDATE_KEYS[name] if update else (),
                                 {"compensation": "none"}, float_format="%.6g")
    return done


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="minilib lm", description="Block (MI-PRUN) and MLP (the paper's method, HFPrune, "
                            "peers) pruning of a causal LM, with zero-shot accuracy.")
    parser.add_argument("--profile", default="full", choices=["quick", "full"])
    parser.add_argument("--source", default="auto", help="'offline', a Hub id or a local model folder")
    parser.add_argument("--out", default="results", help="folder for the lm-<table>.csv files")
    parser.add_argument("--tables", nargs="+", default=["blocks", "mlp", "speed"],
                        help="which tables to (re)write: blocks, mlp, zeroshot, speed (time speed on an idle machine)")
    parser.add_argument("--cluster", default=Settings.cluster, choices=list(CLUSTERINGS),
                        help="cluster step of mi-mds (kmeans: the paper's literal 8-D pipeline on classical MDS)")
    parser.add_argument("--methods", nargs="+", help="only these block and MLP methods (default: all)")
    parser.add_argument("--compensation", default="none", choices=list(COMPENSATIONS),
                        help="refit the MLP models' kept weights (chapter 9; merge: the clustered methods)")
    parser.add_argument("--update", action="store_true",
                        help="replace only this run's rows of the existing mlp / zeroshot tables, keep the others")
    args = parser.parse_args(argv)
    for name, df in run_all(args.profile, args.out, args.source, tables=tuple(args.tables), cluster=args.cluster,
                            methods=args.methods, compensation=args.compensation, update=args.update).items():
        print(f"\n{name}\n", df.drop(columns=["model", "code", "cluster"], errors="ignore").to_string(index=False))

