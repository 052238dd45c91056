"""Critical neurons: single FFN neurons whose removal alone breaks a fine-tuned model (chapter 8).

A redundancy criterion asks which neurons the others already explain; it does not ask what a
neuron weighs in the output. With per-neuron kernel widths (§3.4) the MI map is blind to a
neuron's scale, so a neuron with a large activation and a large ``down`` column looks as
removable as any other that shares its information. This module finds such neurons, among the
highest-scoring ones of an importance criterion, by removing each alone from the dense model
(:func:`single_neuron_drops`), and asks whether each method's keep-sets hold them, and what the
pruned model scores with them put back (:func:`method_keeps`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from minilib.cache import atomic_file, cache_dir, check_output, code_fingerprint, code_revision, short_hash
from minilib.cache import cell as cached_cell
from minilib.console import ArgumentParser
from minilib.data import glue
from minilib.experiments.engine import as_json
from minilib.experiments.scale import headline
from minilib.methods import METHODS, PruningState, check_method
from minilib.methods.scores import keep_fraction

__all__ = ["redundancy_ranks", "single_neuron_drops", "critical", "restored", "method_keeps", "cached",
           "drops_table", "restoration_table", "predicted_positive", "positive_rates", "main"]

Evaluate = Callable[[Sequence[Sequence[int]]], dict[str, float]]  # a keep-set per block -> metrics


def redundancy_ranks(mi: np.ndarray) -> np.ndarray:
    """Each neuron's rank by its mean MI with the layer's other neurons (0: the most redundant)."""
    mi = np.asarray(mi, dtype=float)
    mean = (mi.sum(1) - np.diag(mi)) / (len(mi) - 1)
    return np.argsort(np.argsort(-mean, kind="stable"), kind="stable")


def single_neuron_drops(state: PruningState, evaluate: Evaluate, top: int = 2, score: str = "wanda",
                        redundancy: bool = True, progress: bool = False) -> pd.DataFrame:
    """The metrics of the dense model with one neuron removed, for each block's ``top`` neurons by ``score``.

    One row per (block, neuron, metric), with the neuron's rank under ``score`` (0: the highest)
    and, if ``redundancy``, its rank by mean MI with its layer (:func:`redundancy_ranks`). The dense
    model's metrics are the rows with ``neuron`` = -1.
    """
    if top < 1:
        raise ValueError(f"top must be a positive number of neurons per block, got {top}")
    scores = [np.asarray(s) for s in METHODS[score].score(state, 0)]
    mi = state.mi_map.mi if redundancy else None
    full = [list(range(n)) for n in state.sizes]
    rows = [{"block": -1, "neuron": -1, "score_rank": -1, "redundancy_rank": -1, "metric": k, "value": v}
            for k, v in evaluate(full).items()]
    bar = tqdm(total=len(scores) * top, desc="one neuron removed", unit="model", disable=not progress)
    for block, s in enumerate(scores):
        ranks = redundancy_ranks(mi[block]) if redundancy else None
        for rank, neuron in enumerate(np.argsort(-s, kind="stable")[:top]):
            bar.update()
            keep = [f if b != block else [i for i in f if i != neuron] for b, f in enumerate(full)]
            rows += [{"block": block, "neuron": int(neuron), "score_rank": rank,
                      "redundancy_rank": int(ranks[neuron]) if redundancy else -1, "metric": k, "value": v}
                     for k, v in evaluate(keep).items()]
    bar.close()
    return pd.DataFrame(rows)


def _losses(drops: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The single-removal rows of ``metric``, with the dense score and the loss from it."""
    rows = drops[drops.metric == metric]
    if rows.empty:
        raise ValueError(f"no {metric!r} rows; the table has {sorted(drops.metric.unique())}")
    dense = rows[rows.neuron == -1].value.iloc[0]
    rows = rows[rows.neuron >= 0]
    return rows.assign(dense=dense, drop=dense - rows.value)


def critical(drops: pd.DataFrame, metric: str, min_drop: float) -> list[tuple[int, int]]:
    """The (block, neuron) pairs whose removal alone lowers ``metric`` by at least ``min_drop`` points."""
    rows = _losses(drops, metric)
    hit = rows[rows["drop"] >= min_drop]
    return [(int(b), int(n)) for b, n in zip(hit.block, hit.neuron)]


def restored(keep: Sequence[Sequence[int]], neurons: Sequence[tuple[int, int]]) -> list[list[int]]:
    """``keep`` with the (block, neuron) pairs added (each block keeps at most that many more neurons)."""
    out = [sorted(int(i) for i in k) for k in keep]
    for block, neuron in neurons:
        if neuron not in out[block]:
            out[block] = sorted(out[block] + [neuron])
    return out


def cached(folder: Path, evaluate: Evaluate) -> Evaluate:
    """``evaluate`` with each keep-set's metrics kept under ``folder``, so an interrupted run resumes."""
    def call(keep: Sequence[Sequence[int]]) -> dict[str, float]:
        choice = as_json(list(keep))
        return cached_cell(Path(folder) / "evaluations" / f"{short_hash(json.dumps(choice))}.json",
                           lambda: evaluate(choice))
    return call


def method_keeps(state: PruningState, evaluate: Evaluate, methods: Sequence[str], levels: Sequence[float],
                 neurons: Sequence[tuple[int, int]], progress: bool = False, folder: Path | None = None
                 ) -> pd.DataFrame:
    """For each method and kept fraction: which ``neurons`` its keep-set holds, and its metrics as chosen
    and with the missing ones restored (:func:`restored`; evaluated only where one is missing).

    The keep-sets are the methods' own (``METHODS[m].select(state, keep, 0)``), the same as a sweep's
    trial 0 for the same state; with a ``folder`` each is kept there once chosen.
    """
    for m in methods:
        check_method(m)
    size = state.sizes[0]
    rows = []
    for method, level in tqdm([(m, lv) for m in methods for lv in levels], desc="keep-sets", unit="cell",
                              disable=not progress):
        n = keep_fraction(size, level)
        choose = lambda method=method, n=n: {"choice": as_json(METHODS[method].select(state, n, 0))}  # noqa: E731
        keep = (cached_cell(Path(folder) / "choices" / method / f"{n}.json", choose) if folder else choose())["choice"]
        missing = [(block, neuron) for block, neuron in neurons if neuron not in keep[block]]
        variants = {False: keep, True: restored(keep, missing)} if missing else {False: keep}
        for was_restored, k in variants.items():
            rows += [{"method": method, "ffn_flops": level, "missing": " ".join(f"{block}:{neuron}" for block, neuron in missing),
                      "restored": was_restored, "metric": key, "value": value}
                     for key, value in evaluate(k).items()]
    return pd.DataFrame(rows)


def drops_table(neurons: pd.DataFrame, min_drop: float = 5.0) -> pd.DataFrame:
    """The critical neurons of each task (the command's table): dense and single-removal scores, in its headline
    metric (:func:`minilib.experiments.scale.headline`)."""
    out = []
    for task, rows in neurons.groupby("task", sort=False):
        losses = _losses(rows, headline(task))
        out.append(losses[losses["drop"] >= min_drop].assign(task=task))
    columns = ["task", "metric", "block", "neuron", "score_rank", "redundancy_rank", "dense", "value", "drop"]
    return pd.concat(out, ignore_index=True)[columns].rename(columns={"value": "without it"})


def _by_level(rows: pd.DataFrame) -> pd.DataFrame:
    """(task, method) × (kept fraction, chosen | restored) of ``rows.value``; restored = chosen where nothing was missing."""
    chosen = rows[~rows.restored].set_index(["task", "method", "ffn_flops"]).value
    back = rows[rows.restored].set_index(["task", "method", "ffn_flops"]).value
    table = pd.DataFrame({"chosen": chosen, "restored": back.reindex(chosen.index).fillna(chosen)})
    return table.unstack("ffn_flops").swaplevel(axis=1).sort_index(axis=1, ascending=[False, True])


def restoration_table(kept: pd.DataFrame) -> pd.DataFrame:
    """Each method's headline score by kept fraction, as chosen and with its missing critical neurons put back
    (equal where it kept them all)."""
    return _by_level(pd.concat([r[r.metric == headline(t)] for t, r in kept.groupby("task", sort=False)]))


def predicted_positive(accuracy, f1, positives: int, total: int):
    """The fraction of a split that a binary classifier labels positive, from its accuracy and F1 (percent).

    With P positives among N examples, accuracy = (TP + TN)/N and F1 = 2TP/(2TP + FP + FN) give
    TP = F1·N·(1 − accuracy)/(2 − 2·F1) and FP = TP + N − P − accuracy·N; the rate is (TP + FP)/N.
    """
    acc, f = np.asarray(accuracy, dtype=float) / 100, np.asarray(f1, dtype=float) / 100
    tp = f * total * (1 - acc) / (2 - 2 * f)
    return (2 * tp + total - positives - acc * total) / total


def positive_rates(kept: pd.DataFrame, task: str = "mrpc", data_dir: str | None = None) -> pd.DataFrame:
    """:func:`restoration_table`'s layout for the fraction of ``task``'s dev examples each model labels positive
    (:func:`predicted_positive` from its accuracy and F1), beside which the dev split's own rate is the reference."""
    if not {"accuracy", "f1"} <= set(glue.get_task(task).metrics):
        raise ValueError(f"{task} is not scored by accuracy and F1; positive rates need both (e.g. mrpc)")
    labels = glue.load_split(glue.get_task(task), "validation", data_dir)["label"]
    wide = kept[kept.task == task].pivot_table(index=["task", "method", "ffn_flops", "restored"], columns="metric",
                                               values="value").reset_index()
    return _by_level(wide.assign(value=predicted_positive(wide.accuracy, wide.f1, int(sum(labels)), len(labels))))


def main(argv: list[str] | None = None) -> None:
    from minilib.experiments.finetune import finetune
    from minilib.experiments.glue_sweep import Context, check_levels, evaluate_keep

    p = ArgumentParser(prog="minilib critical", description="Single neurons whose removal alone breaks a fine-tuned "
                       "encoder, and whether each method's keep-sets hold them (chapter 8).")
    p.add_argument("--tasks", nargs="+", default=["mrpc", "sst2", "stsb"])
    p.add_argument("--init", default="minilm")
    p.add_argument("--seed", type=int, default=0, help="the fine-tune seed (the sweep prunes seed 0)")
    p.add_argument("--top", type=int, default=2, help="neurons per layer to remove alone, by --score (default 2)")
    p.add_argument("--score", default="wanda", help="the importance score that ranks them (default wanda)")
    p.add_argument("--min-drop", type=float, default=5.0,
                   help="points of accuracy (STS-B: Pearson) whose loss makes a neuron critical (default 5)")
    p.add_argument("--methods", nargs="+", default=["mi-alg1", "pcc-mds", "mi-mds", "mi-mds-wanda"])
    p.add_argument("--levels", nargs="+", type=float, default=[0.9, 0.7, 0.5, 0.3])
    p.add_argument("--mds", default="classical", choices=["smacof", "classical"])
    p.add_argument("--mds-seeds", type=int, default=20)
    p.add_argument("--out", default="results/minilm-critical.csv",
                   help="the single-neuron table; the methods' table goes beside it as <stem>-methods.csv")
    args = p.parse_args(argv)
    tasks = [glue.get_task(t) for t in args.tasks]
    if check_method(args.score).score is None:
        raise ValueError(f"--score must be a score-based method such as wanda, magnitude or taylor; got {args.score!r}")
    for m in args.methods:  # before the first model is loaded
        check_method(m)
    levels = check_levels(args.levels)
    out = Path(args.out)
    methods_out = out.with_name(f"{out.stem}-methods.csv")
    check_output(out)
    check_output(methods_out)
    neurons, kept = [], []
    for task in tasks:
        ctx = Context(finetune(task.name, args.init, args.seed), mds=args.mds, mds_seeds=args.mds_seeds, progress=True)
        # init / task / run, as the sweeps' folders; the cells are keep-sets and their scores, which depend on
        # the methods and the evaluation (glue_sweep's code), not on this module's tables
        folder = (cache_dir() / "critical" / Path(*ctx.run.parts[-3:])
                  / f"{ctx.setting}-code{code_fingerprint('minilib.experiments.glue_sweep')}")
        evaluate = cached(folder, lambda keep, ctx=ctx: evaluate_keep(ctx, keep))
        drops = single_neuron_drops(ctx, evaluate, args.top, args.score, progress=True)
        found = critical(drops, headline(task.name), args.min_drop)
        neurons.append(drops.assign(task=task.name, model=ctx.result["model"]))
        kept.append(method_keeps(ctx, evaluate, args.methods, levels, found, progress=True, folder=folder)
                    .assign(task=task.name, model=ctx.result["model"]))
    code = code_revision()
    atomic_file(out, lambda f: pd.concat(neurons).assign(code=code).to_csv(f, index=False))
    atomic_file(methods_out, lambda f: pd.concat(kept).assign(code=code).to_csv(f, index=False))
    print(f"wrote {out} and {methods_out}")
