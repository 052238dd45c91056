"""Calibration data in every form a user has it, turned into the tokenised batches every method reads.

Accepted (:func:`as_batches`):

* a list of texts, or of ``(text, text_pair)`` tuples;
* a ``datasets.Dataset`` with a ``text`` column (and optionally ``text_pair`` and ``label``), or an
  already tokenised one (``input_ids``, optionally ``attention_mask``, ``token_type_ids``, ``label``);
* any iterable of tokenised batches (a ``DataLoader`` of dicts with ``input_ids``…), used as it is.

Sources (:func:`read_file`, the command line's ``--calibration``):

* a ``.txt`` file: one example per line (blank lines skipped);
* a ``.jsonl``, ``.csv`` or ``.tsv`` file with a text column (``text`` unless named), and optional
  pair and label columns (``text_pair`` and ``label`` when present, unless named);
* ``glue:TASK``: the paper's sample, a seeded random 1% of the task's training set (§4.1);
* ``hf:NAME[:CONFIG]:SPLIT[:COLUMN]``: a Hugging Face dataset from the Hub, or a folder written by
  ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (empty texts skipped). With three fields the
  second is read as the split when it looks like one (``train``, ``validation``, ``test``, ``dev``,
  with an optional slice such as ``train[:1000]``), else as the config: ``hf:wikitext:wikitext-2-raw-v1:train``.
"""

from __future__ import annotations

import csv
import json
import os
import re
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


_SPLIT = re.compile(r"^(train|validation|valid|test|dev)(\[.*\])?$")


def _columns(rows: Dataset | list[dict], source: str, text: str | None, pair: str | None,
             label: str | None) -> Dataset:
    """The text, pair and label columns of ``rows``, renamed to ``text``, ``text_pair``, ``label``."""
    names = rows.column_names if isinstance(rows, Dataset) else list(dict.fromkeys(k for r in rows for k in r))
    wanted = {"text": text or "text", "text_pair": pair, "label": label}
    for key, default in (("text_pair", "text_pair"), ("label", "label")):
        if wanted[key] is None and default in names:
            wanted[key] = default
    for key, column in wanted.items():
        if column is not None and column not in names:
            option = {"text": "--text-column", "text_pair": "--pair-column", "label": "--label-column"}[key]
            raise ValueError(f"{source} has no column {column!r} (it has {', '.join(map(str, names))}); "
                             f"name the {key.replace('_', ' ')} column with {option}")
    picked = {key: column for key, column in wanted.items() if column is not None}
    if isinstance(rows, Dataset):
        columns = {key: rows[column] for key, column in picked.items()}
    else:
        columns = {key: [r.get(column) for r in rows] for key, column in picked.items()}
    if "label" in columns:
        try:
            labels = np.asarray(columns["label"], dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"the label column {picked['label']!r} of {source} is not numeric; give the model's "
                             "class ids") from None
        columns["label"] = labels.astype(int).tolist() if np.all(labels == labels.round()) else labels.tolist()
    return Dataset.from_dict(columns)


def _table(path: Path, delimiter: str) -> list[dict]:
    """Rows of a CSV or TSV file with a header; a row with more or fewer fields than the header is an error."""
    with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark (MRPC's) is not a column
        # GLUE's .tsv files hold unbalanced quotes in their texts: a tab-separated file is read unquoted
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting)
        rows = []
        for row in reader:
            if None in row or None in row.values():
                kind = "tab" if delimiter == "\t" else "comma"
                raise ValueError(f"{path} line {reader.line_num}: its fields do not match the header's "
                                 f"{len(reader.fieldnames)} {kind}-separated columns; is it really a "
                                 f"{path.suffix} file?")
            rows.append(row)
    return rows


def _hub(spec: str, text: str | None, pair: str | None, label: str | None) -> Dataset:
    """``hf:NAME[:CONFIG]:SPLIT[:COLUMN]`` (see the module docstring)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    fields = spec.split(":")[1:]
    if not 2 <= len(fields) <= 4 or not all(fields):
        raise ValueError(f"{spec!r}: write hf:NAME[:CONFIG]:SPLIT[:COLUMN], e.g. hf:wikitext:wikitext-2-raw-v1:train")
    if len(fields) == 2:
        name, config, split, column = fields[0], None, fields[1], None
    elif len(fields) == 3 and _SPLIT.match(fields[1]):
        name, config, split, column = fields[0], None, fields[1], fields[2]
    elif len(fields) == 3:
        name, config, split, column = fields[0], fields[1], fields[2], None
    else:
        name, config, split, column = fields
    text = column or text
    if Path(name).is_dir():
        saved = load_from_disk(name)
        if "[" in split:
            raise ValueError(f"{spec!r}: a saved dataset's split takes no slice; use --max-examples")
        if isinstance(saved, DatasetDict):
            if split not in saved:
                raise ValueError(f"{name} has no split {split!r}; it has {', '.join(saved)}")
            saved = saved[split]
        data = saved
    else:
        try:
            data = load_dataset(name, config, split=split)
        except Exception as err:  # the Hub's errors are long; the first line says what went wrong
            raise ValueError(f"cannot load {spec!r}: {str(err).splitlines()[0][:200]}") from None
    data = _columns(data, spec, text, pair, label)
    return data.filter(lambda t: bool(t and t.strip()), input_columns="text", keep_in_memory=True)


def read_file(spec: str, seed: int = 0, data_dir: str | os.PathLike | None = None, *, text: str | None = None,
              pair: str | None = None, label: str | None = None) -> Dataset:
    """Calibration data from the command line: a file, ``glue:TASK`` or ``hf:…`` (see the module docstring).

    ``text``, ``pair`` and ``label`` name the columns of a table or dataset (default: ``text``, and
    ``text_pair`` and ``label`` when present); the result has columns ``text`` (``text_pair``, ``label``).
    """
    if spec.startswith("glue:"):
        return glue_sample(spec.split(":", 1)[1], seed=seed, data_dir=data_dir)
    if spec.startswith("hf:"):
        return _hub(spec, text, pair, label)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist; give a .txt, .jsonl, .csv or .tsv file, "
                                "glue:TASK or hf:NAME[:CONFIG]:SPLIT")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            if not all(isinstance(r, dict) for r in rows):
                raise ValueError(f"{path}: every line of a .jsonl file must be a JSON object")
        elif suffix in (".csv", ".tsv"):
            rows = _table(path, "\t" if suffix == ".tsv" else ",")
        elif suffix in (".txt", ""):
            rows = [{"text": line} for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            if rows and all("\t" in r["text"] for r in rows[:50]):  # a table, not sentences
                raise ValueError(f"{path} has tab-separated fields; name it .tsv (with a header) to read its columns")
        else:
            raise ValueError(f"calibration file {path}: unknown extension {path.suffix!r}; use .txt, .jsonl, .csv "
                             "or .tsv")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise ValueError(f"cannot read calibration file {path}: {err}; give UTF-8 text, JSON lines, CSV or TSV"
                         ) from None
    if not rows:
        raise ValueError(f"calibration file {path} has no examples")
    return _columns(rows, str(path), text, pair, label)
