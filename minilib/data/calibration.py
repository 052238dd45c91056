"""Calibration data in every form a user has it, turned into the tokenised batches every method reads.

Accepted (:func:`as_batches`):

* a list of texts, or of ``(text, text_pair)`` tuples;
* a ``datasets.Dataset`` with a ``text`` column (and optionally ``text_pair`` and ``label``), or an
  already tokenised one (``input_ids``, optionally ``attention_mask``, ``token_type_ids``, ``label``);
* any iterable of tokenised batches (a ``DataLoader`` of dicts with ``input_ids``…), used as it is.

Files (:func:`read_file`, the command line's ``--calibration``): a text file with one example per
line, a ``.jsonl`` or ``.csv`` with a ``text`` column (optional ``text_pair``, ``label``), or
``glue:TASK`` for the paper's sample: a seeded random 1% of the task's training set (§4.1).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from minilib.data import glue

__all__ = ["Batch", "calibration_indices", "as_batches", "read_file", "glue_sample", "has_labels", "count_samples"]

Batch = dict[str, torch.Tensor]
_FORWARD = ("input_ids", "attention_mask", "token_type_ids")


def _check_texts(texts: Sequence[Any]) -> tuple[list[str], list[str] | None]:
    if len(texts) == 0:
        raise ValueError("the calibration data is empty; give at least a few texts")
    pairs = isinstance(texts[0], (tuple, list))
    if pairs and not all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
        raise ValueError("text pairs must all be (text, text_pair) tuples")
    first = [t[0] for t in texts] if pairs else list(texts)
    second = [t[1] for t in texts] if pairs else None
    for column in (first, second or []):
        bad = next((i for i, t in enumerate(column) if not isinstance(t, str) or not t.strip()), None)
        if bad is not None:
            raise ValueError(f"calibration example {bad} is not a non-empty string: {column[bad]!r}")
    return first, second


def _tokenize(tokenizer, texts: list[str], pairs: list[str] | None, labels: list | None, batch_size: int,
              max_length: int) -> list[Batch]:
    if tokenizer.pad_token is None:  # decoders often ship without one; padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    batches = []
    for s, e in _spans(len(texts), batch_size):
        enc = tokenizer(texts[s:e], pairs[s:e] if pairs else None, truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        batch = {k: enc[k] for k in _FORWARD if k in enc}
        if labels is not None:
            batch["labels"] = torch.as_tensor(labels[s:e])
        batches.append(batch)
    return batches


def _spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``ceil(n / batch_size)`` consecutive batches of near-equal size (no lone last example, which a
    bare encoder's in-batch distribution could not use)."""
    edges = np.linspace(0, n, -(-n // batch_size) + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _tokenized_rows(dataset: Dataset, batch_size: int, pad_id: int) -> list[Batch]:
    rows = glue.Batches(dataset, batch_size, pad_token_id=pad_id)  # pads, masks; token types and labels if there
    return [rows.collate(np.arange(s, e)) for s, e in _spans(len(dataset), batch_size)]


def as_batches(data: Any, tokenizer=None, batch_size: int = 32, max_length: int = 128) -> list[Batch]:
    """The calibration data as a list of tokenised batches (see the module docstring for the forms).

    ``tokenizer`` is needed for raw texts; ``max_length`` truncates them (128 word pieces, the usual
    GLUE choice; use longer windows for a decoder).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError("pass the calibration texts, not a path; read a file with minilib.data.calibration.read_file")
    if isinstance(data, Dataset):
        if len(data) == 0:
            raise ValueError("the calibration dataset is empty")
        if "input_ids" in data.column_names:
            return _tokenized_rows(data, batch_size, getattr(tokenizer, "pad_token_id", None) or 0)
        if "text" not in data.column_names:
            raise ValueError(f"the calibration dataset needs a 'text' column (and optional 'text_pair', 'label') or "
                             f"'input_ids'; it has {data.column_names}")
        texts, pairs = _check_texts(list(zip(data["text"], data["text_pair"])) if "text_pair" in data.column_names
                                    else list(data["text"]))
        labels = list(data["label"]) if "label" in data.column_names else None
    elif isinstance(data, Sequence) and (len(data) == 0 or isinstance(data[0], (str, tuple, list))):
        texts, pairs = _check_texts(data)
        labels = None
    elif isinstance(data, Iterable):
        batches = [dict(b) for b in data]
        if not batches:
            raise ValueError("the calibration loader gave no batches")
        if not all(isinstance(b, Mapping) and "input_ids" in b for b in batches):
            raise ValueError("every calibration batch needs input_ids (a DataLoader of tokenised batches)")
        return batches
    else:
        raise TypeError(f"calibration data of type {type(data).__name__} is not supported; give a list of texts, a "
                        "datasets.Dataset or a DataLoader of tokenised batches")
    if tokenizer is None:
        raise ValueError("raw calibration texts need a tokenizer; pass tokenizer=AutoTokenizer.from_pretrained(...)")
    return _tokenize(tokenizer, texts, pairs, labels, batch_size, max_length)


def calibration_indices(n: int, fraction: float = 0.01, seed: int = 0, minimum: int = 2) -> np.ndarray:
    """A random ``fraction`` of ``range(n)`` (at least ``minimum`` rows), in random order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}; the paper uses 0.01")
    size = min(n, max(minimum, round(fraction * n)))
    return np.random.default_rng(seed).choice(n, size, replace=False)


def has_labels(batches: Sequence[Batch]) -> bool:
    return all("labels" in b for b in batches)


def count_samples(batches: Sequence[Batch]) -> dict[str, int]:
    """Examples and (non-padding) tokens in the batches."""
    tokens = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in batches)
    return {"examples": sum(len(b["input_ids"]) for b in batches), "tokens": tokens}


def glue_sample(task: str, fraction: float = 0.01, seed: int = 0, data_dir: str | os.PathLike | None = None):
    """The paper's calibration sample of a GLUE task: a seeded random ``fraction`` of its training set,
    as a ``Dataset`` with ``text`` (``text_pair``) and ``label``."""
    train = glue.load_split(task, "train", data_dir)
    sample = train.select(calibration_indices(len(train), fraction, seed))
    return sample.rename_columns({"text_a": "text", **({"text_b": "text_pair"} if "text_b" in sample.column_names
                                                        else {})})


def read_file(spec: str, seed: int = 0, data_dir: str | os.PathLike | None = None):
    """Calibration data from the command line: a file path or ``glue:TASK`` (see the module docstring)."""
    if spec.startswith("glue:"):
        return glue_sample(spec.split(":", 1)[1], seed=seed, data_dir=data_dir)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist; give a .txt, .jsonl or .csv file or glue:TASK")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            rows = [{"text": line} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read calibration file {path}: {err}; give UTF-8 text, JSON lines or CSV") from None
    if not rows:
        raise ValueError(f"calibration file {path} has no examples")
    if not all(isinstance(r, dict) and "text" in r for r in rows):
        raise ValueError(f"every row of {path} needs a 'text' field (and optional 'text_pair', 'label')")
    columns = {c: [r.get(c) for r in rows] for c in ("text", "text_pair", "label") if any(c in r for r in rows)}
    if "label" in columns:
        labels = np.asarray(columns["label"], dtype=float)
        columns["label"] = labels.astype(int).tolist() if np.all(labels == labels.round()) else labels.tolist()
    return Dataset.from_dict(columns)
