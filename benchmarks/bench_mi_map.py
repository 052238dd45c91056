"""Benchmark: a whole model's MI map, every stage timed, against the cost model's prediction.

    python benchmarks/bench_mi_map.py [--model smollm2|minilm] [--tokens 100] [--tol 1e-6|exact]
                                      [--workers 1] [--rates results/bench_pairwise_mi.csv] [--out FILE.csv]

SmolLM2-135M-Instruct (offline: the dequantised copy of ../shared/data/lm, ``minilib.models.lm``) or
all-MiniLM-L6-v2 (the installed weights), one batch of ``--tokens`` token samples from WikiText-2's
validation split, α = 1.01, per-neuron widths (alignment + EMA, §3.4): the settings of
``minilib.prune(..., method="mi-mds")`` for a decoder. Prints the seconds of capturing the
activations, of the widths and of the all-pairs MI of every layer, the total, and what
:mod:`minilib.estimator.cost` predicts from the rates of ``bench_pairwise_mi.py``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from minilib.cache import atomic_file, check_output, code_revision
from minilib.estimator import cost
from minilib.estimator.kernel_width import NeuronKernelWidth, normalize
from minilib.estimator.mimap import compute_mi_map, dead_neurons, split_batches
from minilib.estimator.pairwise import pairwise_mutual_information
from minilib.models.hooks import capture_activations
from minilib.models.lm import load_lm, wikitext_ids, windows


def activations(model_name: str, tokens: int) -> tuple[list[torch.Tensor], str]:
    if model_name == "smollm2":
        model, tok = load_lm("offline")
        what = "SmolLM2-135M-Instruct (offline copy)"
    else:
        from transformers import AutoTokenizer, BertModel

        from minilib.models.bert import minilm_dir

        model, tok = BertModel.from_pretrained(minilm_dir(True)).eval(), AutoTokenizer.from_pretrained(minilm_dir(True))
        what = "all-MiniLM-L6-v2"
    ids = wikitext_ids(tok, "valid")[:4 * tokens]
    w = windows(ids, tokens + 1, 1)  # a decoder's "tokens" samples drop the last position
    acts = capture_activations(model, [{"input_ids": w, "attention_mask": torch.ones_like(w)}], "tokens")
    return [a[:tokens] for a in acts], f"{what}, {tokens} WikiText-2 validation tokens"


def main() -> None:
    ap = argparse.ArgumentParser(description="a whole model's MI map, stage by stage")
    ap.add_argument("--model", choices=["smollm2", "minilm"], default="smollm2")
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--tol", default="1e-6", help="certified error bound in bits, or 'exact'")
    ap.add_argument("--workers", type=int, default=1, help="layers in parallel processes (then no per-stage split)")
    ap.add_argument("--rates", default="results/bench_pairwise_mi.csv", help="bench_pairwise_mi.py --out CSV")
    ap.add_argument("--out", help="write the per-layer rows to this CSV")
    args = ap.parse_args()
    if args.out:
        check_output(args.out)  # results/ only from a clean tree: refused before the run, not after
    tol = None if args.tol == "exact" else float(args.tol)

    t0 = time.perf_counter()
    acts, what = activations(args.model, args.tokens)
    t_acts = time.perf_counter() - t0
    L, D = len(acts), acts[0].shape[1]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {what}: {L} layers × {D} neurons")
    print(f"activations captured in {t_acts:.1f} s")
    rows = []
    t_start = time.perf_counter()
    if args.workers > 1:
        compute_mi_map(acts, args.tokens, 1.01, tol=tol, workers=args.workers)
    else:  # the same steps as compute_mi_map's layer job, timed apart
        batches = split_batches(args.tokens, args.tokens)
        for layer, X in enumerate(acts):
            X = X.double()
            X = X[:, ~dead_neurons(X, batches)]
            t = time.perf_counter()
            sigma = NeuronKernelWidth().partial_fit(X).sigma_
            t_w = time.perf_counter() - t
            t = time.perf_counter()
            pairwise_mutual_information(normalize(X), sigma, 1.01, tol=tol)
            t_mi = time.perf_counter() - t
            rows.append({"layer": layer, "live neurons": X.shape[1], "widths_s": t_w, "mi_s": t_mi})
            print(f"layer {layer:2d}: {X.shape[1]} live neurons, widths {t_w:5.1f} s, all-pairs MI {t_mi:6.1f} s",
                  flush=True)
    total = time.perf_counter() - t_start
    print(f"MI map of {L} layers: {total:.1f} s ({total / 60:.1f} min) after the activations; "
          f"{args.workers} worker(s), tol = {args.tol}")
    if Path(args.rates).is_file():
        w = cost.Workload(what, D, L, samples=args.tokens)
        path = "default" if tol is not None else "exact"
        p = cost.predict(w, cost.rates_from_benchmark(args.rates), path)
        print(f"cost model ({args.rates}, path {path}): {p['seconds']:.0f} s predicted, {total:.0f} s measured "
              f"({total / p['seconds']:.2f}×)")
    if args.out and rows:
        table = pd.DataFrame(rows).assign(model=what, tol=args.tol, commit=code_revision())
        atomic_file(Path(args.out), lambda p: table.to_csv(p, index=False))


if __name__ == "__main__":
    main()
