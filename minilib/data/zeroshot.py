"""Zero-shot accuracy the way the LLM-pruning papers report it, on local copies of the tasks (chapter 8).

Each task is lm-evaluation-harness's own definition (``lm_eval/tasks/<task>``: prompt, choices,
target, metrics), with only its data source replaced: instead of the Hub, a JSONL file converted
from the release files in ``$MINILIB_ZEROSHOT_DIR`` (default ``../shared/data/zeroshot``, see its
``SOURCES.md``) into the document schema the built-in definition reads. Scores are therefore
comparable with published lm-eval numbers, on a fixed seeded subset of each task's examples (the
same for every model), with lm-eval's standard error beside each accuracy.

Two local files are in converted formats, and the conversion says what it cannot recover:

* **WinoGrande** (llm-foundry's ``context_options``/``continuation``/``gold``): written as the
  built-in schema with ``sentence = "_ " + continuation`` and the two full contexts as the
  options, so the built-in functions build exactly the requests of the original ``dev.jsonl``.
* **HellaSwag** (llama.cpp's text format, six lines per item): the context is one string, so the
  built-in capitalisation of the ``ctx_b`` half is lost (e.g. "... on a roof. he" where lm-eval
  reads "... on a roof. He").
"""

from __future__ import annotations

import bz2
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from minilib.cache import REPO, atomic_file, cache_dir, data_fingerprint

__all__ = ["TASKS", "ZeroShotTask", "zeroshot_dir", "documents", "subset_indices", "task_config", "evaluate"]

DEFAULT_DIR = REPO.parent / "shared" / "data" / "zeroshot"


def zeroshot_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of the local task files: the argument, ``$MINILIB_ZEROSHOT_DIR``, or ``../shared/data/zeroshot``."""
    return Path(path or os.environ.get("MINILIB_ZEROSHOT_DIR") or DEFAULT_DIR)


def _jsonl(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _piqa(goal_file: Path, labels: Path) -> list[dict]:
    docs, gold = _jsonl(goal_file), labels.read_text().split()
    if len(docs) != len(gold):
        raise ValueError(f"{goal_file} has {len(docs)} rows and {labels} {len(gold)} labels; use the matching pair")
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(g)} for d, g in zip(docs, gold)]


def _arc(path: Path) -> list[dict]:  # the ARC release schema → the Hub's allenai/ai2_arc
    return [{"id": d["id"], "question": d["question"]["stem"], "answerKey": d["answerKey"],
             "choices": {"text": [c["text"] for c in d["question"]["choices"]],
                         "label": [c["label"] for c in d["question"]["choices"]]}} for d in _jsonl(path)]


def _boolq(path: Path) -> list[dict]:
    return [{"question": d["question"], "passage": d["passage"], "label": int(d["label"] in (True, "true"))}
            for d in _jsonl(path)]


def _lambada(path: Path) -> list[dict]:
    return [{"text": d["text"]} for d in _jsonl(path)]


_OPTION = re.compile(r"\(([A-Z])\) (.*?)(?= \([A-Z]\) |$)")


def _openbookqa(path: Path) -> list[dict]:
    docs = []
    lines = path.read_text().splitlines()
    for line in lines[1:]:  # ID, Question Stem, Choices, Complete Question, Answer Key
        qid, stem, choices, _, key = line.split("\t")
        found = _OPTION.findall(choices)
        if len(found) < 2:
            raise ValueError(f"{path}: cannot read the choices of question {qid}: {choices!r}")
        docs.append({"id": qid, "question_stem": stem, "answerKey": key,
                     "choices": {"text": [t for _, t in found], "label": [lab for lab, _ in found]}})
    return docs


def _winogrande(path: Path) -> list[dict]:
    # the built-in functions split `sentence` at "_": with "_ " + continuation and the full contexts as
    # options they build exactly the original requests (module docstring)
    return [{"sentence": "_ " + d["continuation"], "option1": d["context_options"][0],
             "option2": d["context_options"][1], "answer": str(int(d["gold"]) + 1)} for d in _jsonl(path)]


def _hellaswag(path: Path) -> list[dict]:
    lines = bz2.decompress(path.read_bytes()).decode().split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if len(lines) % 6:
        raise ValueError(f"{path}: {len(lines)} lines is not six per item; use llama.cpp's hellaswag_val_full format")
    docs = []
    for i in range(0, len(lines), 6):
        label, ctx = lines[i].split(": ", 1) if ": " in lines[i] else ("", lines[i])
        docs.append({"activity_label": label, "ctx_a": ctx, "ctx_b": "", "endings": lines[i + 2:i + 6],
                     "label": lines[i + 1]})
    return docs


@dataclass(frozen=True)
class ZeroShotTask:
    """A local task: lm-eval's built-in definition ``builtin`` fed with ``read(*files)``."""

    name: str
    builtin: str  # the YAML under lm_eval/tasks whose prompt and metrics are used
    files: tuple[str, ...]  # relative to zeroshot_dir()
    read: Callable[..., list[dict]]


TASKS: dict[str, ZeroShotTask] = {t.name: t for t in [
    ZeroShotTask("piqa", "piqa/piqa.yaml", ("piqa/valid.jsonl", "piqa/valid-labels.lst"), _piqa),
    ZeroShotTask("arc_easy", "arc/arc_easy.yaml", ("arc_easy/ARC-Easy-Test.jsonl",), _arc),
    ZeroShotTask("arc_challenge", "arc/arc_challenge.yaml", ("arc_challenge/ARC-Challenge-Test.jsonl",), _arc),
    ZeroShotTask("boolq", "super_glue/boolq/default.yaml", ("boolq/val.jsonl",), _boolq),
    ZeroShotTask("hellaswag", "hellaswag/hellaswag.yaml", ("hellaswag/hellaswag_val_full.txt.bz2",), _hellaswag),
    ZeroShotTask("winogrande", "winogrande/default.yaml", ("winogrande/winogrande.jsonl",), _winogrande),
    ZeroShotTask("openbookqa", "openbookqa/openbookqa.yaml", ("openbookqa/test.tsv",), _openbookqa),
    ZeroShotTask("lambada_openai", "lambada/lambada_openai.yaml", ("lambada/lambada_test.jsonl",), _lambada),
]}


def _task(name: str) -> ZeroShotTask:
    if name not in TASKS:
        raise ValueError(f"unknown zero-shot task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]


def _files(task: ZeroShotTask, data_dir: str | os.PathLike | None) -> list[Path]:
    paths = [zeroshot_dir(data_dir) / f for f in task.files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{task.name}: {missing[0]} is missing; set $MINILIB_ZEROSHOT_DIR to the folder "
                                "described in ../shared/data/zeroshot/SOURCES.md")
    return paths


def documents(name: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Every example of a task, in the document schema of lm-eval's built-in definition."""
    task = _task(name)
    return task.read(*_files(task, data_dir))


def subset_indices(n_docs: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """The fixed subset: ``limit`` indices drawn without replacement by ``seed``, in file order (all if None)."""
    if limit is None or limit >= n_docs:
        return np.arange(n_docs)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n_docs, size=limit, replace=False))


def _builtin_config(task: ZeroShotTask) -> dict:
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval 0.4.13's loader: includes and !function resolved

    return load_yaml(Path(lm_eval.tasks.__file__).parent / task.builtin)


def task_config(name: str, limit: int | None = None, seed: int = 0, data_dir: str | os.PathLike | None = None,
                cache: str | os.PathLike | None = None) -> dict:
    """lm-eval's config of task ``name``, reading the cached JSONL of its fixed subset instead of the Hub.

    The JSONL (and a manifest of which examples it holds) is written once per task, subset, seed
    and content of the source files.
    """
    task = _task(name)
    key = f"{name}-n{limit or 'all'}-s{seed}-{data_fingerprint(*_files(task, data_dir))}"
    path = cache_dir(cache) / "zeroshot" / f"{key}.jsonl"
    if not path.is_file():
        docs = documents(name, data_dir)
        keep = subset_indices(len(docs), limit, seed)
        atomic_file(path.with_suffix(".json"), lambda p: p.write_text(json.dumps(
            {"task": name, "examples": len(docs), "indices": keep.tolist(), "seed": seed})))
        atomic_file(path, lambda p: p.write_text("".join(json.dumps(docs[i]) + "\n" for i in keep)))
    cfg = _builtin_config(task)
    for split in ("training_split", "validation_split", "fewshot_split"):
        cfg.pop(split, None)
    cfg.update(task=name, dataset_path="json", dataset_name=None, test_split="test",
               dataset_kwargs={"data_files": {"test": str(path)}})
    return cfg


def evaluate(model: torch.nn.Module, tokenizer, tasks: Sequence[str] = tuple(TASKS), limit: int | None = None,
             seed: int = 0, batch_size: int = 16, data_dir: str | os.PathLike | None = None,
             cache: str | os.PathLike | None = None) -> pd.DataFrame:
    """Zero-shot scores of a causal LM with lm-evaluation-harness: one row per task and metric.

    Columns: ``task``, ``metric`` (``acc``, ``acc_norm``; LAMBADA also ``perplexity``), ``value``,
    ``stderr`` (lm-eval's standard error of the mean) and ``examples`` (the subset's size).
    """
    from lm_eval import simple_evaluate
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    configs = [task_config(t, limit, seed, data_dir, cache) for t in tasks]  # every name and file checked first
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(next(model.parameters()).device))
    # bootstrap_iters > 0 turns stderr on: closed form for accuracies, 1,000 draws for LAMBADA's perplexity
    # the tasks come built: an empty task index, instead of the default one that parses lm-eval's
    # ~14,000 task YAML files on every call (40 s)
    out = simple_evaluate(lm, tasks=[ConfigurableTask(config=c) for c in configs], num_fewshot=0,
                          log_samples=False, bootstrap_iters=1000, verbosity="ERROR",
                          task_manager=TaskManager(include_defaults=False))
    rows = []
    for name in tasks:
        res = out["results"][name]
        for key, value in res.items():
            metric, _, flt = key.partition(",")
            if flt and not metric.endswith("_stderr") and isinstance(value, float):
                err = res.get(f"{metric}_stderr,{flt}")
                rows.append({"task": name, "metric": metric, "value": value,
                             "stderr": err if isinstance(err, float) else float("nan"),
                             "examples": out["n-samples"][name]["effective"]})
    return pd.DataFrame(rows)
