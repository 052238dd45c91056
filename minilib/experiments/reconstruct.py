"""Chapter 9's runs: every method with each compensation and allocation, on a causal LM's MLP.

A :class:`Variant` is a method with a compensation and an allocation
(:mod:`minilib.methods.compensation`, :mod:`minilib.methods.allocation`). For each variant and
level (the fraction of the MLP neurons removed) one cell chooses the per-layer counts and the
keep-sets, removes and compensates, and measures WikiText-2 test perplexity and the time of each
stage. The dense model's compensation statistics are collected once and shared by every cell.
Cells are cached as JSON under ``<setup folder>/reconstruct/<setting>/``, so an interrupted run
resumes. Command line (the full profile writes ``results/reconstruct-lm.csv``)::

    python -m minilib reconstruct --profile full --source offline --out results
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from minilib.cache import atomic_file, check_output, code_fingerprint, code_revision, short_hash
from minilib.cache import cell as cached_cell
from minilib.console import ArgumentParser
from minilib.data import zeroshot
from minilib.experiments import lm_sweep
from minilib.experiments.profile import select
from minilib.methods import METHODS, Calibrated, Settings, check_plan, layer_counts
from minilib.methods.allocation import DEFAULT_FLOOR
from minilib.methods.compensation import FITS, Compensation, compensate
from minilib.models import lm

__all__ = ["Variant", "VARIANTS", "CHOICES", "settings", "Bench", "prepare", "lm_table", "choices_table",
           "zeroshot_table", "curves", "grid", "choices_grid", "stage_seconds", "zeroshot_summary", "best", "TABLES", "main"]


@dataclass(frozen=True)
class Variant:
    """A method with a compensation and an allocation (checked by :func:`minilib.methods.check_plan`)."""

    method: str
    compensation: str = "none"
    allocation: str = "uniform"

    def __post_init__(self) -> None:
        check_plan(self.method, self.compensation, self.allocation)

    @property
    def name(self) -> str:
        return f"{self.method}|{self.compensation}|{self.allocation}"


def _grid(methods: Sequence[str], compensations: Sequence[str], allocations: Sequence[str]) -> list[Variant]:
    out = []
    for m in methods:
        for c in compensations:
            for a in allocations:
                try:
                    out.append(Variant(m, c, a))
                except ValueError:  # an undefined combination (merge with a score, global with MI …)
                    continue
    return out


# The chapter's grid: the two activation-aware scores with every compensation and both budgets; Random
# and magnitude (whose scores do not compare across layers) with the uniform one; the
# reconstruction-aware selection. The MI methods' rows need the hour-long MI map (chapter 8's run).
VARIANTS = (_grid(("wanda", "flap"), ("none", "bias", "least-squares"), ("uniform", "global"))
            + _grid(("random",), ("none", "bias", "least-squares"), ("uniform",))
            + _grid(("magnitude",), ("none", "least-squares"), ("uniform",))
            + [Variant("lsq-greedy", "least-squares")])


# The open choices of the fit (which inputs, which tokens) are measured on these two.
CHOICES = (Variant("flap", "least-squares", "global"), Variant("wanda", "least-squares"))


def settings(profile: str):
    """Calibration windows (WikiText-2 valid), levels and zero-shot settings of a profile.

    The full profile fits on 32,768 tokens. On SmolLM2 at 20% removed with the least-squares refit,
    FLAP's global keep-set reached perplexity 42.2 / 39.9 / 38.7 from 8,192 / 16,384 / 32,768 tokens
    and Wanda's uniform one 45.1 / 43.4 from the first two (dense 29.2): a refit of about 1,229 columns
    per output is starved of data at fewer tokens."""
    return select(profile,
                  quick=dict(calib_windows=4, calib_length=256, ratios=[0.2], zeroshot_ratios=[0.2],
                             zeroshot_tasks=["piqa", "arc_easy"], zeroshot_limit=8),
                  full=dict(calib_windows=64, calib_length=512, ratios=[0.1, 0.2, 0.3, 0.4, 0.5],
                            zeroshot_ratios=[0.2, 0.3], zeroshot_tasks=list(zeroshot.TASKS),
                            zeroshot_limit=lm_sweep.ZEROSHOT_LIMIT))


@dataclass
class Bench:
    """Chapter 7's model and test windows with this chapter's calibration windows and fit options."""

    setup: lm_sweep.Setup
    calib_windows: torch.Tensor
    fit: str = "dense"
    skip_first: bool = False
    floor: float = DEFAULT_FLOOR
    progress: bool = False

    @cached_property
    def batches(self) -> list[dict[str, torch.Tensor]]:
        return [{"input_ids": self.calib_windows[i:i + 2]} for i in range(0, len(self.calib_windows), 2)]

    @cached_property
    def state(self) -> Calibrated:
        state = Calibrated(self.setup.model, self.batches, Settings(), seed=self.setup.seed, progress=self.progress)
        state.fit_options = Compensation(fit=self.fit, skip_first=self.skip_first)
        return state

    @property
    def folder(self) -> Path:
        tag = short_hash(f"{tuple(self.calib_windows.shape)}|{self.fit}|{self.skip_first}|{self.floor}|"
                         f"{code_fingerprint('minilib.experiments.reconstruct')}")
        return self.setup.folder / "reconstruct" / tag

    def pruned(self, variant: Variant, ratio: float) -> tuple[torch.nn.Module, dict]:
        """The model with ``ratio`` of its MLP neurons removed by ``variant``, and the stage times."""
        times = {}
        t0 = time.perf_counter()
        counts = layer_counts(self.state, variant.method, variant.allocation, 1.0 - ratio, self.floor,
                              self.setup.seed)
        keep = METHODS[variant.method].select(self.state, counts, self.setup.seed)
        times["select_seconds"] = time.perf_counter() - t0
        comp = replace(self.state.fit_options, mode=variant.compensation)
        t0 = time.perf_counter()
        stats = (self.state.compensation_stats()
                 if comp.mode != "none" and comp.fit == "dense" else None)
        times["stats_seconds"] = time.perf_counter() - t0  # 0 once collected: they are shared
        partners = METHODS[variant.method].partners(self.state, keep) if comp.mode == "merge" else None
        t0 = time.perf_counter()
        model, fixes = compensate(copy.deepcopy(self.setup.model), keep, self.batches, comp, partners, stats,
                                  self.setup.seed)
        times["fit_seconds"] = time.perf_counter() - t0
        info = {**times, "kept": [len(k) for k in keep],
                "compensated_layers": sum(f.mode != "none" for f in fixes),
                "heldout_error_ratio": _error_ratio(fixes)}
        return model, info


def _error_ratio(fixes: Sequence) -> float:
    """Mean over the layers that lost neurons of the held-out error with compensation over without (1: none)."""
    ratios = [f.error / f.error_none for f in fixes if f.error_none > 0]
    return float(np.mean(ratios)) if ratios else 1.0


def prepare(profile: str = "quick", source: str = "auto", cache: str | os.PathLike | None = None,
            fit: str = "dense", skip_first: bool = False, progress: bool = False) -> Bench:
    """Chapter 7's setup (model, test windows) with the profile's calibration windows."""
    s = settings(profile)
    setup = lm_sweep.prepare(profile, source, cache, progress=progress)
    calib = lm.windows(lm.wikitext_ids(setup.tokenizer, "valid"), s.calib_length, s.calib_windows)
    return Bench(setup, calib, fit, skip_first, progress=progress)


def lm_table(bench: Bench, ratios: Sequence[float], variants: Sequence[Variant] = VARIANTS,
             progress: bool = True) -> pd.DataFrame:
    """WikiText-2 test perplexity of every variant at every ratio removed, with the stage times."""
    dense = bench.setup.dense_perplexity()
    rows = []
    jobs = [(v, r) for r in ratios for v in variants]
    for variant, ratio in tqdm(jobs, desc="compensation sweep", unit="cell", disable=not progress):
        def compute(variant: Variant = variant, ratio: float = ratio) -> dict:
            model, info = bench.pruned(variant, ratio)
            t0 = time.perf_counter()
            return {**info, "perplexity": bench.setup.perplexity(model), "eval_seconds": time.perf_counter() - t0,
                    "code": code_revision()}
        cell = cached_cell(bench.folder / "lm" / f"{variant.name.replace('|', '_')}-{ratio:g}.json", compute)
        rows.append({"method": variant.method, "compensation": variant.compensation,
                     "allocation": variant.allocation, "ratio": ratio, "perplexity": cell["perplexity"],
                     "dense_perplexity": dense, "kept_min": min(cell["kept"]), "kept_max": max(cell["kept"]),
                     "compensated_layers": cell["compensated_layers"],
                     "heldout_error_ratio": cell["heldout_error_ratio"],
                     **{k: cell[k] for k in ("select_seconds", "stats_seconds", "fit_seconds", "eval_seconds")}})
    out = pd.DataFrame(rows)
    out["calib_tokens"], out["fit"], out["skip_first"] = bench.calib_windows.numel(), bench.fit, bench.skip_first
    return out


def choices_table(bench: Bench, ratio: float, variants: Sequence[Variant] = CHOICES,
                  progress: bool = True) -> pd.DataFrame:
    """:func:`lm_table` at one ratio under each fit (dense or sequential inputs) with and without each
    window's first token in the fit: the decisions the chapter takes by measurement."""
    return pd.concat([lm_table(replace(bench, fit=fit, skip_first=skip), [ratio], variants, progress)
                      for fit in FITS for skip in (False, True)], ignore_index=True)


def choices_grid(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`choices_table` as perplexity over the dense model's: variants by (fit, first token in the fit)."""
    t = table.assign(x=table.perplexity / table.dense_perplexity,
                     tokens=np.where(table.skip_first, "first token out", "every token"))
    return t.pivot_table(index=["method", "compensation", "allocation"], columns=["fit", "tokens"], values="x")


def best(table: pd.DataFrame, ratio: float, k: int = 3) -> list[Variant]:
    """The ``k`` variants with the lowest perplexity at ``ratio`` (one per method)."""
    t = table[np.isclose(table.ratio, ratio)].sort_values("perplexity").drop_duplicates("method")
    return [Variant(r.method, r.compensation, r.allocation) for r in t.head(k).itertuples()]


def zeroshot_table(bench: Bench, variants: Sequence[Variant], ratios: Sequence[float], tasks: Sequence[str],
                   limit: int | None, progress: bool = True) -> pd.DataFrame:
    """Zero-shot accuracy (lm-evaluation-harness, the same seeded examples) of the dense model and of
    ``variants`` at ``ratios``; one row per (model, task, metric), as chapter 8's table."""
    tag = short_hash(repr((list(tasks), limit, bench.setup.seed)))

    def score(model: torch.nn.Module) -> dict:
        df = zeroshot.evaluate(model, bench.setup.tokenizer, list(tasks), limit, bench.setup.seed)
        return {"rows": df.to_dict("records")}

    runs = [("dense", "none", "uniform", 0.0, bench.setup.cell("dense", f"zeroshot-{tag}",
                                                                lambda: score(bench.setup.model)))]
    for v, r in tqdm([(v, r) for r in ratios for v in variants], desc="zero-shot", disable=not progress):
        path = bench.folder / "zeroshot" / f"{tag}-{v.name.replace('|', '_')}-{r:g}.json"
        runs.append((v.method, v.compensation, v.allocation, r,
                     cached_cell(path, lambda v=v, r=r: score(bench.pruned(v, r)[0]))))
    return pd.DataFrame([{"method": m, "compensation": c, "allocation": a, "ratio": r, **row}
                         for m, c, a, r, cell in runs for row in cell["rows"]])


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """Perplexity against the ratio removed, one line per method and allocation, per compensation: the
    columns :func:`minilib.experiments.plots.perplexity_curves` reads (``std`` 0: one trial per cell)."""
    return table.assign(method=table.method + " (" + table.allocation + ")", mean=table.perplexity, std=0.0)[
        ["compensation", "method", "ratio", "mean", "std"]]


def grid(table: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Perplexity over the dense model's at ``ratio``: methods and allocations by compensation."""
    t = table[np.isclose(table.ratio, ratio)]
    out = t.assign(x=t.perplexity / t.dense_perplexity).pivot_table(index=["method", "allocation"],
                                                                    columns="compensation", values="x")
    return out[[c for c in ("none", "bias", "least-squares", "merge") if c in out.columns]]


def stage_seconds(table: pd.DataFrame) -> pd.DataFrame:
    """Seconds of each stage per method and compensation: the method's first selection (which computes
    its scores, once), the median one after it, the median fit and evaluation; the dense statistics are
    collected once per run and shared by every cell."""
    g = table.groupby(["method", "compensation"])
    out = pd.DataFrame({"first selection": g.select_seconds.max(), "selection": g.select_seconds.median(),
                        "fit": g.fit_seconds.median(), "evaluation": g.eval_seconds.median()})
    out["statistics (once)"] = table.stats_seconds.max()
    return out


def zeroshot_summary(table: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """:func:`zeroshot_table` in chapter 8's form (:func:`minilib.experiments.lm_sweep.zeroshot_summary`):
    accuracy in percent per task and their mean, each with its standard error, one row per model."""
    t = table.assign(pruning=table.compensation + " / " + table.allocation, level=table.ratio)
    return lm_sweep.zeroshot_summary(t.drop(columns="compensation"), metric)  # named in ``pruning``


TABLES = ("lm", "choices", "zeroshot")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="minilib reconstruct", description="Chapter 9: every method with each compensation "
                            "and allocation on a causal LM's MLP neurons (perplexity, zero-shot accuracy).")
    parser.add_argument("--profile", default="full", choices=["quick", "full"])
    parser.add_argument("--source", default="auto", help="'offline', a Hub id or a local model folder")
    parser.add_argument("--out", default="results", help="folder for the reconstruct-<table>.csv files")
    parser.add_argument("--fit", default="dense", choices=["dense", "sequential"])
    parser.add_argument("--skip-first", action="store_true", help="leave each window's first token out of the fit")
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES,
                        help="lm: every variant at every level; choices: the fit's inputs and tokens at 20%%; "
                        "zeroshot: the best variants at 20%% and 30%%")
    args = parser.parse_args(argv)
    check_output(args.out)  # results/ from a clean tree only, before the model is loaded
    s, code = settings(args.profile), code_revision()
    bench = prepare(args.profile, args.source, fit=args.fit, skip_first=args.skip_first, progress=True)
    tables = {}
    for name in args.tables:
        if name == "lm":
            df = tables["lm"] = lm_table(bench, s.ratios)
        elif name == "choices":
            df = choices_table(bench, 0.2)
        else:
            lm_rows = tables["lm"] if "lm" in tables else lm_table(bench, [0.2])  # cached cells
            chosen = best(lm_rows, 0.2) + [Variant("flap", "bias", "global"), Variant("wanda")]
            df = zeroshot_table(bench, list(dict.fromkeys(chosen)), s.zeroshot_ratios, s.zeroshot_tasks,
                                s.zeroshot_limit)
        df["model"], df["code"] = bench.setup.name, code
        atomic_file(Path(args.out) / f"reconstruct-{name}.csv",
                    lambda p, df=df: df.to_csv(p, index=False, float_format="%.6g"))
        print(f"\n{name}\n", df.drop(columns=["model", "code"]).to_string(index=False))

