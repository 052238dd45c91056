"""GLUE tasks of the paper (§4.1, Table 1): data from a local GLUE folder or the Hub, and metrics.

Data come from a local folder in the original GLUE layout (``<dir>/SST-2/train.tsv``…)
when one is configured: the ``data_dir`` argument, else ``$MINILIB_GLUE_DIR``, else
``../shared/data/glue`` beside the repository if it exists. A split that is not there
is read from the Hugging Face Hub (``nyu-mll/glue``), unless ``HF_HUB_OFFLINE=1``
or ``HF_DATASETS_OFFLINE=1`` is set: then it fails at once with a message that says
where the data can come from, instead of hanging on the network.

Every split is returned as a ``datasets.Dataset`` with columns ``text_a``, ``text_b``
(absent for single-sentence tasks) and ``label`` (int class, or float score for STS-B).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from scipy import stats
from torch import nn

from minilib.cache import REPO, data_fingerprint

HUB_DATASET = "nyu-mll/glue"
DEFAULT_GLUE_DIR = REPO.parent / "shared" / "data" / "glue"
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class Task:
    """One GLUE task: where its data live, how to read them, how to score them."""

    name: str  # the Hub config name, e.g. "sst2"
    folder: str  # the GLUE folder name, e.g. "SST-2"
    tsv_columns: tuple[str, ...]  # GLUE TSV columns giving text_a[, text_b], label
    hub_columns: tuple[str, ...]  # the same columns in the Hub's parquet
    num_labels: int  # 1 for regression (STS-B)
    metrics: tuple[str, ...]  # official metrics, the first is the headline
    batch_size: int  # fine-tuning batch size, paper §4.1
    learning_rate: float  # fine-tuning learning rate, paper §4.1
    label_names: tuple[str, ...] = ()  # TSV label strings, in class-index order (QNLI)

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("sst2", "SST-2", ("sentence", "label"), ("sentence", "label"), 2, ("accuracy",), 8, 5e-4),
        Task("stsb", "STS-B", ("sentence1", "sentence2", "score"), ("sentence1", "sentence2", "label"), 1,
             ("pearson", "spearman"), 8, 5e-4),
        Task("mrpc", "MRPC", ("#1 String", "#2 String", "Quality"), ("sentence1", "sentence2", "label"), 2,
             ("f1", "accuracy"), 8, 3e-4),
        Task("qqp", "QQP", ("question1", "question2", "is_duplicate"), ("question1", "question2", "label"), 2,
             ("f1", "accuracy"), 16, 3e-4),
        Task("qnli", "QNLI", ("question", "sentence", "label"), ("question", "sentence", "label"), 2,
             ("accuracy",), 16, 3e-4, label_names=("entailment", "not_entailment")),
    ]
}


def get_task(name: str | Task) -> Task:
    """Look a task up by Hub name or GLUE folder name, case-insensitively (``"SST-2"``, ``"sst2"``).

    A ``Task`` is returned as it is, so every function here takes either.
    """
    if isinstance(name, Task):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[key]


def glue_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local GLUE folder in use: the argument, ``$MINILIB_GLUE_DIR``, or the default if present."""
    if data_dir is not None:
        path = Path(data_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"GLUE folder {path} does not exist; pass an existing folder in the GLUE layout")
        return path
    if env := os.environ.get("MINILIB_GLUE_DIR"):
        path = Path(env)
        if not path.is_dir():
            raise FileNotFoundError(f"MINILIB_GLUE_DIR={env} does not exist; unset it or point it at a GLUE folder")
        return path
    return DEFAULT_GLUE_DIR if DEFAULT_GLUE_DIR.is_dir() else None


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _parse_label(task: Task, raw: str, where: str) -> int | float:
    try:
        if task.is_regression:
            return float(raw)
        if task.label_names:
            return task.label_names.index(raw)
        return int(raw)
    except ValueError:
        expected = "a float score" if task.is_regression else (task.label_names or "an integer class")
        raise ValueError(f"{where}: label {raw!r} is not {expected}; the file is not {task.folder} in GLUE format") from None


def read_tsv(path: str | os.PathLike, task: Task | str) -> Dataset:
    """Read one GLUE TSV file into a Dataset (``text_a``[, ``text_b``], ``label``).

    GLUE files contain bare ``"`` characters and (MRPC) a UTF-8 byte-order mark, so
    they are split on tabs with quoting off and read as ``utf-8-sig``. A row with the
    wrong number of fields or a bad label is an error naming the file and line.
    """
    task = get_task(task)
    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a GLUE {task.folder} TSV with a header row")
        missing = [c for c in task.tsv_columns if c not in header]
        if missing:
            raise ValueError(f"{path}: header lacks column(s) {missing}; is this the {task.folder} file of GLUE?")
        idx = [header.index(c) for c in task.tsv_columns]
        texts: list[list[str]] = [[] for _ in idx[:-1]]
        labels: list[int | float] = []
        for line, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} tab-separated fields, got {len(row)}; "
                                 "the file is malformed (re-download the GLUE data)")
            for col, i in zip(texts, idx[:-1]):
                col.append(row[i])
            labels.append(_parse_label(task, row[idx[-1]], f"{path}:{line}"))
    columns = {"text_a": texts[0], **({"text_b": texts[1]} if len(texts) > 1 else {}), "label": labels}
    return Dataset.from_dict(columns)


def _local_split(task: Task, split: str, data_dir: str | os.PathLike | None) -> Path | None:
    local = glue_dir(data_dir)
    path = local / task.folder / ("train.tsv" if split == "train" else "dev.tsv") if local else None
    return path if path is not None and path.is_file() else None


def split_source(task: Task | str, split: str = "train", data_dir: str | os.PathLike | None = None) -> str:
    """What :func:`load_split` reads, for cache keys: the local file's content hash, or the Hub dataset."""
    task = get_task(task)
    path = _local_split(task, split, data_dir)
    return f"file:{data_fingerprint(path)}" if path is not None else f"hub:{HUB_DATASET}/{task.name}/{split}"


def load_split(task: Task | str, split: str = "train", data_dir: str | os.PathLike | None = None) -> Dataset:
    """One split (``"train"`` or ``"validation"``) of a GLUE task, local first, then the Hub."""
    task = get_task(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS} (GLUE test labels are not public)")
    if (path := _local_split(task, split, data_dir)) is not None:
        return read_tsv(path, task)
    if _offline():
        local = glue_dir(data_dir)
        where = f"{local / task.folder}" if local else "no local GLUE folder (set MINILIB_GLUE_DIR)"
        raise FileNotFoundError(
            f"{task.folder} {split} is not available offline ({where}); get it from the Hub "
            f"({HUB_DATASET}, config {task.name!r}) with network access and HF_HUB_OFFLINE unset, "
            "or point MINILIB_GLUE_DIR at a GLUE folder that has it"
        )
    return _load_hub(task, split)


def _load_hub(task: Task, split: str) -> Dataset:
    """The split from the Hub's parquet conversion, renamed to this module's columns."""
    from datasets import load_dataset

    ds = load_dataset(HUB_DATASET, task.name, split=split)
    names = ["text_a", "text_b", "label"] if len(task.hub_columns) == 3 else ["text_a", "label"]
    ds = ds.select_columns(list(task.hub_columns)).rename_columns(dict(zip(task.hub_columns, names)))
    return ds


def compute_metrics(task: Task | str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's official metrics, in percent (as GLUE reports them).

    Classification: ``predictions`` are class indices (or logits, argmax-ed here);
    accuracy, and binary F1 of class 1 for MRPC/QQP. Regression (STS-B): Pearson and
    Spearman correlation of the scores.
    """
    task = get_task(task)
    preds, labels = np.asarray(predictions), np.asarray(labels)
    if not task.is_regression and preds.ndim == 2:
        preds = preds.argmax(-1)
    preds = preds.reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {labels.shape[0]} labels; pass one per example")
    if len(labels) == 0:
        raise ValueError("no examples to score")
    out: dict[str, float] = {}
    for m in task.metrics:
        if m == "accuracy":
            out[m] = 100.0 * float((preds == labels).mean())
        elif m == "f1":
            tp = float(((preds == 1) & (labels == 1)).sum())
            denom = float((preds == 1).sum() + (labels == 1).sum())
            out[m] = 100.0 * (2 * tp / denom if denom else 0.0)
        elif m == "pearson":
            out[m] = 100.0 * float(stats.pearsonr(preds, labels).statistic)
        elif m == "spearman":
            out[m] = 100.0 * float(stats.spearmanr(preds, labels).statistic)
    return out


def encode(dataset: Dataset, tokenizer, max_length: int = 128) -> Dataset:
    """Tokenise a split: ``input_ids``, ``token_type_ids`` (where the tokenizer makes them), ``label``; no padding.

    Padding is left to :class:`Batches`, which pads each batch to its own longest
    sequence. ``max_length`` 128 is the usual GLUE choice (the paper does not say; open decision 11 in the book's introduction).
    """
    if max_length < 8:
        raise ValueError(f"max_length={max_length} is too short for [CLS] text [SEP]; use e.g. 128")
    args = [list(dataset[c]) for c in ("text_a", "text_b") if c in dataset.column_names]
    enc = tokenizer(*args, truncation=True, max_length=max_length, return_attention_mask=False)
    columns = {"label": list(dataset["label"]), "input_ids": enc["input_ids"]}
    if "token_type_ids" in enc:  # RoBERTa's, DistilBERT's and ModernBERT's tokenizers give none
        columns["token_type_ids"] = enc["token_type_ids"]
    return Dataset.from_dict(columns)


class Batches:
    """Padded mini-batches of an encoded split, grouped by length so little compute goes to padding.

    Training order (``shuffle=True``): the examples are shuffled, cut into windows of
    ``group * batch_size``, sorted by length inside each window, split into batches,
    and the batches are shuffled; the order depends only on ``seed`` and the epoch
    (:meth:`set_epoch`). Evaluation order (``shuffle=False``): sorted by length,
    with ``order`` mapping the batched examples back to dataset rows.
    """

    def __init__(self, encoded: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, group: int = 50,
                 pad_token_id: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if len(encoded) == 0:
            raise ValueError("the dataset is empty; nothing to batch")
        self.ids = [torch.tensor(x) for x in encoded["input_ids"]]
        columns = encoded.column_names  # token types and labels are optional (RoBERTa; unlabelled calibration)
        self.types = [torch.tensor(x) for x in encoded["token_type_ids"]] if "token_type_ids" in columns else None
        self.labels = torch.tensor(encoded["label"]) if "label" in columns else None
        self.lengths = np.array([len(x) for x in self.ids])
        self.batch_size, self.shuffle, self.seed, self.group = batch_size, shuffle, seed, group
        self.pad_token_id = pad_token_id
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[np.ndarray]:
        """The row indices of each batch, in the order they are yielded."""
        n, bs = len(self.ids), self.batch_size
        if not self.shuffle:
            idx = np.argsort(self.lengths, kind="stable")
            return [idx[i:i + bs] for i in range(0, n, bs)]
        rng = np.random.default_rng([self.seed, self.epoch])
        idx = rng.permutation(n)
        window = bs * self.group
        batches = []
        for start in range(0, n, window):
            chunk = idx[start:start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return -(-len(self.ids) // self.batch_size)

    def collate(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        ids = nn.utils.rnn.pad_sequence([self.ids[i] for i in rows], batch_first=True, padding_value=self.pad_token_id)
        mask = (torch.arange(ids.shape[1])[None] < torch.as_tensor(self.lengths[rows])[:, None]).long()
        batch = {"input_ids": ids, "attention_mask": mask}
        if self.types is not None:
            batch["token_type_ids"] = nn.utils.rnn.pad_sequence([self.types[i] for i in rows], batch_first=True)
        if self.labels is not None:
            batch["labels"] = self.labels[rows]
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for rows in self.order():
            yield self.collate(rows)
