"""Benchmark: the stages of compensation (chapter 9) at the width of real layers.

    python benchmarks/bench_compensation.py [--dims 1536 11008] [--tokens 4096] [--steps 20]

For a layer of D neurons and a hidden size of 3D/8 (SmolLM2: 1,536 → 576; Llama-2-7B-like: 11,008 →
4,128), on synthetic activations (``tokens`` rows of GELU(x W) with x Gaussian; the costs depend on
the shapes only), it times what :mod:`minilib.methods.compensation` does per layer, keeping 80%:

* the statistics: ``ã ãᵀ`` of the tokens in float64 (``collect_stats``' work per layer and pass);
* the least-squares fit with the λ grid and the guard (``fix_layer``);
* ``lsq-greedy``: the inverse of ``H``, then ``--steps`` elimination steps, extrapolated to the
  20% of the neurons it removes (the steps cost the same each: rank-one updates of fixed size);

and prints the statistics' memory, ``16 (D + 1)²`` bytes per layer. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from minilib.methods import compensation as cp


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description="compensation stages at the width of real layers")
    ap.add_argument("--dims", type=int, nargs="+", default=[1536, 11008])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=20, help="greedy elimination steps timed (then extrapolated)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; synthetic GELU activations, "
          f"{args.tokens} tokens, keep 80%")
    print(f"{'D':>6} {'hidden':>6} {'stage':44s} {'seconds':>9}")
    for D in args.dims:
        hidden = round(D * 3 / 8)
        g = torch.Generator().manual_seed(0)
        a = torch.nn.functional.gelu(torch.randn(args.tokens, hidden, generator=g) @ torch.randn(hidden, D, generator=g)
                                     / hidden**0.5)
        W = torch.randn(hidden, D, generator=g, dtype=torch.float64) / D**0.5
        x = torch.cat([a.double(), torch.ones(len(a), 1, dtype=torch.float64)], 1)
        fit = len(x) * 4 // 5
        stats, t_stats = timed(lambda: cp.LayerStats(x[:fit].T @ x[:fit], x[fit:].T @ x[fit:]))
        keep = np.sort(np.random.default_rng(0).choice(D, round(0.8 * D), replace=False))
        rows = [("statistics (ã ãᵀ, fit + held-out), float64", t_stats)]
        _, t_fit = timed(lambda: cp.fix_layer(W, None, keep, stats, "least-squares"))
        rows.append((f"least-squares fit, {len(cp.RIDGE)} λ + guard", t_fit))
        _, t_bias = timed(lambda: cp.fix_layer(W, None, keep, stats, "bias"))
        rows.append(("bias compensation + guard", t_bias))
        steps = min(args.steps, D - len(keep))
        _, t_greedy = timed(lambda: cp.greedy_elimination(W, stats, D - steps))
        _, t_inverse = timed(lambda: cp.greedy_elimination(W, stats, D))  # the inverse alone: no step
        per_step = (t_greedy - t_inverse) / steps
        rows.append(("lsq-greedy: inverse of H", t_inverse))
        rows.append((f"lsq-greedy: per removed neuron ({steps} timed)", per_step))
        rows.append((f"lsq-greedy: 20% removed ({D - len(keep)} steps, extrapolated)",
                     t_inverse + per_step * (D - len(keep))))
        for name, seconds in rows:
            print(f"{D:>6} {hidden:>6} {name:44s} {seconds:9.3f}")
        print(f"{D:>6} {hidden:>6} {'statistics memory per layer, 16 (D+1)² bytes':44s} {16 * (D + 1) ** 2 / 1e9:8.2f} GB")


if __name__ == "__main__":
    main()
