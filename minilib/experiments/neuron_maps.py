"""MI maps of a fine-tuned run's FFN neurons on its task's calibration sample (chapters 3–6, 8).

Apart from the sweep (:mod:`minilib.experiments.glue_sweep`) so that a map's cache key depends only
on the code that computes it (this module and what it imports: the estimator, the activation hook,
the data), not on the pruning methods: a map of SST-2's MiniLM takes minutes to hours, and a change to
how keep-sets are chosen must not recompute it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from minilib.cache import cache_dir, code_fingerprint, short_hash
from minilib.data import glue
from minilib.data.calibration import calibration_indices
from minilib.estimator import mimap
from minilib.estimator.pairwise import DEFAULT_TOL
from minilib.experiments.finetune import load_finetuned, read_result
from minilib.models.bert import load_tokenizer
from minilib.models.hooks import capture_activations

__all__ = ["calibration_activations", "neuron_mi_map"]


def calibration_activations(run: str | os.PathLike, fraction: float = 0.01, reduction: str = "mean",
                            seed: int = 0, data_dir: str | os.PathLike | None = None, progress: bool = False
                            ) -> list[torch.Tensor]:
    """FFN activations (per layer, samples × neurons) of a fine-tuned run on its calibration sample.

    The sample is a random ``fraction`` of the task's training set; the rows come back in a
    seeded random order, so consecutive batches of them are random draws.
    """
    model, result = load_finetuned(run), read_result(run)
    task = glue.get_task(result["task"])
    train = glue.load_split(task, "train", data_dir)
    encoded = glue.encode(train.select(calibration_indices(len(train), fraction, seed)), load_tokenizer(result["init"]))
    acts = capture_activations(model, glue.Batches(encoded, batch_size=64), reduction,
                               progress=progress)  # length-sorted batches: fast; shuffled below
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(acts[0].shape[0]))
    return [a[perm] for a in acts]


def neuron_mi_map(run: str | os.PathLike, fraction: float = 0.01, batch_size: int = 100,
                  reduction: str = "mean", alpha: float = 1.01, seed: int = 0, max_batches: int | None = None,
                  widths: str = "aligned", tol: float | None = DEFAULT_TOL, data_dir: str | os.PathLike | None = None,
                  cache: str | os.PathLike | None = None, progress: bool = True) -> mimap.MIMap:
    """The (cached) MI map of a fine-tuned run's FFN neurons on its task's calibration sample.

    ``run`` is a folder from :func:`minilib.experiments.finetune.finetune`. The calibration sample is a
    random ``fraction`` of the task's training set (``seed``), reduced per sentence with
    ``reduction`` (see :mod:`minilib.models.hooks`); ``tol`` is the MI map's certified error bound in
    bits (``None``: exact), part of the cache key.
    """
    run = Path(run).resolve()
    result = read_result(run)
    provenance = short_hash(json.dumps([code_fingerprint("minilib.experiments.neuron_maps"), glue.split_source(result["task"], "train", data_dir)]))
    key = (f"{fraction:g}-b{batch_size}-{reduction}-a{alpha:g}-s{seed}" + (f"-m{max_batches}" if max_batches else "")
           + ("" if widths == "aligned" else f"-{widths}") + ("-exact" if tol is None else f"-t{tol:g}") + f"-{provenance}")
    runs = cache_dir(cache).resolve() / "finetuned"
    rel = run.relative_to(runs) if run.is_relative_to(runs) else Path("other", short_hash(str(run)))

    def compute() -> mimap.MIMap:
        acts = calibration_activations(run, fraction, reduction, seed, data_dir, progress)
        m = mimap.compute_mi_map(acts, batch_size, alpha, max_batches=max_batches, widths=widths, tol=tol,
                                 progress=progress)
        m.meta.update({"task": result["task"], "model": result["model"], "init": result["init"], "run": str(rel),
                       "fraction": fraction, "reduction": reduction, "seed": seed,
                       "calibration_samples": int(acts[0].shape[0])})
        return m

    return mimap.MIMap.cached(cache_dir(cache) / "mimaps" / rel / f"{key}.npz", compute)
