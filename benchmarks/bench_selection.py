"""Benchmark: the paper's selection stages (MDS, k-means) at 1,536–11,008 neurons per layer.

    python benchmarks/bench_selection.py [--dims 1536 4096 11008] [--smacof-max 1536]

On the α = 2 MI map of ``toydata.gelu_layer(N=100, D, seed=0)`` (z-scored, aligned widths), times
``minilib.methods.selection.mds_embedding`` with the classical solver (Lanczos above 8 × 8 points)
and, up to ``--smacof-max`` neurons, SMACOF for one seed; then k-means with k = D/2 on the
8-dimensional embedding (``kmeans_clusters``) and the representatives (``cluster_representatives``).
It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch

from minilib.data import toydata
from minilib.estimator.kernel_width import NeuronKernelWidth, normalize
from minilib.estimator.pairwise import pairwise_mutual_information
from minilib.methods import selection


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description="MDS and k-means at the size of real layers")
    ap.add_argument("--dims", type=int, nargs="+", default=[1536, 4096, 11008])
    ap.add_argument("--smacof-max", type=int, default=1536, help="largest D for the (quadratic per iteration) SMACOF row")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; data: toydata.gelu_layer(N=100, D, seed=0), "
          "α = 2 MI map, 8 MDS dimensions, keep D/2")
    print(f"{'D':>6} {'stage':34s} {'seconds':>9}")
    for D in args.dims:
        X = toydata.gelu_layer(100, n_neurons=D, n_inputs=3 * D // 8, seed=0)
        S = pairwise_mutual_information(normalize(X), NeuronKernelWidth().fit([X]).sigma_, 2.0).numpy()
        E, secs = timed(lambda: selection.mds_embedding(S, 8, solver="classical"))
        print(f"{D:6d} {'classical MDS (Lanczos)':34s} {secs:9.2f}", flush=True)
        if D <= args.smacof_max:
            _, secs = timed(lambda: selection.mds_embedding(S, 8, seed=0, solver="smacof"))
            print(f"{D:6d} {'SMACOF MDS, one seed':34s} {secs:9.2f}", flush=True)
        _, secs = timed(lambda: selection.kmeans_clusters(E, D // 2, seed=0))
        print(f"{D:6d} {'k-means, k = D/2':34s} {secs:9.2f}", flush=True)
        _, secs = timed(lambda: selection.cluster_representatives(E, D // 2, seed=0))
        print(f"{D:6d} {'k-means + representatives':34s} {secs:9.2f}", flush=True)


if __name__ == "__main__":
    main()
