"""Benchmark: the all-pairs MI matrix of one layer and one batch (N = 100) at D = 512 … 11,008 neurons.

    python benchmarks/bench_pairwise_mi.py [--dims 512 1536 4096 11008] [--subset 384]
                                           [--bound-matrices 16384] [--activations FILE.pt | smollm2:LAYER]
                                           [--device cuda]
                                           [--out results/bench_pairwise_mi.csv]

For every D it prints, side by side and measured in this one run:

* the **eigvalsh bound**: batched ``torch.linalg.eigvalsh`` alone on the layer's own N × N joint
  matrices (random pairs, ``--bound-matrices`` of them), as 2 threads × 1 LAPACK thread and as one
  multi-threaded call; the better rate is the bound, extrapolated to the layer's D(D−1)/2 pairs;
* the **exact path** (``tol=None``) on the first ``--subset`` variables (all of them at D = 512);
* the **default path** (certified low rank, ``tol=1e-6`` bits, the compiled per-pair kernel) on the
  whole layer at α = 1.01, and its max and median error against the exact path on every pair of the
  subset; then the same certified path in **torch** (the reference and fallback), the same way;
* the **α = 2 path** on the whole layer;
* the peak memory of each run (resident set above its start, sampled every 2 ms, in a fresh process)
  beside :func:`minilib.estimator.pairwise.memory_bytes`.

The data are minilib.data.toydata.gelu_layer (seed 0; n_inputs = 3 D / 8 as in a transformer FFN),
z-scored, with alignment-chosen widths (§3.4) — or the (N, D) tensor in ``--activations``, or with
``--activations smollm2:K`` layer K of SmolLM2-135M on 100 WikiText-2 tokens (as ``bench_mi_map.py``). Every
figure says which. Nothing is asserted; the figures are discussed in the book's chapter 3b.
``--device cuda`` adds the same rows on the GPU (D = 11,008 included at α = 1.01); without it the
GPU rows read "not measured".
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import multiprocessing as mp
import platform
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import torch

from minilib.cache import atomic_file, check_output, code_revision
from minilib.data import toydata
from minilib.estimator.kernel_width import NeuronKernelWidth, normalize
from minilib.estimator.pairwise import DEFAULT_TOL, memory_bytes, pairwise_mutual_information

N = 100


def layer(D: int, activations: str | None) -> tuple[torch.Tensor, torch.Tensor, str, float]:
    """Normalised activations (N, D), their aligned widths, what they are, and the seconds of the width fit."""
    if activations:
        if activations.startswith("smollm2:"):  # the activations of bench_mi_map.py
            spec = importlib.util.spec_from_file_location("bench_mi_map", Path(__file__).with_name("bench_mi_map.py"))
            bench_map = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(bench_map)
            acts, source = bench_map.activations("smollm2", N)
            k = int(activations.split(":")[1])
            X, source = acts[k].double(), f"{source}, layer {k}"
        else:
            X, source = torch.load(activations)[:N].double(), activations
        X = X[:, X.std(0) > 1e-6 * X.std(0).median()][:, :D]
        what = f"{source} (first {X.shape[1]} live neurons)"
    else:
        X = toydata.gelu_layer(N, n_neurons=D, n_inputs=max(8, 3 * D // 8), seed=0)
        what = f"toydata.gelu_layer(N={N}, D={D}, seed=0)"
    t = time.perf_counter()
    sigma = NeuronKernelWidth().fit([X]).sigma_
    return normalize(X), sigma, what, time.perf_counter() - t


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class PeakRSS(threading.Thread):
    """Samples the resident set every 2 ms: the peak above the level at the start."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.start_rss, self.peak, self.done = _rss(), 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.002):
            self.peak = max(self.peak, _rss() - self.start_rss)


def _child(conn, Z, sigma, alpha, tol, device, threads, kernel) -> None:
    torch.set_num_threads(threads)
    Z, sigma = torch.from_numpy(Z).to(device), torch.from_numpy(sigma).to(device)
    pairwise_mutual_information(Z[:, :80], sigma[:80], alpha, tol=tol, kernel=kernel)  # load the kernels first
    sampler = PeakRSS()
    sampler.start()
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = pairwise_mutual_information(Z, sigma, alpha, tol=tol, kernel=kernel)
    if device != "cpu":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    sampler.done.set()
    sampler.join()
    peak = torch.cuda.max_memory_allocated() if device != "cpu" else sampler.peak
    conn.send((secs, peak, out.cpu().numpy()))  # numpy: pickled by value, no shared-memory handles


def measured(Z: torch.Tensor, sigma: torch.Tensor, alpha: float, tol: float | None, device: str = "cpu",
             kernel: str = "auto"):
    """(seconds, peak bytes above the start, MI matrix) of one call, in a fresh process."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, Z.numpy(), sigma.numpy(), alpha, tol, device, torch.get_num_threads(),
                                            kernel))
    proc.start()
    secs, peak, out = parent.recv()
    proc.join()
    return secs, peak, torch.from_numpy(out)


def bound_rate(Z: torch.Tensor, sigma: torch.Tensor, matrices: int, threads: int) -> tuple[float, float]:
    """Matrices per second of batched eigvalsh on this layer's joint matrices: (threads × 1, one call)."""
    g = torch.Generator().manual_seed(0)
    D = Z.shape[1]
    i, j = torch.randint(D, (matrices,), generator=g), torch.randint(D, (matrices,), generator=g)
    used = torch.unique(torch.cat([i, j]))
    z = Z.T[used]
    A = torch.zeros(D, N, N, dtype=torch.float64)
    A[used] = torch.exp((z[:, :, None] - z[:, None, :]).square_() / (-2.0 * sigma[used, None, None] ** 2)) / N
    H = A[i] * A[j]
    H /= torch.diagonal(H, dim1=-2, dim2=-1).sum(-1)[:, None, None]
    t = time.perf_counter()
    torch.linalg.eigvalsh(H)
    one_call = matrices / (time.perf_counter() - t)
    torch.set_num_threads(1)
    try:
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(torch.linalg.eigvalsh, H.split(2 * 2**20 // (8 * N * N))))
        split = matrices / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return split, one_call


def main() -> None:
    ap = argparse.ArgumentParser(description="all-pairs MI benchmark (one layer, one batch of N = 100)")
    ap.add_argument("--dims", type=int, nargs="+", default=[512, 1536, 4096, 11008])
    ap.add_argument("--subset", type=int, default=384, help="variables on which the exact path runs (D > 512)")
    ap.add_argument("--bound-matrices", type=int, default=16384, help="joint matrices timed for the eigvalsh bound")
    ap.add_argument("--max-alpha101-dim", type=int, default=4096, help="largest D for α = 1.01 on the CPU")
    ap.add_argument("--activations", help="a .pt file with one (samples, neurons) tensor instead of the toy layer, "
                    "or smollm2:K for SmolLM2-135M's layer K")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU rows too")
    ap.add_argument("--out", help="also write the rows to this CSV (the book's cost model reads it)")
    args = ap.parse_args()
    if args.out:
        check_output(args.out)  # results/ only from a clean tree: refused before the run, not after

    threads = torch.get_num_threads()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {threads} threads"
          + (f", GPU {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ", no GPU used"))
    print(f"{'D':>6} {'path':34s} {'pairs timed':>12} {'s':>8} {'pairs/s':>11} {'s / layer':>10} "
          f"{'peak MB':>8} {'formula MB':>10}  note")

    records = []

    def row(D, path, pairs, secs, peak=None, formula=None, note="", key=None, device="cpu", err=(None, None)):
        per_layer = D * (D - 1) / 2 / (pairs / secs)
        records.append({"D": D, "path": key or path, "device": device, "pairs_timed": pairs, "seconds": secs,
                        "pairs_per_s": pairs / secs, "seconds_per_layer": per_layer,
                        "peak_mb": None if peak is None else peak / 2**20,
                        "formula_mb": None if formula is None else formula / 2**20,
                        "max_error_bits": err[0], "median_error_bits": err[1], "data": what, "threads": threads,
                        "commit": code_revision()})
        pk = f"{peak / 2**20:8.0f}" if peak is not None else f"{'':>8}"
        fm = f"{formula / 2**20:10.0f}" if formula is not None else f"{'':>10}"
        print(f"{D:6d} {path:34s} {pairs:12,d} {secs:8.2f} {pairs / secs:11,.0f} {per_layer:10.1f} {pk} {fm}  {note}",
              flush=True)

    summary = []
    for D in args.dims:
        Z, sigma, what, width_secs = layer(D, args.activations)
        D = Z.shape[1]
        n_pairs = D * (D - 1) // 2
        print(f"-- D = {D}: {what}, {n_pairs:,} pairs; kernel widths (Eq. 7) fitted in {width_secs:.1f} s")
        records.append({"D": D, "path": "widths", "device": "cpu", "seconds": width_secs, "data": what,
                        "threads": threads, "commit": code_revision()})
        split, one = bound_rate(Z, sigma, args.bound_matrices, threads)
        bound = max(split, one)
        row(D, f"eigvalsh bound, {threads} threads × 1", args.bound_matrices, args.bound_matrices / split,
            note="N×N joint matrices of this layer", key="bound-threads")
        row(D, "eigvalsh bound, one batched call", args.bound_matrices, args.bound_matrices / one, key="bound-one-call")
        sub = D if D <= 512 else min(args.subset, D)
        exact_rate = default_err = None
        if D <= args.max_alpha101_dim:
            secs, peak, exact = measured(Z[:, :sub], sigma[:sub], 1.01, None)
            exact_rate = sub * (sub - 1) / 2 / secs
            row(D, "exact, α = 1.01", sub * (sub - 1) // 2, secs, peak, memory_bytes(sub, N, tol=None, n_jobs=threads),
                note=f"first {sub} variables", key="exact")
            iu = torch.triu_indices(sub, sub, 1)
            rates = {}
            for kernel, name, key in (("numba", "default, compiled", "default"),
                                      ("torch", "low rank in torch", "default-torch")):
                approx_sub = measured(Z[:, :sub], sigma[:sub], 1.01, DEFAULT_TOL, kernel=kernel)[2]
                err = (approx_sub - exact)[iu[0], iu[1]].abs()
                errors = (err.max().item(), err.median().item())
                secs, peak, _ = measured(Z, sigma, 1.01, DEFAULT_TOL, kernel=kernel)
                row(D, f"{name} (tol = {DEFAULT_TOL:g} bits), α = 1.01", n_pairs, secs, peak,
                    memory_bytes(D, N, n_jobs=threads, kernel=kernel), key=key, err=errors,
                    note=f"error vs exact on the subset: max {errors[0]:.1e}, median {errors[1]:.1e} bits")
                rates[kernel] = (n_pairs / secs, errors)
            summary.append((D, bound, exact_rate, rates))
        secs, peak, _ = measured(Z, sigma, 2.0, None)
        row(D, "α = 2 (exact, one GEMM)", n_pairs, secs, peak, memory_bytes(D, N, 2.0), note="whole layer",
            key="alpha2")
        if args.device.startswith("cuda"):
            for alpha, tol, name, key in ((1.01, DEFAULT_TOL, "GPU default, α = 1.01", "default"),
                                          (1.01, None, "GPU exact, α = 1.01", "exact"), (2.0, None, "GPU α = 2", "alpha2")):
                secs, peak, _ = measured(Z, sigma, alpha, tol, args.device)
                row(D, name, n_pairs, secs, peak, note="peak = max GPU memory allocated", key=key, device="cuda")
        else:
            print(f"{D:6d} {'GPU rows':34s} not measured (no GPU here; rerun with --device cuda)")
    if args.out:
        atomic_file(Path(args.out), lambda p: pd.DataFrame(records).to_csv(p, index=False))
        print(f"rows written to {args.out}")
    print()
    for D, bound, exact_rate, rates in summary:
        (compiled, (emax, _)), (reference, (tmax, _)) = rates["numba"], rates["torch"]
        print(f"D = {D:5d}: exact path at {bound / exact_rate:4.2f}× the eigvalsh bound's time (target ≤ 1.2×); "
              f"default (compiled) {compiled / bound:5.1f}× faster than the bound (target ≥ 20×), max error "
              f"{emax:.1e} bits (target ≤ 1e-6); torch low rank {reference / bound:5.1f}×, max error {tmax:.1e} bits")


if __name__ == "__main__":
    main()
