"""Benchmark: a whole model's MI map, every stage timed, against the cost model's prediction.

    python benchmarks/bench_mi_map.py [--model smollm2|minilm] [--tokens 100] [--tol 1e-6|exact]
                                      [--kernels auto] [--workers 1] [--rates results/bench_pairwise_mi.csv]
                                      [--out FILE.csv]

SmolLM2-135M-Instruct (offline: the dequantised copy of ../shared/data/lm, ``minilib.models.lm``) or
all-MiniLM-L6-v2 (the installed weights), one batch of ``--tokens`` token samples from WikiText-2's
validation split, α = 1.01, per-neuron widths (alignment + EMA, §3.4): the settings of
``minilib.prune(..., method="mi-mds")`` for a decoder. Prints the seconds of capturing the
activations, of the widths and of the all-pairs MI of every layer, the total, and what
:mod:`minilib.estimator.cost` predicts from the rates of ``bench_pairwise_mi.py``. ``--kernels numba
torch`` times each layer's all-pairs MI with the compiled kernel and with the torch path, side by
side in the same run, with the largest difference between the two (each is within ``--tol`` of
exact). Every layer's map is also checked on ``--check`` random pairs against the exact Eq. 3 (one
N × N eigenproblem per pair): the largest error, which the certified bound keeps below ``--tol``.
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
from minilib.estimator.entropy import gram_matrix, mutual_information
from minilib.estimator.kernel_width import NeuronKernelWidth, normalize
from minilib.estimator.mimap import compute_mi_map, dead_neurons, split_batches
from minilib.estimator.pairwise import KERNELS, pairwise_mutual_information, resolve_kernel
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


def exact_error(Z: torch.Tensor, sigma: torch.Tensor, mi: torch.Tensor, pairs: int, seed: int) -> float:
    """Largest |mi[i, j] − I(i; j)| over ``pairs`` random pairs, I by Eq. 3 on the exact spectra."""
    g = torch.Generator().manual_seed(seed)
    D = Z.shape[1]
    i, j = torch.randint(D, (pairs,), generator=g), torch.randint(D, (pairs,), generator=g)
    return max((abs(mi[a, b].item() - mutual_information(gram_matrix(Z[:, a], sigma[a]), gram_matrix(Z[:, b], sigma[b]),
                                                         1.01).item()) for a, b in zip(i.tolist(), j.tolist()) if a != b),
               default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description="a whole model's MI map, stage by stage")
    ap.add_argument("--model", choices=["smollm2", "minilm"], default="smollm2")
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--tol", default="1e-6", help="certified error bound in bits, or 'exact'")
    ap.add_argument("--kernels", nargs="+", default=["auto"], choices=KERNELS,
                    help="the low-rank path's implementations to time, each on every layer (the first gives the total)")
    ap.add_argument("--check", type=int, default=200, help="random pairs per layer compared with the exact Eq. 3")
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
    kernels = [resolve_kernel(k) for k in args.kernels]  # what "auto" means here, refused before the run
    if args.workers > 1:
        compute_mi_map(acts, args.tokens, 1.01, tol=tol, workers=args.workers, kernel=kernels[0])
    else:  # the same steps as compute_mi_map's layer job, timed apart
        batches = split_batches(args.tokens, args.tokens)
        warm = acts[-1].double()  # compile (or load) the kernels outside the timings
        warm = warm[:, ~dead_neurons(warm, batches)][:, :64]
        for k in kernels:
            pairwise_mutual_information(normalize(warm), NeuronKernelWidth().partial_fit(warm).sigma_, 1.01, tol=tol,
                                        kernel=k)
        for layer, X in enumerate(acts):
            X = X.double()
            X = X[:, ~dead_neurons(X, batches)]
            t = time.perf_counter()
            sigma = NeuronKernelWidth().partial_fit(X).sigma_
            t_w = time.perf_counter() - t
            times, maps = {}, []
            for k in kernels:
                t = time.perf_counter()
                maps.append(pairwise_mutual_information(normalize(X), sigma, 1.01, tol=tol, kernel=k))
                times[k] = time.perf_counter() - t
            gap = max((m - maps[0]).abs().max().item() for m in maps)
            errors = [exact_error(normalize(X), sigma, m, args.check, layer) for m in maps]
            rows += [{"layer": layer, "live neurons": X.shape[1], "widths_s": t_w, "kernel": k, "mi_s": s,
                      "max_gap_bits": gap, "checked_pairs": args.check, "max_error_bits": e}
                     for (k, s), e in zip(times.items(), errors)]
            print(f"layer {layer:2d}: {X.shape[1]} live neurons, widths {t_w:5.1f} s, all-pairs MI "
                  + ", ".join(f"{k} {s:6.1f} s" for k, s in times.items())
                  + (f" (largest gap {gap:.1e} bits)" if len(kernels) > 1 else "")
                  + f"; max error on {args.check} pairs {max(errors):.1e} bits", flush=True)
    total = time.perf_counter() - t_start
    if rows:  # the first kernel's map alone: the others were timed beside it
        table = pd.DataFrame(rows)
        first = table[table.kernel == kernels[0]]
        total = float(first.widths_s.sum() + first.mi_s.sum())
        for k in kernels[1:]:
            other = table[table.kernel == k]
            print(f"{k}: {other.widths_s.sum() + other.mi_s.sum():.1f} s for the same map "
                  f"({other.mi_s.sum() / first.mi_s.sum():.2f}× {kernels[0]}'s all-pairs time)")
    print(f"MI map of {L} layers: {total:.1f} s ({total / 60:.1f} min) after the activations; "
          f"{args.workers} worker(s), tol = {args.tol}, kernel {kernels[0]}")
    if Path(args.rates).is_file():
        w = cost.Workload(what, D, L, samples=args.tokens)
        path = "exact" if tol is None else "default" if kernels[0] == "numba" else "default-torch"
        p = cost.predict(w, cost.rates_from_benchmark(args.rates), path)
        print(f"cost model ({args.rates}, path {path}): {p['seconds']:.0f} s predicted, {total:.0f} s measured "
              f"({total / p['seconds']:.2f}×)")
    if args.out and rows:
        table = table.assign(model=what, tol=args.tol, commit=code_revision())
        atomic_file(Path(args.out), lambda p: table.to_csv(p, index=False))


if __name__ == "__main__":
    main()
