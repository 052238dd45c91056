"""``minilib.prune``: prune the FFN neurons of any supported Hugging Face model with any registered method.

    >>> pruned, report = minilib.prune(model, texts, keep=0.6, method="mi-mds", tokenizer=tokenizer)
    >>> pruned.save_pretrained("out")          # reloads with AutoModel….from_pretrained("out")

By default the model keeps ``round(keep · D)`` of the ``D`` FFN neurons of every block (the same
fraction in each block, so the result is an ordinary model of its class) and drops what it removes,
as the paper does. ``allocation`` spreads the same total differently across blocks and
``compensation`` makes the kept weights take over what is removed (chapter 9,
:mod:`minilib.methods.allocation`, :mod:`minilib.methods.compensation`). The paper's choices are the
keyword options of :class:`minilib.methods.Settings`; every other method of
:data:`minilib.methods.METHODS` is selected by name. Everything runs on the model's device; the
MI estimator and the compensation's least squares work in float64.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from minilib import __version__
from minilib.cache import code_revision
from minilib.data.calibration import as_batches, count_samples, has_labels
from minilib.models.families import Family, family_of
from minilib.methods import Calibrated, Settings, check_method, check_plan, layer_counts
from minilib.methods.allocation import DEFAULT_FLOOR
from minilib.methods.compensation import Compensation, compensate
from minilib.models.surgery import count_parameters, macs
from minilib.methods.scores import keep_fraction

__all__ = ["PruningReport", "prune", "check_samples", "MIN_SAMPLES"]

# Below this many samples per MI batch, Scott's rule (N^(−1/5)) and the kernel alignment are noise.
MIN_SAMPLES = 16


@dataclass
class PruningReport:
    """What :func:`prune` did: enough to reproduce it and to judge it."""

    model_class: str
    family: str
    method: str
    keep: float
    seed: int
    settings: dict
    neurons_before: list[int]
    neurons_after: list[int]
    parameters_before: int
    parameters_after: int
    macs_before: float
    macs_after: float
    seq_len: float
    calibration: dict
    kept: list[list[int]] = field(default_factory=list)  # each block's kept neurons, in order (compare two with agreement())
    allocation: str = "uniform"
    compensation: dict = field(default_factory=dict)  # its settings and, per layer, what the guard measured
    seconds: dict = field(default_factory=dict)  # load, calibration (reading it), select, surgery, save
    stages: dict = field(default_factory=dict)  # inside select and surgery, by minilib.estimate's stage names
    device: str = "cpu"
    dtype: str = "float32"
    minilib_version: str = ""
    code_revision: str = ""
    torch_version: str = torch.__version__
    python: str = platform.python_version()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def agreement(self, other: "PruningReport") -> float:
        """How alike two pruning choices of one model are: the fraction of this report's kept neurons
        that ``other`` keeps too, averaged over blocks (1: the same neurons; a random choice of a
        fraction f agrees about f)."""
        if [len(k) for k in self.kept] != [len(k) for k in other.kept] or not self.kept:
            raise ValueError("agreement compares two prunings of the same model to the same keep fraction")
        return float(np.mean([np.intersect1d(a, b).size / max(len(a), 1) for a, b in zip(self.kept, other.kept)]))

    def summary(self) -> str:
        return (f"{self.method}: kept {sum(self.neurons_after)}/{sum(self.neurons_before)} FFN neurons "
                f"({self.family}, {len(self.neurons_after)} blocks); parameters {self.parameters_before:,} → "
                f"{self.parameters_after:,}; block MACs ×{self.macs_after / self.macs_before:.3f}; "
                f"{self.allocation} allocation; {self._compensated()}; {sum(self.seconds.values()):.1f} s")

    def _compensated(self) -> str:
        mode, layers = self.compensation.get("mode", "none"), self.compensation.get("layers", [])
        if mode == "none":
            return "no compensation"
        return f"{mode} compensation kept in {sum(f['mode'] != 'none' for f in layers)}/{len(layers)} blocks"


def check_samples(method: str, family: Family, settings: Settings, examples: int, tokens: int | None = None) -> None:
    """Refuse calibration data too small for the method's estimates (a sample is a token for a decoder
    or with ``reduction="tokens"``, else an example); ``tokens=None`` checks examples only."""
    if "activations" not in check_method(method).needs:
        return
    per_token = family.causal or settings.reduction == "tokens"
    count, unit = (tokens, "tokens") if per_token else (examples, "examples")
    if count is not None and count < MIN_SAMPLES:
        raise ValueError(f"{method} needs at least {MIN_SAMPLES} calibration samples ({unit}) for its estimates, "
                         f"got {count}; pass more calibration data")


def _settings(options: dict[str, Any]) -> Settings:
    known = set(Settings.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; prune() takes {sorted(known)}")
    return Settings(**options)


def prune(model: nn.Module, calibration: Any, keep: float, method: str = "mi-mds", *, tokenizer=None, seed: int = 0,
          batch_size: int | None = None, max_length: int = 128, progress: bool = True,
          compensation: str | Compensation | None = None, allocation: str | None = None,
          floor: float = DEFAULT_FLOOR, **options: Any) -> tuple[nn.Module, PruningReport]:
    """Prune ``model`` in place to ``keep`` of its FFN neurons; returns it with a report.

    The calibration data and the combination of method, compensation and allocation are checked
    before any expensive step; a method that tunes weights (``mask-tuning``) fits a pruned copy
    against the dense model and copies the result back.

    Parameters
    ----------
    model : a ``transformers`` model of a supported family (:mod:`minilib.models.families`), on any device
        and in float32, float16 or bfloat16.
    calibration : a list of texts or ``(text, text_pair)`` tuples, a ``datasets.Dataset``, or a
        DataLoader of tokenised batches (:mod:`minilib.data.calibration`). Supervised methods need labels.
    keep : the fraction of the FFN neurons kept, in (0, 1]: of each block with the uniform allocation,
        of all blocks together (the same total) otherwise; rounded to whole neurons.
    method : a name of :data:`minilib.methods.METHODS` (default: the paper's ``"mi-mds"``).
    tokenizer : needed when ``calibration`` holds raw texts.
    seed : every random step (calibration order, MDS, k-means, Random, the held-out tokens) is drawn from it.
    batch_size, max_length : how raw texts are batched and truncated; ``batch_size=None`` is the
        family's :attr:`~minilib.models.families.Family.batch_size` (32 sentences for an encoder, 4 for a
        decoder, whose output distributions over the vocabulary dominate the memory of the gradient scores).
    compensation : ``"none"``, ``"bias"``, ``"least-squares"`` or ``"merge"``, or a
        :class:`~minilib.methods.compensation.Compensation` with its fit options; ``None`` is the
        method's own (``"none"`` for the paper's method and every peer but FLAP and ``lsq-greedy``).
        The fit leaves an encoder's ``[CLS]`` out and keeps a decoder's first position unless
        ``skip_first`` says otherwise (chapter 9 measured both).
    allocation : ``"uniform"`` (the paper), ``"global"`` (score-based methods) or ``"redundancy"``
        (methods with a similarity map); ``None`` is the method's own. :mod:`minilib.methods.allocation`.
    floor : with a non-uniform allocation, each block keeps at least ``floor · keep`` of its neurons.
    options : the paper's settings, :class:`minilib.methods.Settings` (``alpha``, ``widths``,
        ``reduction``, ``mi_batch``, ``max_batches``, ``mds_seeds``, ``mi_tol``…).
    """
    settings = _settings(options)  # every check before any expensive step
    comp = compensation if isinstance(compensation, Compensation) else None
    spec, mode, allocation = check_plan(method, comp.mode if comp else compensation, allocation)
    family = family_of(model)
    comp = Compensation(**{**(comp.as_dict() if comp else {}), "mode": mode}).resolved(family)  # the report's tokens
    sizes = family.sizes(model)
    if len(set(sizes)) != 1:
        raise ValueError(f"the blocks have different FFN widths {sorted(set(sizes))}; minilib.prune keeps one "
                         "fraction of blocks of equal width (prune such a model with minilib.models.surgery.prune_ffn)")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor is a fraction of the uniform count, in [0, 1]; got {floor}")
    keep_fraction(sizes[0], keep)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    batches = as_batches(calibration, tokenizer, batch_size or family.batch_size, max_length)
    labelled = family.causal or has_labels(batches)  # a decoder's labels are its next tokens
    check_method(method, labelled)
    samples = count_samples(batches)
    check_samples(method, family, settings, samples["examples"], samples["tokens"])
    times["calibration"] = time.perf_counter() - t0
    param = next(model.parameters())
    seq_len = samples["tokens"] / samples["examples"]
    parameters, macs_before = count_parameters(model)["total"], macs(model.config, sizes, seq_len)
    state = Calibrated(model, batches, settings, seed, progress)
    state.fit_options = comp  # the tokens lsq-greedy's objective and the compensation fit read

    t0 = time.perf_counter()
    counts = layer_counts(state, method, allocation, keep, floor, seed)
    keep_sets = spec.select(state, counts, seed)
    times["select"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tuned = spec.tune(state, keep_sets) if spec.tune is not None else None  # a pruned copy fitted to the dense model
    stats = state.compensation_stats(collect=False)  # if the selection read them
    partners = spec.partners(state, keep_sets) if mode == "merge" else None
    with state.timed("compensation") if mode != "none" else contextlib.nullcontext():
        pruned, fixes = compensate(model, keep_sets, batches, comp, partners, stats, seed, progress)
    if tuned is not None:
        pruned.load_state_dict(tuned.state_dict())
    times["surgery"] = time.perf_counter() - t0  # with the compensation
    after = family.sizes(pruned)
    report = PruningReport(
        model_class=type(model).__name__, family=family.name, method=method, keep=keep, seed=seed,
        settings=settings.as_dict(), neurons_before=sizes, neurons_after=after, parameters_before=parameters,
        parameters_after=count_parameters(pruned)["total"], macs_before=macs_before,
        macs_after=macs(pruned.config, after, seq_len), seq_len=round(seq_len, 2),
        calibration={**samples, "batches": len(batches), "labels": labelled},
        kept=[[int(i) for i in np.sort(k)] for k in keep_sets], allocation=allocation,
        compensation={**comp.as_dict(), "layers": [f.summary() for f in fixes]},
        seconds={k: round(v, 3) for k, v in times.items()}, stages={k: round(v, 3) for k, v in state.seconds.items()},
        device=str(param.device),
        dtype=str(param.dtype).replace("torch.", ""), minilib_version=__version__, code_revision=code_revision())
    return pruned, report
