"""A cost model of the MI map: time and memory for a model's neurons × layers × batches (book, chapter 3b).

One MI map costs, per layer and per batch of N samples, D(D−1)/2 joint spectra (the all-pairs matrix,
:mod:`minilib.estimator.pairwise`) plus the kernel-width fit of D neurons (Eq. 7). Both scale with a
per-pair and a per-neuron rate measured by ``benchmarks/bench_pairwise_mi.py`` (its CSV), so

    seconds = ⌈L / devices⌉ × batches × (D(D−1)/2 / pairs_per_s + D × width_s_per_neuron)

with the layers split across devices (they are independent; :func:`~minilib.estimator.mimap.compute_mi_map`
with ``workers`` or ``distributed``). The pair rates hold across D to first order: every path does
a fixed amount of work per pair (a small eigenproblem, or 2 N²/2 flops of the α = 2 product). Memory per
device is :func:`~minilib.estimator.pairwise.memory_bytes` of one layer; storing the map (MI and
Pearson, float64) takes ``16 L D²`` bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from minilib.estimator.pairwise import DEFAULT_TOL, memory_bytes

__all__ = ["Workload", "WORKLOADS", "PATHS", "Rates", "BOOK_CPU_RATES", "BOOK_CPU_RATES_HIGH_RANK", "rates_from_benchmark",
           "predict", "cost_table", "measured_map"]


@dataclass(frozen=True)
class Workload:
    """An MI map to compute: FFN neurons per layer, layers, batches of ``samples``."""

    name: str
    neurons: int
    layers: int
    batches: int = 1
    samples: int = 100

    @property
    def pairs(self) -> int:
        """Pairs of neurons per layer and batch."""
        return self.neurons * (self.neurons - 1) // 2


#: The models of the book and the Llama sizes the paper's future work points at (intermediate sizes
#: and depths from the models' configs).
WORKLOADS = (
    Workload("BERT-tiny", 512, 2),
    Workload("all-MiniLM-L6-v2", 1536, 6),
    Workload("SmolLM2-135M", 1536, 30),
    Workload("Llama-2-7B", 11008, 32),
    Workload("Llama-2-13B", 13824, 40),
    Workload("Llama-2-70B", 28672, 80),
)

# path key: (name, α, tol, kernel of the low-rank path); "default" is compiled on the CPU (torch on a GPU)
PATHS = {"default": ("default", 1.01, DEFAULT_TOL, "auto"),
         "default-torch": ("low rank, torch", 1.01, DEFAULT_TOL, "torch"),
         "exact": ("exact", 1.01, None, "torch"), "alpha2": ("α = 2", 2.0, None, "torch")}


@dataclass(frozen=True)
class Rates:
    """Throughput of one device: pairs per second of each path, and width-fit seconds per neuron and batch."""

    device: str
    pairs_per_s: dict[str, float]  # keys of PATHS
    width_s_per_neuron: float
    source: str  # where the figures come from: the benchmark run, or a stated assumption

    def scaled(self, factor: float, device: str, source: str) -> "Rates":
        """The same paths ``factor`` times faster: an assumption for a device that was not measured."""
        return Rates(device, {k: v * factor for k, v in self.pairs_per_s.items()}, self.width_s_per_neuron / factor,
                     source)


#: The book's machine (2 CPU threads, idle) at commit 72244bf, on real activations: the default paths from
#: SmolLM2-135M's whole map of one batch of 100 tokens (30 × 1,178,880 pairs; results/mi-map-smollm2.csv),
#: exact and α = 2 on its first layer (results/bench_pairwise_mi-smollm2.csv). A test keeps them equal to
#: those tables; they ship with the package, which has no results/ folder.
BOOK_CPU_RATES = Rates("cpu", {"default": 123_116.0, "default-torch": 72_415.0, "exact": 8_023.0,
                               "alpha2": 4_351_000.0}, 1.032e-3,
                       "rates of the book's 2-thread CPU on SmolLM2-135M's activations (72244bf)")
#: The same machine on SmolLM2's first layer alone, the highest-rank layer measured: the low-rank paths'
#: rates fall with the rank of the activations, which is not known before the map is computed.
BOOK_CPU_RATES_HIGH_RANK = Rates("cpu", {**BOOK_CPU_RATES.pairs_per_s, "default": 28_944.0, "default-torch": 9_982.0},
                                 BOOK_CPU_RATES.width_s_per_neuron, "SmolLM2-135M's first layer (72244bf)")


def rates_from_benchmark(path: str | os.PathLike, device: str = "cpu") -> Rates:
    """Rates from ``bench_pairwise_mi.py --out`` rows of ``device``: the largest D measured for each path."""
    table = pd.read_csv(path)
    rows = table[table.device == device]
    if rows.empty:
        raise ValueError(f"{path} has no rows for device {device!r}; run the benchmark there with --out")
    rates = {}
    for key in PATHS:
        sel = rows[rows.path == key]
        if not sel.empty:
            rates[key] = float(sel.loc[sel.D.idxmax(), "pairs_per_s"])
    widths = rows[rows.path == "widths"]
    width = float(widths.loc[widths.D.idxmax(), "seconds"] / widths.D.max()) if not widths.empty else math.nan
    commit = ", ".join(sorted(set(map(str, rows.commit))))
    return Rates(device, rates, width, f"measured by benchmarks/bench_pairwise_mi.py at {commit}")


def predict(w: Workload, rates: Rates, path: str = "default", devices: int = 1) -> dict:
    """Predicted seconds and memory of ``w``'s MI map on ``devices`` devices like ``rates``'s."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {sorted(PATHS)}, got {path!r}")
    if devices < 1:
        raise ValueError(f"devices must be ≥ 1, got {devices}")
    _, alpha, tol, kernel = PATHS[path]
    rate = rates.pairs_per_s.get(path, math.nan)
    per_layer = w.batches * (w.pairs / rate + w.neurons * rates.width_s_per_neuron)
    kernel = kernel if rates.device == "cpu" else "torch"  # the compiled kernel is the CPU's
    return {"seconds": math.ceil(w.layers / devices) * per_layer,
            "memory_gb": memory_bytes(w.neurons, w.samples, alpha, tol, kernel=kernel) / 2**30,
            "map_gb": 16 * w.layers * w.neurons**2 / 2**30}


def cost_table(rates: list[tuple[Rates, int]], workloads: tuple[Workload, ...] = WORKLOADS,
               paths: tuple[str, ...] = ("default", "alpha2", "exact")) -> pd.DataFrame:
    """One row per workload, device set and path: predicted time, memory per device, map size."""
    rows = []
    for w in workloads:
        for r, devices in rates:
            for path in paths:
                p = predict(w, r, path, devices)
                rows.append({"model": w.name, "neurons × layers": f"{w.neurons:,} × {w.layers}",
                             "devices": f"{devices} × {r.device}", "path": PATHS[path][0],
                             "hours": p["seconds"] / 3600, "memory per device (GB)": p["memory_gb"],
                             "map (GB)": p["map_gb"], "rates": r.source})
    return pd.DataFrame(rows)


def measured_map(runs: pd.DataFrame, rates: Mapping[str, Rates], samples: int = 100) -> pd.DataFrame:
    """A whole map as ``benchmarks/bench_mi_map.py --out`` measured it, beside the model's predictions.

    ``runs`` has a row per layer and kernel (columns ``layer``, ``kernel``, ``live neurons``,
    ``widths_s``, ``mi_s``, ``max_error_bits``). One row per kernel: the measured seconds, and for
    each named set of ``rates`` the prediction of :func:`predict` summed over the layers at their
    live widths (path "default" for the compiled kernel, "default-torch" for torch) and the ratio.
    """
    rows = []
    for kernel, run in runs.groupby("kernel", sort=False):
        path = "default" if kernel == "numba" else "default-torch"
        total = float(run.widths_s.sum() + run.mi_s.sum())
        row = {"kernel": kernel, "layers": len(run), "widths (s)": run.widths_s.sum(),
               "all-pairs MI (s)": run.mi_s.sum(), "measured (min)": total / 60}
        for name, r in rates.items():
            predicted = sum(predict(Workload("layer", int(d), 1, samples=samples), r, path)["seconds"]
                            for d in run["live neurons"])
            row[f"{name} (min)"] = predicted / 60
            row[f"measured ÷ {name}"] = total / predicted
        rows.append({**row, "max error (bits)": run.max_error_bits.max()})
    return pd.DataFrame(rows).set_index("kernel")
