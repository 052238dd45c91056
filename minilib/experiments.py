"""The pruning sweep: methods × compression levels × tasks, evaluated on each task's dev set.

For one fine-tuned run (:func:`minilib.finetune.finetune`) a :class:`Context` holds what every
method may read: the dense model, the calibration sample (the random 1% of the training set the
MI map uses, with labels for the supervised peers), the MI map and the dev set. A method maps
``(context, keep, seed)`` to one keep-set per layer; :func:`evaluate_keep` removes the other
neurons (:mod:`minilib.surgery`) and scores the pruned model with the task's official metrics.

The compression level is the **FFN-relative FLOPs** (the kept fraction of FFN neurons, the same
in every layer: method notes, decision 6); the encoder-relative FLOPs at the task's mean dev
length are recorded beside it (decision 9). :func:`sweep` caches every cell as a small JSON file,
so an interrupted sweep resumes where it stopped, and returns a tidy table with provenance.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import glue, mimap, paper, peers, selection, surgery
from .cache import atomic_file, cache_dir, code_revision, read_json, results_dir, write_json
from .finetune import evaluate, load_finetuned, read_result
from .models import load_tokenizer

__all__ = ["Context", "Method", "METHODS", "mds_candidates", "kl_choice", "evaluate_keep", "sweep",
           "ABLATIONS", "ablate", "published", "summarize", "PAPER_DENSE", "compare_table2", "main"]


@dataclass
class Context:
    """A fine-tuned run and the data every pruning method may read (built lazily, then kept)."""

    run: Path
    fraction: float = 0.01  # calibration sample: this fraction of the training set (the paper: 1%)
    seed: int = 0  # draws the calibration sample
    mds_seeds: int = 20  # M, the candidates of the subsidiary condition (the paper: 500)
    max_batches: int | None = None  # MI map batches (None: all)
    alpha: float = 1.01  # Rényi order of the MI map (the paper: 1.01)
    reduction: str = "mean"  # one sample of a neuron per sentence: "mean", "cls" or every token ("tokens")
    data_dir: str | os.PathLike | None = None
    cache: str | os.PathLike | None = None
    scores: dict[str, peers.Scores] = field(default_factory=dict)
    embeddings: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)  # MDS fits, shared by levels
    maps: dict[str, mimap.MIMap] = field(default_factory=dict)  # MI maps by kernel-width estimator, loaded once

    def __post_init__(self) -> None:
        self.run = Path(self.run)
        self.result = read_result(self.run)
        self.task = glue.get_task(self.result["task"])

    @cached_property
    def model(self):
        return load_finetuned(self.run)

    @cached_property
    def calibration(self) -> list[dict[str, torch.Tensor]]:
        """The calibration sentences (with labels) in batches of 32, the same rows as the MI map's."""
        train = glue.load_split(self.task, "train", self.data_dir)
        rows = mimap.calibration_indices(len(train), self.fraction, self.seed)
        return list(glue.Batches(glue.encode(train.select(rows), load_tokenizer()), 32))

    @cached_property
    def dev(self):
        return glue.encode(glue.load_split(self.task, "validation", self.data_dir), load_tokenizer())

    @property
    def mi_map(self) -> mimap.MIMap:
        return self.mi_map_with("aligned")

    def mi_map_with(self, widths: str) -> mimap.MIMap:
        """The MI map with per-neuron ``"aligned"`` widths (the method) or plain ``"scott"`` ones (Fig. 3)."""
        if widths not in self.maps:
            self.maps[widths] = mimap.neuron_mi_map(
                self.run, self.fraction, reduction=self.reduction, alpha=self.alpha, seed=self.seed,
                max_batches=self.max_batches, widths=widths, data_dir=self.data_dir, cache=self.cache, progress=False)
        return self.maps[widths]

    @property
    def setting(self) -> str:
        """The settings a pruned cell depends on beyond method, level and trial (its cache folder)."""
        return (f"f{self.fraction:g}-s{self.seed}-m{self.mds_seeds}-b{self.max_batches or 'all'}"
                f"-a{self.alpha:g}-{self.reduction}")

    def similarity(self, matrix: str) -> tuple[mimap.MIMap, np.ndarray]:
        """The map and the similarity the MDS pipeline reads: ``"mi"``, ``"mi-scott"`` or ``"pcc"`` (|r|)."""
        m = self.mi_map_with("scott") if matrix == "mi-scott" else self.mi_map
        return m, np.abs(m.pearson) if matrix == "pcc" else m.mi

    def embedding(self, matrix: str, layer: int, seed: int) -> np.ndarray:
        """MDS coordinates of a layer's live neurons (one fit per seed, reused at every level)."""
        key = (matrix, layer, seed)
        if key not in self.embeddings:
            m, S = self.similarity(matrix)
            live = np.flatnonzero(m.alive[layer])
            self.embeddings[key] = selection.mds_embedding(S[layer][np.ix_(live, live)], seed=seed)
        return self.embeddings[key]

    @cached_property
    def representation(self) -> torch.Tensor:
        """The dense model's pooler outputs on the calibration sample (the ``z_o`` of Eq. 2)."""
        return self.represent(self.model)

    @torch.inference_mode()
    def represent(self, model) -> torch.Tensor:
        return torch.cat([model.bert(**{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
                                     ).pooler_output for b in self.calibration]).double()

    def pruned(self, keep: Sequence[np.ndarray]):
        return surgery.prune_ffn(copy.deepcopy(self.model), keep)


@dataclass(frozen=True)
class Method:
    """A pruning method: what it reads, how it is labelled in tables, and its keep-set rule."""

    labels: str  # "U" unsupervised, "S" supervised, "Self-S" self-supervised (Table 2's column)
    select: Callable[[Context, int, int], list[np.ndarray]]  # (context, keep per layer, seed) → keep-sets
    trials: int = 1  # seeds averaged in the table (10 for Random, as in the paper)
    tune: Callable[[Context, Sequence[np.ndarray]], torch.nn.Module] | None = None  # retraining-free weight fix
    needs_classes: bool = False  # reads a class distribution: not defined for STS-B's regression
    description: str = ""


def _scored(name: str, score: Callable[[Context], peers.Scores]) -> Callable[[Context, int, int], list[np.ndarray]]:
    def select(ctx: Context, keep: int, seed: int) -> list[np.ndarray]:
        if name not in ctx.scores:
            ctx.scores[name] = score(ctx)
        return peers.keep_top(ctx.scores[name], keep)
    return select


def mds_candidates(ctx: Context, keep: int, seeds: Sequence[int], matrix: str = "mi") -> list[list[np.ndarray]]:
    """One keep-set per layer for every seed: MDS + k-means (§3.3.3) on a similarity map.

    ``matrix`` is ``"mi"`` (aligned widths), ``"mi-scott"`` (Scott's widths) or ``"pcc"`` (|Pearson r|).
    """
    m, S = ctx.similarity(matrix)
    return [[selection.mds_select(S[layer], keep, s, alive=m.alive[layer], embedding=ctx.embedding(matrix, layer, s))
             for layer in range(m.n_layers)] for s in seeds]


def kl_choice(ctx: Context, candidates: Sequence[Sequence[np.ndarray]]) -> tuple[int, list[float]]:
    """The subsidiary condition (Eq. 2) on ``ctx``'s calibration sample: (winner, every KL)."""
    return selection.choose_by_kl(candidates, lambda keep: ctx.represent(ctx.pruned(keep)), ctx.representation)


def _mds_kl(matrix: str) -> Callable[[Context, int, int], list[np.ndarray]]:
    """The proposed pipeline: M seeds of MDS + k-means, the candidate closest in KL kept."""
    def select(ctx: Context, keep: int, seed: int) -> list[np.ndarray]:
        candidates = mds_candidates(ctx, keep, [seed * 100_003 + s for s in range(ctx.mds_seeds)], matrix)
        return candidates[kl_choice(ctx, candidates)[0]]
    return select


def _rearranged_fisher(ctx: Context, keep: int, seed: int) -> list[np.ndarray]:
    if "fisher-matrices" not in ctx.scores:
        ctx.scores["fisher-matrices"] = peers.fisher_matrices(ctx.model, ctx.calibration)
    F = ctx.scores["fisher-matrices"]
    start = peers.keep_top([np.diag(f) for f in F], keep)
    return [peers.rearrange_mask(k, f) for k, f in zip(start, F)]


def _least_squares(ctx: Context, keep: Sequence[np.ndarray]) -> torch.nn.Module:
    return peers.least_squares_tuning(ctx.model, ctx.pruned(keep), ctx.calibration)


def _algorithm1(ctx: Context, keep: int, seed: int) -> list[np.ndarray]:
    m = ctx.mi_map
    return [selection.algorithm1(m.mi[layer], keep, seed=seed, alive=m.alive[layer]) for layer in range(m.n_layers)]


METHODS: dict[str, Method] = {
    "random": Method("U", lambda ctx, keep, seed: peers.keep_top(
        peers.random_scores(surgery.ffn_sizes(ctx.model), seed), keep), trials=10,
        description="uniformly random neurons"),
    "magnitude": Method("U", _scored("magnitude", lambda ctx: peers.magnitude_scores(ctx.model)),
                        description="L1 norm of the neuron's input weights"),
    "taylor": Method("S", _scored("taylor", lambda ctx: peers.taylor_scores(ctx.model, ctx.calibration)),
                     description="TextPruner first-order Taylor, task loss"),
    "taylor-self": Method("Self-S", _scored("taylor-self", lambda ctx: peers.taylor_scores(
        ctx.model, ctx.calibration, "self")), needs_classes=True, description="TextPruner Taylor, the model's own predictions"),
    "fisher": Method("S", _scored("fisher", lambda ctx: peers.fisher_scores(ctx.model, ctx.calibration)),
                     description="Kwon et al. mask Fisher information (no rearrangement or tuning)"),
    "mask-tuning": Method("S", _rearranged_fisher, tune=_least_squares,
                          description="Kwon et al.: Fisher mask, mask rearrangement, least-squares tuning"),
    "hfprune": Method("U", _scored("hfprune", lambda ctx: peers.entropy_taylor_scores(ctx.model, ctx.calibration)),
                      needs_classes=True, description="HFPrune entropy-Taylor score"),
    "kcm": Method("U", _scored("kcm", lambda ctx: peers.kcm_scores(ctx.model, ctx.calibration)),
                  description="KCM's R2D2: kernelised convex-hull rank of W2 columns × mean-activation rank"),
    "mi-alg1": Method("U", _algorithm1, description="proposed: Algorithm 1 on the MI map, calibrated T_r"),
    "pcc-mds": Method("U", _mds_kl("pcc"), description="the proposed pipeline with |Pearson r| in place of MI"),
    "mi-mds": Method("U", _mds_kl("mi"), description="proposed: MDS + k-means on the MI map, KL among M seeds"),
    "mi-mds-scott": Method("U", _mds_kl("mi-scott"), description="the proposed pipeline with Scott's widths (Fig. 3)"),
}


def evaluate_keep(ctx: Context, keep: Sequence[np.ndarray], method: str | None = None) -> dict[str, float]:
    """Dev metrics of the model pruned to ``keep`` (and tuned, if ``method`` tunes weights)."""
    tune = METHODS[method].tune if method else None
    return evaluate(tune(ctx, keep) if tune else ctx.pruned(keep), ctx.task, ctx.dev)


def _check_levels(levels: Sequence[float]) -> list[float]:
    bad = [x for x in levels if not 0 < x <= 1]
    if bad:
        raise ValueError(f"compression levels are kept fractions in (0, 1]; got {bad} (e.g. 0.4 keeps 40%)")
    return sorted(set(levels), reverse=True)


def sweep(runs: Sequence[str | os.PathLike], methods: Sequence[str], levels: Sequence[float], trials: int | None = None,
          profile: str = "full", cache: str | os.PathLike | None = None, progress: bool = True,
          **context_kwargs) -> pd.DataFrame:
    """Prune every run with every method at every level; a tidy table of dev metrics.

    ``levels`` are FFN-relative FLOPs (kept fractions). ``trials`` overrides each method's
    number of seeds (e.g. 1 for a quick profile). Methods that need a class distribution are
    skipped on regression tasks. Cells are cached under ``<cache>/sweeps/<run>/<settings>/`` and
    reused, so an interrupted sweep resumes; ``context_kwargs`` go to :class:`Context`.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    levels = _check_levels(levels)
    revision = code_revision()
    contexts = [Context(Path(r), cache=cache, **context_kwargs) for r in runs]
    cells = [(ctx, name, level, t) for ctx in contexts for name in methods for level in levels
             for t in range(trials or METHODS[name].trials)
             if not (METHODS[name].needs_classes and ctx.task.is_regression)]  # e.g. HFPrune on STS-B
    rows = []
    bar = tqdm(cells, desc="pruning sweep", unit="cell", disable=not progress)
    for ctx, name, level, trial in bar:
        bar.set_postfix(task=ctx.task.name, method=name, level=level)
        sizes = surgery.ffn_sizes(ctx.model)
        keep_n = max(1, round(level * sizes[0]))
        path = (cache_dir(cache) / "sweeps" / ctx.run.parent.parent.name / ctx.run.parent.name / ctx.run.name
                / ctx.setting / name / f"keep{keep_n}-t{trial}.json")
        if path.is_file():
            cell = read_json(path)
        else:
            start = time.perf_counter()
            keep = METHODS[name].select(ctx, keep_n, trial)
            if [len(k) for k in keep] != [keep_n] * len(sizes):
                raise RuntimeError(f"{name} kept {[len(k) for k in keep]} neurons, expected {keep_n} per layer")
            metrics = evaluate_keep(ctx, keep, name)
            kept = [len(k) for k in keep]
            cell = {"metrics": metrics, "kept": kept, "seconds": round(time.perf_counter() - start, 2),
                    "encoder_flops": surgery.relative_flops(ctx.model.config, kept,
                                                            surgery.MEAN_DEV_LENGTH[ctx.task.name])["encoder"],
                    "keep_sets": [k.tolist() for k in keep], "code": revision}
            write_json(path, cell)
        for metric, value in cell["metrics"].items():
            rows.append({"task": ctx.task.name, "method": name, "labels": METHODS[name].labels,
                         "ffn_flops": keep_n / sizes[0], "encoder_flops": round(cell["encoder_flops"], 4),
                         "trial": trial, "metric": metric, "value": round(value, 2),
                         "seconds": cell["seconds"], "model": ctx.result["model"], "profile": profile,
                         "code": cell["code"]})
    return pd.DataFrame(rows)


# The Context settings chapter 6 varies (Figs. 5–7 and decision 1), with their types.
ABLATIONS: dict[str, type] = {"fraction": float, "alpha": float, "mds_seeds": int, "reduction": str}


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
    """A committed result table of the full profile, ``results/<name>.csv`` (chapters 5–6 render from them)."""
    path = results_dir() / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate it with `make results` (README, 'Results')")
    return pd.read_csv(path)


def published_dense(init: str = "offline", seed: int = 0) -> pd.DataFrame:
    """The committed dense dev scores of the fine-tune a sweep pruned (``finetune_scores.csv``, one init and seed)."""
    scores = published("finetune_scores")
    dense = scores[(scores.init == init) & (scores.seed == seed)]
    if dense.empty:
        raise ValueError(f"results/finetune_scores.csv has no rows for init={init!r}, seed={seed}; "
                         "regenerate it with `make results`")
    return dense


def summarize(table: pd.DataFrame, by: str = "method") -> pd.DataFrame:
    """Mean and standard deviation over trials of every (task, ``by``, level, metric).

    ``by`` is ``"method"`` for a sweep, ``"setting"`` for an :func:`ablate` table.
    """
    keys = ["task", by, *(["labels"] if by == "method" else []), "ffn_flops", "encoder_flops", "metric"]
    out = table.groupby(keys, sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    return out.assign(std=out["std"].fillna(0.0))


def compare_table2(table: pd.DataFrame, dense: pd.DataFrame, level: float = 0.4) -> pd.DataFrame:
    """Table 2 at FFN-relative FLOPs ``level``: this run's methods beside the paper's rows.

    ``dense`` is the dense model's scores (``results/finetune_scores.csv`` rows of the same model),
    shown as the first row; the paper's published rows follow their reproductions, starting with
    its unpruned BERT-tiny (row ``PAPER_DENSE``).
    """
    s = summarize(table)
    gap = (s.ffn_flops - level).abs()  # a level is a whole number of neurons: 205/512 for 40%
    if gap.min() > 0.01:
        raise ValueError(f"no level within 0.01 of {level} in the table (levels: {sorted(s.ffn_flops.unique())})")
    s = s[np.isclose(gap, gap.min())].assign(column=lambda d: d.task + " " + d.metric)
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


def main(argv: list[str] | None = None) -> None:
    from .finetune import finetune

    parser = argparse.ArgumentParser(description="Prune fine-tuned BERT-tiny FFN neurons: methods × levels × tasks.")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "stsb", "mrpc"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--levels", nargs="+", type=float, default=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    parser.add_argument("--init", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mds-seeds", type=int, default=20)
    parser.add_argument("--ablate", choices=list(ABLATIONS), help="vary this setting for --methods' first method")
    parser.add_argument("--values", nargs="+", default=[], help="the settings --ablate takes")
    parser.add_argument("--out", default="results/pruning.csv")
    args = parser.parse_args(argv)
    if args.ablate and not args.values:
        parser.error("--ablate needs --values, e.g. --ablate fraction --values 0.01 0.1 0.5 1")
    runs = [finetune(t, args.init, args.seed) for t in args.tasks]
    if args.ablate:
        table = ablate(runs, args.ablate, args.values, args.levels, args.methods[0], mds_seeds=args.mds_seeds,
                       seed=args.seed)
    else:
        table = sweep(runs, args.methods, args.levels, mds_seeds=args.mds_seeds, seed=args.seed)
    atomic_file(Path(args.out), lambda p: table.to_csv(p, index=False))
    print(f"{len(table)} rows → {args.out}")


if __name__ == "__main__":
    main()
