"""Check a (pruned) model with the numbers the book's tables report: ``minilib evaluate DIR``.

* a decoder: perplexity on WikiText-2 *test* (or on a text file of yours), ``exp`` of the mean
  next-token loss over non-overlapping windows (:func:`minilib.models.lm.perplexity`; chapter 7's
  tables use 8 windows of 1,024 tokens, the default here), and with ``--zeroshot`` the accuracy on the
  local lm-eval tasks (:func:`minilib.data.zeroshot.evaluate`; the book's subset of 50 documents a task);
* an encoder with a task head: the GLUE dev score of its task (:func:`minilib.experiments.finetune.evaluate`;
  the task defaults to the ``glue:TASK`` the model was calibrated on, read from its ``pruning.json``).

One table comes out: ``task``, ``metric``, ``value``, ``stderr`` (NaN where none is defined) and
``examples``; ``--out`` writes it as CSV, atomically.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from minilib.console import ArgumentParser
from minilib.data import glue, zeroshot
from minilib.experiments.finetune import evaluate as glue_score
from minilib.experiments.lm_sweep import ZEROSHOT_LIMIT
from minilib.models import lm
from minilib.models.families import family_of

__all__ = ["EVAL_WINDOWS", "EVAL_LENGTH", "perplexity_row", "glue_rows", "zeroshot_rows", "evaluate", "main"]

EVAL_WINDOWS, EVAL_LENGTH = 8, 1024  # chapter 7's full profile: 8 windows of 1,024 WikiText-2 test tokens


def perplexity_row(model: nn.Module, tokenizer, text: str | os.PathLike | None = None, windows: int = EVAL_WINDOWS,
                   length: int = EVAL_LENGTH, data_dir: str | os.PathLike | None = None) -> dict:
    """Perplexity on the first ``windows`` × ``length`` tokens of WikiText-2 test or of a text file."""
    if text is None:
        ids, name = lm.wikitext_ids(tokenizer, "test", data_dir), "wikitext-2 test"
    else:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"--text {path} does not exist; give a UTF-8 text file")
        ids = torch.tensor(tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
        name = path.name
    device = next(model.parameters()).device
    value = lm.perplexity(model, lm.windows(ids, length, windows).to(device))
    return {"task": name, "metric": "perplexity", "value": value, "stderr": math.nan, "examples": windows * length}


def glue_rows(model: nn.Module, tokenizer, task: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """The task's official dev metrics (percent)."""
    spec = glue.get_task(task)
    heads = getattr(model.config, "num_labels", None)
    if heads != spec.num_labels:
        raise ValueError(f"the model's head has {heads} outputs but {spec.name} needs {spec.num_labels}; "
                         "evaluate a model fine-tuned on that task")
    dev = glue.load_split(spec, "validation", data_dir)
    scores = glue_score(model, spec, glue.encode(dev, tokenizer))
    return [{"task": f"{spec.name} dev", "metric": k, "value": v, "stderr": math.nan, "examples": len(dev)}
            for k, v in scores.items()]


def zeroshot_rows(model: nn.Module, tokenizer, tasks: Sequence[str], limit: int | None = ZEROSHOT_LIMIT,
                  seed: int = 0, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """lm-eval's zero-shot accuracies (and LAMBADA's perplexity) on the local task files."""
    try:
        import lm_eval  # noqa: F401 - an optional dependency (the book's extra)
    except ImportError:
        raise ImportError("zero-shot evaluation needs lm-eval: pip install 'lm-eval==0.4.13'") from None
    table = zeroshot.evaluate(model, tokenizer, list(tasks), limit, seed, data_dir=data_dir)
    return table.to_dict("records")


def _calibration_task(folder: Path) -> str | None:
    """The GLUE task a model was calibrated on, from the ``pruning.json`` minilib wrote beside it."""
    report = folder / "pruning.json"
    if not report.is_file():
        return None
    source = json.loads(report.read_text()).get("calibration", {}).get("source", "")
    return source.split(":", 1)[1] if source.startswith("glue:") else None


def evaluate(model: nn.Module, tokenizer, *, text: str | os.PathLike | None = None, windows: int = EVAL_WINDOWS,
             length: int = EVAL_LENGTH, zeroshot_tasks: Sequence[str] = (), limit: int | None = ZEROSHOT_LIMIT,
             glue_task: str | None = None, seed: int = 0, lm_dir: str | os.PathLike | None = None,
             glue_dir: str | os.PathLike | None = None, zeroshot_dir: str | os.PathLike | None = None
             ) -> pd.DataFrame:
    """The table of :mod:`minilib.evaluation` for ``model``: perplexity (and zero-shot) for a decoder,
    the GLUE dev score of ``glue_task`` for an encoder with a head."""
    family = family_of(model)
    if family.causal:
        if glue_task:
            raise ValueError("--glue scores an encoder with a task head; this model is a decoder")
        rows = [perplexity_row(model, tokenizer, text, windows, length, lm_dir)]
        rows += zeroshot_rows(model, tokenizer, zeroshot_tasks, limit, seed, zeroshot_dir) if zeroshot_tasks else []
    else:
        if text is not None or zeroshot_tasks:
            raise ValueError("perplexity and zero-shot accuracy are for decoders; score an encoder with --glue TASK")
        if not family.has_head(model):
            raise ValueError(f"{type(model).__name__} is a bare encoder without a task head, so it has no GLUE "
                             "score; evaluate the model fine-tuned on the task (a ...ForSequenceClassification)")
        if not glue_task:
            raise ValueError("name the GLUE task of this classifier with --glue TASK")
        rows = glue_rows(model, tokenizer, glue_task, glue_dir)
    return pd.DataFrame(rows, columns=["task", "metric", "value", "stderr", "examples"])


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="minilib evaluate", description="Score a saved model as the book's tables do.")
    p.add_argument("model", help="a folder written by minilib prune or save_pretrained (or a Hub id)")
    p.add_argument("--text", help="a decoder's perplexity on this UTF-8 text file (default: WikiText-2 test)")
    p.add_argument("--windows", type=int, default=EVAL_WINDOWS, help=f"perplexity windows (default {EVAL_WINDOWS})")
    p.add_argument("--length", type=int, default=EVAL_LENGTH, help=f"tokens per window (default {EVAL_LENGTH})")
    p.add_argument("--zeroshot", nargs="*", metavar="TASK", choices=list(zeroshot.TASKS),
                   help=f"also lm-eval zero-shot accuracy on these local tasks (none named: all of "
                   f"{', '.join(zeroshot.TASKS)})")
    p.add_argument("--limit", type=int, default=ZEROSHOT_LIMIT,
                   help=f"documents per zero-shot task, a seeded subset (default {ZEROSHOT_LIMIT}, the book's; 0: all)")
    p.add_argument("--glue", metavar="TASK", help="an encoder's GLUE dev score (default: the glue:TASK it was "
                   "calibrated on, from its pruning.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--out", help="also write the table to this CSV file")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    from minilib.cache import write_table
    from minilib.cli import _device, _model_config, load_model

    args = parser().parse_args(argv)
    for name in ("windows", "length"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.limit < 0:
        raise ValueError(f"--limit must be ≥ 0 (0: every document), got {args.limit}")
    if args.out and Path(args.out).suffix != ".csv":
        raise ValueError(f"--out {args.out}: give a .csv file")
    device = _device(args.device)
    config = _model_config(args.model)
    family = family_of(config)
    glue_task = args.glue or (None if family.causal else _calibration_task(Path(args.model)))
    if glue_task:
        glue.get_task(glue_task)  # an unknown task fails here, before the model is loaded
    tasks = list(zeroshot.TASKS) if args.zeroshot == [] else (args.zeroshot or [])
    model, tokenizer = load_model(args.model, config)
    model.to(device)
    table = evaluate(model, tokenizer, text=args.text, windows=args.windows, length=args.length, zeroshot_tasks=tasks,
                     limit=args.limit or None, glue_task=glue_task, seed=args.seed)
    table.insert(0, "model", str(args.model))
    with pd.option_context("display.width", 120, "display.max_columns", 10):
        print(table.drop(columns="model").to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.out:
        write_table(args.out, table)
        print(f"wrote {args.out}", file=sys.stderr)
