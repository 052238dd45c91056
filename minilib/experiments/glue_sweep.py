"""The pruning sweep: methods × compression levels × tasks, evaluated on each task's dev set.

For one fine-tuned run (:func:`minilib.experiments.finetune.finetune`) a :class:`Context` holds what every
method may read: the dense model, the calibration sample (the random 1% of the training set the
MI map uses, with labels for the supervised peers), the MI map and the dev set. A method maps
``(context, keep, seed)`` to one keep-set per layer; :func:`evaluate_keep` removes the other
neurons (:mod:`minilib.models.surgery`) and scores the pruned model with the task's official metrics.

The compression level is the **FFN-relative FLOPs** (the kept fraction of FFN neurons, the same
in every layer: open decision 6 in the book's introduction); the encoder-relative FLOPs at the task's mean dev
length are recorded beside it (open decision 9). :func:`sweep` caches every cell as a small JSON file,
so an interrupted sweep resumes where it stopped, and returns a tidy table with provenance.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from minilib.console import ArgumentParser
from minilib.data import glue
from minilib.estimator import mimap
from minilib.estimator.pairwise import DEFAULT_TOL
from minilib.experiments import engine, paper
from minilib.models import surgery
from minilib.methods import (METHODS, PruningState, Settings, check_plan, kl_choice, kl_dims_sensitivity, layer_counts,
                             mds_candidates)
from minilib.methods import selection
from minilib.methods.allocation import ALLOCATIONS
from minilib.methods.compensation import COMPENSATIONS, Compensation, compensate
from minilib.cache import cache_dir, check_output, code_fingerprint, results_dir, short_hash, write_table
from minilib.data.calibration import calibration_indices
from minilib.experiments.neuron_maps import calibration_activations, neuron_mi_map
from minilib.experiments.finetune import evaluate, load_finetuned, read_result
from minilib.models.bert import load_tokenizer

__all__ = ["calibration_activations", "neuron_mi_map", "Context", "METHODS", "mds_candidates", "kl_choice", "kl_dims_sensitivity",
           "pruned_model", "evaluate_keep", "check_levels", "sweep", "UPDATE_KEYS", "ABLATIONS", "ABLATION_CHOICES", "ablate", "published", "summarize", "PAPER_DENSE", "compare_table2", "compensation_table", "drops_from_dense", "main"]


@dataclass
class Context(PruningState):
    """A fine-tuned run and the data every pruning method may read (built lazily, then kept).

    The MI map comes from :func:`neuron_mi_map` (cached per run and setting) on the
    same calibration rows that the peers read in batches of 32.
    """

    run: Path
    fraction: float = 0.01  # calibration sample: this fraction of the training set (the paper: 1%)
    seed: int = 0  # draws the calibration sample
    fit_fraction: float | None = None  # compensation's sample (chapter 9); None: the methods' own
    skip_first: bool = False  # leave each sentence's first token ([CLS]) out of the fit (chapter 9)
    mds_seeds: int = 20  # M, the candidates of the subsidiary condition (the paper: 500)
    max_batches: int | None = None  # MI map batches (None: all)
    alpha: float = 1.01  # Rényi order of the MI map (the paper: 1.01)
    reduction: str = "mean"  # one sample of a neuron per sentence: "mean", "cls" or every token ("tokens")
    mi_tol: float | None = DEFAULT_TOL  # certified error bound (bits) of the MI map; None: exact
    mds: str = "smacof"  # or "classical": seed-free, for layers of thousands of neurons (Settings)
    mds_mass: float | None = None  # classical MDS: axes holding this share of the eigenvalue mass (Settings)
    cluster: str = Settings.cluster  # the cluster step (Settings); "kmeans" is the paper's literal 8-D one
    data_dir: str | os.PathLike | None = None
    cache: str | os.PathLike | None = None
    progress: bool = False  # tqdm bars for the MI map and the peers' scoring passes

    def __post_init__(self) -> None:
        PruningState.__init__(self)
        self.run = Path(self.run)
        self.result = read_result(self.run)
        self.task = glue.get_task(self.result["task"])
        self.settings = Settings(alpha=self.alpha, reduction=self.reduction, max_batches=self.max_batches,
                                 mds_seeds=self.mds_seeds, mi_tol=self.mi_tol, mds=self.mds, mds_mass=self.mds_mass,
                                 cluster=self.cluster)
        self.fit_options = Compensation(skip_first=self.skip_first)

    @cached_property
    def model(self):
        return load_finetuned(self.run)

    @cached_property
    def batches(self) -> list[dict[str, torch.Tensor]]:
        """The calibration sentences (with labels) in batches of 32, the same rows as the MI map's."""
        return self._sample(self.fraction)

    def _sample(self, fraction: float) -> list[dict[str, torch.Tensor]]:
        """A seeded random ``fraction`` of the training set in batches of 32."""
        train = glue.load_split(self.task, "train", self.data_dir)
        rows = calibration_indices(len(train), fraction, self.seed)
        return list(glue.Batches(glue.encode(train.select(rows), self.tokenizer), 32))

    @cached_property
    def fit_batches(self) -> list[dict[str, torch.Tensor]]:
        """The sentences compensation fits on: a random ``fit_fraction`` of the training set (the same
        draw as :attr:`batches` when ``None``). The paper's 1% holds fewer tokens than an encoder layer
        has neurons on the small tasks (MRPC ~2,000 for 1,536), too few for a least-squares refit."""
        return self.batches if self.fit_fraction in (None, self.fraction) else self._sample(self.fit_fraction)

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.result["init"])

    @cached_property
    def dev(self):
        return glue.encode(glue.load_split(self.task, "validation", self.data_dir), self.tokenizer)

    def compute_mi_map(self, widths: str) -> mimap.MIMap:
        return neuron_mi_map(self.run, self.fraction, reduction=self.reduction, alpha=self.alpha, seed=self.seed,
                                   max_batches=self.max_batches, widths=widths, tol=self.mi_tol, data_dir=self.data_dir,
                                   cache=self.cache, progress=self.progress)

    @property
    def setting(self) -> str:
        """The settings a pruned cell depends on beyond method, level and trial (its cache folder)."""
        return (f"f{self.fraction:g}-s{self.seed}-m{self.mds_seeds}-b{self.max_batches or 'all'}"
                f"-a{self.alpha:g}-{self.reduction}" + ("-exact" if self.mi_tol is None else f"-t{self.mi_tol:g}")
                + ("" if self.mds == "smacof" else f"-{self.mds}")
                + ("" if self.mds_mass is None else f"-mass{self.mds_mass:g}")
                + ("" if self.cluster == "kmeans" else f"-{self.cluster}")
                + ("" if self.fit_fraction in (None, self.fraction) else f"-fit{self.fit_fraction:g}")
                + ("-skipfirst" if self.skip_first else ""))


def pruned_model(ctx: Context, keep: Sequence[Sequence[int]], method: str | None = None,
                 compensation: str = "none") -> torch.nn.Module:
    """The model pruned to ``keep``, tuned if ``method`` tunes weights, else compensated (chapter 9) on the
    calibration sample; the dense one is left as it is."""
    tune = METHODS[method].tune if method else None
    if tune:
        return tune(ctx, keep)
    if compensation == "none":
        return ctx.pruned(keep)
    partners = METHODS[method].partners(ctx, keep) if compensation == "merge" else None
    return compensate(copy.deepcopy(ctx.model), keep, ctx.fit_batches, replace(ctx.fit_options, mode=compensation),
                      partners, ctx.compensation_stats(), ctx.seed)[0]


def evaluate_keep(ctx: Context, keep: Sequence[Sequence[int]], method: str | None = None,
                  compensation: str = "none") -> dict[str, float]:
    """Dev metrics of the model pruned to ``keep`` (tuned, if ``method`` tunes weights, or compensated)."""
    return evaluate(pruned_model(ctx, keep, method, compensation), ctx.task, ctx.dev)


def check_levels(levels: Sequence[float]) -> list[float]:
    """The distinct levels, highest first; each the fraction of every layer's FFN neurons kept, in (0, 1]."""
    bad = [x for x in levels if not 0 < x <= 1]
    if bad:
        raise ValueError(f"levels are kept fractions of each layer's FFN neurons, in (0, 1]; got {bad} (e.g. 0.4 keeps 40%)")
    return sorted(set(levels), reverse=True)


def _budget(method: str, allocation: str) -> str:
    """A cell's setting: its allocation where it is not the method's own (the choice depends on it)."""
    return "" if allocation == METHODS[method].allocation else allocation


def sweep(runs: Sequence[str | os.PathLike], methods: Sequence[str], levels: Sequence[float], trials: int | None = None,
          profile: str = "full", cache: str | os.PathLike | None = None, progress: bool = True,
          compensation: str | None = None, allocation: str | None = None, **context_kwargs) -> pd.DataFrame:
    """Prune every run with every method at every level; a tidy table of dev metrics.

    ``levels`` are FFN-relative FLOPs (kept fractions, of every layer under the uniform allocation,
    of all layers together under another allocation, such as FLAP's). ``trials`` overrides each
    method's number of seeds (e.g. 1 for a quick profile). ``compensation`` and ``allocation`` apply to
    every method (``None``: each method's own; chapter 9). Methods that need a class distribution are
    skipped on regression tasks. Cells run on :mod:`minilib.experiments.engine`, cached under
    ``<cache>/sweeps/<run>/<settings>/``, so an interrupted sweep resumes; ``context_kwargs`` go to
    :class:`Context`.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    plans = {m: check_plan(m, compensation, allocation)[1:] for m in methods}  # (compensation, allocation), refused early
    levels = check_levels(levels)
    contexts = [Context(Path(r), cache=cache, progress=progress, **context_kwargs) for r in runs]
    rows = []
    for ctx in contexts:
        size = surgery.ffn_sizes(ctx.model)[0]
        cells = [engine.Cell(name, max(1, round(level * size)), t, _budget(name, plans[name][1]))
                 for name in methods for level in levels
                 for t in range(trials or METHODS[name].trials)
                 if not (METHODS[name].reads_output and ctx.task.is_regression)]  # e.g. HFPrune on STS-B

        def choose(cell: engine.Cell, ctx: Context = ctx, size: int = size) -> list[np.ndarray]:
            counts = layer_counts(ctx, cell.method, plans[cell.method][1], cell.level / size, seed=cell.trial)
            keep = METHODS[cell.method].select(ctx, counts, cell.trial)
            if [len(k) for k in keep] != counts:
                raise RuntimeError(f"{cell.method} kept {[len(k) for k in keep]} neurons, expected {counts}")
            return keep

        def key(cell: engine.Cell, choice) -> str:  # a method that changes weights has its own evaluations
            mode = plans[cell.method][0]
            return ((f"{cell.method}-" if METHODS[cell.method].tune else "") + ("" if mode == "none" else f"{mode}-")
                    + short_hash(json.dumps(choice)))

        folder = (cache_dir(cache) / "sweeps" / ctx.run.parent.parent.name / ctx.run.parent.name / ctx.run.name
                  / f"{ctx.setting}-code{code_fingerprint('minilib.experiments.glue_sweep')}")  # the run's name holds its data
        records = engine.run(cells, choose, lambda cell, keep, ctx=ctx: pruned_model(ctx, keep, cell.method,
                                                                                     plans[cell.method][0]),
                             lambda model, ctx=ctx: evaluate(model, ctx.task, ctx.dev), folder, key, progress,
                             f"pruning sweep ({ctx.task.name})")
        for r in records:
            cell, kept = r["cell"], [len(k) for k in r["choice"]]
            flops = surgery.relative_flops(ctx.model.config, kept, surgery.MEAN_DEV_LENGTH[ctx.task.name])["encoder"]
            for metric, value in r["metrics"].items():
                rows.append({"task": ctx.task.name, "method": cell.method, "labels": METHODS[cell.method].labels,
                             "compensation": plans[cell.method][0], "allocation": plans[cell.method][1],
                             "fit_fraction": ctx.fit_fraction or ctx.fraction, "skip_first": ctx.skip_first,
                             "cluster": ctx.cluster,  # the setting; only the clustering methods read it
                             "ffn_flops": cell.level / size, "encoder_flops": round(flops, 4), "trial": cell.trial,
                             "metric": metric, "value": round(value, 2),
                             "seconds": round(r["select_seconds"] + r["eval_seconds"], 2),
                             "model": ctx.result["model"], "profile": profile, "code": r["code"]})
    return pd.DataFrame(rows)


# A sweep's rows as ``--update`` replaces them: a method on a task (a table holds one command's settings,
# its compensation and allocation included, so these name a row's cells)
UPDATE_KEYS = ("task", "method")

# The Context settings chapter 6 varies (Figs. 5–7 and open decision 1), with their types.
ABLATIONS: dict[str, type] = {"fraction": float, "alpha": float, "mds_seeds": int, "reduction": str, "cluster": str}
ABLATION_CHOICES = {"reduction": ("mean", "cls", "tokens"), "cluster": selection.CLUSTERINGS}


def ablate(runs: Sequence[str | os.PathLike], parameter: str, values: Sequence, levels: Sequence[float],
           method: str = "mi-mds", **sweep_kwargs) -> pd.DataFrame:
    """:func:`sweep` of one method with one :class:`Context` setting varied; adds ``ablation`` and ``setting``.

    E.g. ``ablate(runs, "fraction", [0.01, 0.1, 0.5, 1.0], levels)`` is the paper's Fig. 5.
    MI against Pearson (Fig. 4) and Scott's widths (Fig. 3) are methods of the main sweep instead.
    """
    if parameter not in ABLATIONS:
        raise ValueError(f"unknown ablation {parameter!r}; choose from {', '.join(ABLATIONS)}")
    cast = ABLATIONS[parameter]
    return pd.concat([sweep(runs, [method], levels, **{**sweep_kwargs, parameter: cast(v)})
                      .assign(ablation=parameter, setting=str(cast(v))) for v in values], ignore_index=True)


PAPER_DENSE = "paper: BERT-tiny (dense)"


def published(name: str) -> pd.DataFrame:
    """A committed result table of the full profile, ``results/<name>.csv`` (chapters 5–6 render from them);
    a name ending in ``-*`` concatenates the tables of one run split by setting (``minilm-compensation-*``)."""
    paths = sorted(results_dir().glob(f"{name}.csv")) if name.endswith("-*") else [results_dir() / f"{name}.csv"]
    if not paths or not paths[0].is_file():
        raise FileNotFoundError(f"{results_dir() / name}.csv is missing; regenerate it with `make results` "
                                "(README, 'Results')")
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def published_dense(init: str = "offline", seed: int = 0) -> pd.DataFrame:
    """The committed dense dev scores of the fine-tune a sweep pruned (one init and seed): BERT-tiny's
    from ``finetune_scores.csv``, MiniLM's from ``minilm-finetune.csv`` (chapter 8)."""
    name = "minilm-finetune" if init == "minilm" else "finetune_scores"
    scores = published(name)
    dense = scores[(scores.init == init) & (scores.seed == seed)]
    if dense.empty:
        raise ValueError(f"results/{name}.csv has no rows for init={init!r}, seed={seed}; "
                         "regenerate it with `make results`")
    return dense


def summarize(table: pd.DataFrame, by: str = "method") -> pd.DataFrame:
    """Mean and standard deviation over trials of every (task, ``by``, level, metric).

    ``by`` is ``"method"`` for a sweep, ``"setting"`` for an :func:`ablate` table.
    """
    keys = ["task", by, *(["labels"] if by == "method" else []), "ffn_flops", "encoder_flops", "metric"]
    out = table.groupby(keys, sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    return out.assign(std=out["std"].fillna(0.0))


def _at_level(table: pd.DataFrame, level: float) -> pd.DataFrame:
    """The rows of the level nearest ``level`` (a level is a whole number of neurons: 205/512 for 40%)."""
    gap = (table.ffn_flops - level).abs()
    if gap.min() > 0.01:
        raise ValueError(f"no level within 0.01 of {level} in the table (levels: {sorted(table.ffn_flops.unique())})")
    return table[np.isclose(gap, gap.min())]


FIRST_OUT = ", [CLS] out"  # compensation_table's label of a fit without each sentence's first token


def compensation_table(table: pd.DataFrame, dense: pd.DataFrame, level: float = 0.4,
                       change: bool = False) -> pd.DataFrame:
    """Table 2 at ``level`` under each compensation (chapter 9).

    ``table`` is sweeps of the same runs with ``compensation`` set (concatenated); one row per method
    with its allocation (uniform, global, redundancy; each in the registry's order), one column per
    task metric and compensation (the mean over trials; a fit that left the first token out, a
    sweep's ``--skip-first``, is its own column after its mode's, as ``bias, [CLS] out``). The
    dense model's scores (``dense``, as for :func:`compare_table2`) come first; ``change=True`` gives
    instead each compensation's change from the same method without one (score points; ``none``
    must be among the compensations).
    """
    s = _at_level(table, level)
    skip = s.get("skip_first", pd.Series(False, index=s.index)).fillna(False).astype(bool)  # absent: every token
    s = s.assign(row=s.method + " (" + s.allocation + ")", column=s.task + " " + s.metric,
                 compensation=s.compensation.where(~skip, s.compensation + FIRST_OUT))
    wide = s.pivot_table(index="row", columns=["column", "compensation"], values="value", aggfunc="mean", sort=False)
    rows = s.drop_duplicates("row")  # by budget, then in the registry's order
    rank = rows.allocation.map(list(ALLOCATIONS).index) * len(METHODS) + rows.method.map(list(METHODS).index)
    wide = wide.loc[rows.row.iloc[np.argsort(rank.values, kind="stable")]]
    modes = [m + tail for m in COMPENSATIONS for tail in ("", FIRST_OUT) if m + tail in set(s.compensation)]
    wide = wide.reindex(columns=pd.MultiIndex.from_product([s.column.unique(), modes]))
    if change:
        if "none" not in modes:
            raise ValueError("change=True compares with compensation none; the table has none of it")
        return wide.sub(wide.xs("none", axis=1, level=1), level=0).drop(columns="none", level=1)
    scores = dense.assign(column=dense.task + " " + dense.metric).set_index("column")["value"]
    dense_row = pd.DataFrame([[scores.get(c, np.nan) if m == "none" else np.nan for c, m in wide.columns]],
                             index=["dense"], columns=wide.columns)
    return pd.concat([dense_row, wide])


def compare_table2(table: pd.DataFrame, dense: pd.DataFrame, level: float = 0.4) -> pd.DataFrame:
    """Table 2 at FFN-relative FLOPs ``level``: this run's methods beside the paper's rows.

    ``dense`` is the dense model's scores (``results/finetune_scores.csv`` rows of the same model),
    shown as the first row; the paper's published rows follow their reproductions, starting with
    its unpruned BERT-tiny (row ``PAPER_DENSE``).
    """
    s = _at_level(summarize(table), level).assign(column=lambda d: d.task + " " + d.metric)
    ours = s.pivot_table(index="method", columns="column", values="mean", sort=False)
    ours.index = [f"{m} ({METHODS[m].labels})" for m in ours.index]
    dense_row = dense.assign(column=dense.task + " " + dense.metric).pivot_table(
        columns="column", values="value", sort=False)
    dense_row.index = ["dense (this run)"]
    rows = {PAPER_DENSE: paper.BERT_TINY, **{f"paper: {name}" + ("" if "(" in name else f" ({lab})"): scores
                                              for name, (lab, scores) in paper.TABLE2_40.items()}}
    published = pd.DataFrame({f"{t} {m}": [r[t][m] for r in rows.values()]
                              for t in paper.BERT_TINY for m in paper.BERT_TINY[t]}, index=list(rows))
    cols = [f"{t} {m}" for t in paper.BERT_TINY for m in paper.BERT_TINY[t] if f"{t} {m}" in ours.columns]
    return pd.concat([dense_row[cols], ours, published[[c for c in cols if c in published]]])


def drops_from_dense(t2: pd.DataFrame) -> pd.DataFrame:
    """:func:`compare_table2`'s rows as differences from their own dense model (score points).

    This run's methods are measured against ``"dense (this run)"``, the paper's rows against its
    unpruned BERT-tiny (``PAPER_DENSE``): what pruning costs, comparable across the two models.
    """
    paper_rows = [i for i in t2.index if i.startswith("paper")]
    ours, theirs = t2.drop(index=paper_rows), t2.loc[paper_rows]
    return pd.concat([(ours - ours.loc["dense (this run)"]).drop(index="dense (this run)"),
                      (theirs - theirs.loc[PAPER_DENSE]).drop(index=PAPER_DENSE)])


def main(argv: list[str] | None = None) -> None:
    from minilib.experiments.finetune import finetune

    parser = ArgumentParser(prog="minilib sweep", description="Prune a fine-tuned BERT encoder's FFN neurons "
                            "(BERT-tiny, or all-MiniLM-L6-v2 with --init minilm): methods × levels × tasks.")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "stsb", "mrpc"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--levels", nargs="+", type=float, default=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    parser.add_argument("--init", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mds-seeds", type=int, default=20)
    parser.add_argument("--mds", default="smacof", choices=["smacof", "classical"],
                        help="MDS solver of the MI pipelines (classical: one eigendecomposition per layer)")
    parser.add_argument("--mds-mass", type=float,
                        help="with --mds classical: the MDS axes holding this share of the eigenvalue mass")
    parser.add_argument("--cluster", default=Settings.cluster, choices=list(selection.CLUSTERINGS),
                        help="cluster step of the MI pipelines: kmedoids / agglomerative on the MI distances, or "
                        "kmeans on --mds coordinates (the paper's literal pipeline)")
    parser.add_argument("--ablate", choices=list(ABLATIONS), help="vary this setting for --methods' first method")
    parser.add_argument("--values", nargs="+", default=[], help="the settings --ablate takes")
    parser.add_argument("--compensation", choices=list(COMPENSATIONS),
                        help="every method's compensation (default: each method's own; chapter 9)")
    parser.add_argument("--allocation", choices=list(ALLOCATIONS),
                        help="every method's budget across layers (default: each method's own; chapter 9)")
    parser.add_argument("--fit-fraction", type=float, help="compensation fits on this fraction of the training "
                        "set (default: the methods' 1%%; chapter 9 uses 0.1)")
    parser.add_argument("--skip-first", action="store_true",
                        help="compensation fits leave each sentence's first token ([CLS]) out (chapter 9)")
    parser.add_argument("--out", default="results/pruning.csv")
    parser.add_argument("--update", action="store_true", help="replace only this run's rows (its tasks × methods) "
                        "in the existing --out table, written by the same command, and keep the others")
    args = parser.parse_args(argv)
    if args.ablate and not args.values:
        parser.error("--ablate needs --values, e.g. --ablate fraction --values 0.01 0.1 0.5 1")
    if args.update and args.ablate:
        parser.error("--update rewrites a sweep's rows; an ablation table is written whole (drop --update)")
    if args.update and not Path(args.out).is_file():
        parser.error(f"--update: {args.out} does not exist; run without --update to write it")
    # every argument is checked before the first fine-tune (which may take minutes)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    check_levels(args.levels)
    Settings(mds=args.mds, mds_mass=args.mds_mass, cluster=args.cluster)  # the selection's options, checked early
    for m in args.methods:
        check_plan(m, args.compensation, args.allocation)
    if args.fit_fraction is not None and not 0 < args.fit_fraction <= 1:
        raise ValueError(f"--fit-fraction is a fraction of the training set, in (0, 1]; got {args.fit_fraction}")
    for t in args.tasks:
        glue.get_task(t)
    if args.ablate:
        values = [ABLATIONS[args.ablate](v) for v in args.values]
        allowed = ABLATION_CHOICES.get(args.ablate)
        if allowed and set(values) - set(allowed):
            raise ValueError(f"--values for {args.ablate} must be among {', '.join(allowed)}, got {args.values}")
    check_output(args.out)  # results/ from a clean tree only
    runs = [finetune(t, args.init, args.seed) for t in args.tasks]
    options = dict(mds_seeds=args.mds_seeds, seed=args.seed, mds=args.mds, cluster=args.cluster,
                   mds_mass=args.mds_mass, compensation=args.compensation, allocation=args.allocation,
                   fit_fraction=args.fit_fraction, skip_first=args.skip_first)
    if args.ablate:
        table = ablate(runs, args.ablate, args.values, args.levels, args.methods[0], **options)
    else:
        table = sweep(runs, args.methods, args.levels, **options)
    written = write_table(Path(args.out), table, UPDATE_KEYS if args.update else ())
    print(f"{len(table)} rows → {args.out}" + (f" ({len(written)} in all)" if args.update else ""))

