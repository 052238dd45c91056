"""Re-run a sample of the cells of every committed table in a fresh cache and compare.

Run it at the commit the tables name, on a clean tree, with the full profile's artefacts in the
main cache (``make -j2 results``)::

    python tools/recheck_results.py --fresh /tmp/recheck

Only the two slow, model-building inputs are shared with the main cache (the offline encoder and
the dequantised SmolLM2 copy, linked read-only); everything downstream of them is recomputed:
two fine-tunes, the MRPC MI maps and sweep cells, one ablation cell, and chapter 7's MI-PRUN and
HFPrune cells with their calibration states. It prints one line per compared value and exits 1
if any keep-set or printed score differs.
"""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from pathlib import Path

import pandas as pd

from minilib.cache import cache_dir, code_revision, results_dir
from minilib.experiments import finetune, glue_sweep, lm_sweep

FINETUNES = [("mrpc", "offline", 0), ("stsb", "random", 1)]
SWEEP = dict(task="mrpc", methods=["random", "magnitude", "taylor", "mi-mds"], levels=[0.7, 0.4])  # registry order
ABLATION = dict(parameter="alpha", value="2", level=0.4)
BLOCKS, MLP = [4], [0.2]


class Checker:
    def __init__(self) -> None:
        self.failures = 0

    def same(self, what: str, ours, committed) -> None:
        ok = ours == committed
        self.failures += not ok
        print(f"{'ok  ' if ok else 'DIFF'} {what}: {ours!r}" + ("" if ok else f" (committed {committed!r})"))


def _choices(root: Path) -> dict[str, list]:
    return {str(p.relative_to(root)): json.loads(p.read_text())["choice"] for p in root.rglob("choices/**/*.json")}


def compare_choices(check: Checker, fresh: Path, main: Path) -> None:
    """Every keep-set chosen under ``fresh`` against the same cell under ``main`` (the same relative path)."""
    ours = _choices(fresh)
    if not ours:
        raise SystemExit(f"error: no choices under {fresh}; the re-run wrote nothing")
    theirs = _choices(main)
    for name, choice in sorted(ours.items()):
        check.same(f"keep-set {name}", choice, theirs.get(name))


def compare_rows(check: Checker, ours: pd.DataFrame, committed: pd.DataFrame, keys: list[str], value: str) -> None:
    """Each of our rows' ``value`` against the committed row with the same ``keys``, at the CSV's precision."""
    if ours[value].dtype.kind == "f":  # the LM tables are written with %.6g (the GLUE ones at 2 decimals)
        ours = ours.assign(**{value: ours[value].map(lambda x: float(f"{x:.6g}"))})
    committed = committed.astype({k: ours[k].dtype for k in keys})  # e.g. an ablation's setting "2.0", read as 2.0
    merged = ours.merge(committed[[*keys, value]], on=keys, how="left", suffixes=("", "_committed"))
    for _, r in merged.iterrows():
        check.same(" ".join(f"{k}={r[k]}" for k in keys), r[value], r[f"{value}_committed"])


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", required=True, help="an empty folder for the recomputed artefacts")
    args = parser.parse_args()
    fresh, main_cache = Path(args.fresh), cache_dir()
    if fresh.exists() and any(fresh.iterdir()):
        raise SystemExit(f"error: {fresh} is not empty; pass a new folder so nothing is read from an old re-run")
    if code_revision().endswith("+dirty"):
        raise SystemExit("error: the tree has uncommitted changes; check out the commit the tables name")
    fresh.mkdir(parents=True, exist_ok=True)
    for shared in ("encoders", "lm"):  # built once, minutes each; everything after them is recomputed
        (fresh / shared).symlink_to(main_cache / shared)
    check = Checker()
    print(f"code {code_revision()}; fresh cache {fresh}; committed tables {results_dir()}")

    scores = glue_sweep.published("finetune_scores")
    for task, init, seed in FINETUNES:
        run = finetune.finetune(task, init, seed, cache=fresh)
        for metric, value in finetune.read_result(run)["dev"].items():
            committed = scores.query("task == @task and init == @init and seed == @seed and metric == @metric").value
            check.same(f"finetune {task} {init} seed {seed} {metric}", round(value, 2), committed.item())

    run = finetune.finetune(SWEEP["task"], "offline", 0, cache=fresh)
    keys = ["task", "method", "ffn_flops", "trial", "metric"]
    table = glue_sweep.sweep([run], SWEEP["methods"], SWEEP["levels"], cache=fresh)  # random: its 10 trials
    compare_rows(check, table, glue_sweep.published("pruning"), keys, "value")
    a = ABLATION
    table = glue_sweep.ablate([run], a["parameter"], [a["value"]], [a["level"]], cache=fresh)
    compare_rows(check, table, glue_sweep.published(f"ablation-{a['parameter']}"), [*keys, "setting"], "value")
    compare_choices(check, fresh / "sweeps", main_cache / "sweeps")

    setup = lm_sweep.prepare("full", source="offline", cache=fresh)
    blocks = lm_sweep.block_sweep(setup, BLOCKS, methods=("mi-prun", "mi-prun-fbs"), trials=1)
    lm_keys = ["method", "blocks_removed", "trial"]
    for col in ("blocks", "mi_cost", "perplexity"):
        compare_rows(check, blocks, glue_sweep.published("lm-blocks"), lm_keys, col)
    mlp = lm_sweep.mlp_sweep(setup, MLP, methods=("hfprune", "wanda"), trials=1)
    compare_rows(check, mlp, glue_sweep.published("lm-mlp"), ["method", "ratio", "trial"], "perplexity")
    compare_choices(check, fresh / "lm-runs", main_cache / "lm-runs")

    print(f"{check.failures} difference(s)")
    sys.exit(1 if check.failures else 0)


if __name__ == "__main__":
    main()
