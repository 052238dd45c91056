"""Do the methods remove the redundant neurons? The redundancy check of every method's keep-sets (chapter 8).

For each model (a fine-tuned encoder on its task, or a causal LM), each method and each removed
fraction, the method's keep-set is drawn exactly as the sweeps draw it (the registry's ``select``,
seed 0) and checked against the model's MI map with
:func:`minilib.methods.diagnostics.removed_redundancy`. :func:`summarize` gives one row per keep-set:
the median over layers of the removed neurons' best-kept-match ratio to Random's, and of their
mean-MI ratio.

``python -m minilib redundancy --init minilm --tasks mrpc stsb sst2 --lm --out results/redundancy.csv``
(``--fidelity FILE``: also :func:`fidelity`, how faithful few MDS axes are to each layer's distances).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from minilib.cache import atomic_file, check_output, code_revision
from minilib.console import ArgumentParser
from minilib.data import glue
from minilib.experiments import glue_sweep, lm_sweep
from minilib.experiments.finetune import finetune
from minilib.methods import METHODS, PruningState, Settings, layer_counts
from minilib.methods.diagnostics import mds_fidelity, removed_redundancy
from minilib.methods.selection import CLUSTERINGS

__all__ = ["GLUE_METHODS", "FIDELITY_DIMS", "keep_set_check", "fidelity", "summarize", "main"]

# the label-free peers, two supervised scores, and the paper's four MI methods
GLUE_METHODS = ("random", "magnitude", "wanda", "kcm", "hfprune", "taylor", "fisher", "mi-alg1", "pcc-mds", "mi-mds",
                "mi-mds-wanda")


def _check(methods: Sequence[str], removed: Sequence[float], name: str = "removed") -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if not all(0 <= r < 1 for r in removed):
        raise ValueError(f"{name} fractions must be in [0, 1), got {list(removed)}")


def keep_set_check(state: PruningState, methods: Sequence[str], removed: Sequence[float], draws: int = 20,
                   seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """:func:`removed_redundancy` of each method's keep-set with ``removed`` of every layer's neurons gone.

    One row per (method, removed fraction, layer): the columns of :func:`removed_redundancy` with
    ``method`` and ``removed_fraction``. A method is refused before any keep-set is drawn if it
    is unknown or ``removed`` is not in [0, 1).
    """
    _check(methods, removed)
    mi = state.mi_map
    tables = []
    for method, fraction in tqdm([(m, r) for m in methods for r in removed], desc="redundancy check",
                                 disable=not progress):
        keep = METHODS[method].select(state, layer_counts(state, method, "uniform", 1 - fraction), seed)
        check = removed_redundancy(mi.mi, keep, mi.alive, draws, seed)
        tables.append(check.assign(method=method, removed_fraction=fraction))
    return pd.concat(tables, ignore_index=True)


FIDELITY_DIMS = (2, 8, 32, 128, 512, 1024, 1535)  # MDS axes; 1,535: every positive axis of 1,536 neurons


def fidelity(state: PruningState, dims: Sequence[int] = FIDELITY_DIMS) -> pd.DataFrame:
    """:func:`mds_fidelity` of every layer's live neurons (one row per layer and number of axes)."""
    mi = state.mi_map
    return pd.concat([mds_fidelity(m[np.ix_(a, a)], dims).assign(layer=layer, neurons=int(a.sum()))
                      for layer, (m, a) in enumerate(zip(mi.mi, mi.alive))], ignore_index=True)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """One row per keep-set: the medians over layers of the best-kept-match and mean-MI ratios to Random's."""
    keys = [c for c in ("model", "task", "cluster", "method", "removed_fraction") if c in table]
    t = table.assign(mean_mi_vs_random=table.mean_mi_ratio / table.random_mean_mi_ratio)
    return (t.groupby(keys, sort=False).agg(layers=("layer", "size"), best_match_ratio=("best_match_ratio", "median"),
                                             mean_mi_ratio=("mean_mi_vs_random", "median")).reset_index())


def _glue(init: str, tasks: Sequence[str], methods: Sequence[str], removed: Sequence[float], cluster: str,
          seed: int, fidelities: list[pd.DataFrame]) -> list[pd.DataFrame]:
    tables = []
    for task in tasks:
        ctx = glue_sweep.Context(finetune(task, init, seed), mds="classical", cluster=cluster, progress=True)
        usable = [m for m in methods if not (METHODS[m].reads_output and ctx.task.is_regression)]
        tables.append(keep_set_check(ctx, usable, removed, progress=True).assign(
            model=ctx.result["model"], task=ctx.task.name, cluster=cluster))
        fidelities.append(fidelity(ctx).assign(model=ctx.result["model"], task=ctx.task.name))
    return tables


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="minilib redundancy", description="Does each method remove the redundant "
                            "neurons? The redundancy check of every keep-set (chapter 8).")
    parser.add_argument("--init", default="minilm", help="the fine-tuned encoders' init (as in minilib sweep)")
    parser.add_argument("--tasks", nargs="*", default=["mrpc", "stsb", "sst2"], help="GLUE tasks (none: skip)")
    parser.add_argument("--methods", nargs="+", default=list(GLUE_METHODS))
    parser.add_argument("--lm", action="store_true", help="also SmolLM2-135M's MLP (chapter 8's methods)")
    parser.add_argument("--lm-profile", default="full", choices=["quick", "full"])
    parser.add_argument("--removed", nargs="+", type=float, default=[0.2, 0.5])
    parser.add_argument("--cluster", default=Settings.cluster, choices=list(CLUSTERINGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/redundancy.csv")
    parser.add_argument("--fidelity", help="also write the MDS fidelity of every layer's map here (chapter 4)")
    args = parser.parse_args(argv)
    _check(args.methods, args.removed, "--removed")
    for t in args.tasks:
        glue.get_task(t)
    for out in filter(None, (args.out, args.fidelity)):
        check_output(out)
    code = code_revision()
    fidelities: list[pd.DataFrame] = []
    tables = _glue(args.init, args.tasks, args.methods, args.removed, args.cluster, args.seed, fidelities)
    if args.lm:
        setup = lm_sweep.prepare(args.lm_profile, "offline", seed=args.seed, progress=True, cluster=args.cluster)
        tables.append(keep_set_check(setup.state, lm_sweep.MLP_METHODS, args.removed, progress=True).assign(
            model=setup.name, task="wikitext-2", cluster=args.cluster))
        fidelities.append(fidelity(setup.state).assign(model=setup.name, task="wikitext-2"))
    table = pd.concat(tables, ignore_index=True).assign(code=code)
    atomic_file(Path(args.out), lambda p: table.to_csv(p, index=False, float_format="%.6g"))
    if args.fidelity:
        fid = pd.concat(fidelities, ignore_index=True).assign(code=code)
        atomic_file(Path(args.fidelity), lambda p: fid.to_csv(p, index=False, float_format="%.6g"))
    print(summarize(table).to_string(index=False, float_format="%.2f"))
    print(f"{len(table)} rows → {args.out}")
