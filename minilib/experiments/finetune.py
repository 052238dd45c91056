"""Fine-tune a BERT encoder on a GLUE task, fast on a CPU, with a recipe per model (:func:`hyperparameters`).

* BERT-tiny (every init but ``"minilm"``): the paper's hyperparameters (§4.1): AdamW (β = 0.9,
  0.999, ε = 1e-8, no weight decay), the task's batch size and learning rate from
  :data:`minilib.data.glue.TASKS`, 4 epochs, linear decay to 0 without warm-up (the
  ``transformers.Trainer`` default; the paper does not state a schedule).
* all-MiniLM-L6-v2 (``"minilm"``): Devlin et al.'s GLUE recipe for BERT (2019, §4.1 and
  App. A.3): batch 32, 3 epochs, 10% linear warm-up then linear decay, weight decay 0.01 on
  every weight but biases and LayerNorm; one learning rate, 5e-5 (the top of their grid, which
  also lies in Turc et al.'s grid for small BERTs), for all tasks, since a search on the dev
  set would tune to the set the book reports on.

Max length 128 for both. Speed comes from what does not change the maths: length-grouped
batches padded only to their own longest sentence, PyTorch's fused AdamW, and no framework overhead.

Checkpoints are cached under ``<cache>/finetuned/<init>/<task>/<run>`` with a ``result.json``
(dev metrics, wall time, throughput, provenance). A run checkpoints after every epoch and
resumes from there; the same seed gives the same weights on CPU. Command line::

    python -m minilib.experiments.finetune --task sst2 --init offline            # one fine-tune
    python -m minilib.experiments.finetune --table results/finetune_scores.csv --seeds 0 1 2   # the book's table
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers
from tqdm.auto import tqdm
from transformers import BertForSequenceClassification

from minilib.console import ArgumentParser
from minilib.data import glue
from minilib.experiments import paper
from minilib.cache import (atomic_dir, atomic_file, cache_dir, check_output, code_fingerprint, code_revision, read_json,
                           sha256, short_hash, write_json)
from minilib.models.bert import INITS, describe, load_classifier, load_tokenizer, model_source, quiet, resolve_init

BETAS, EPS = (0.9, 0.999), 1e-8

__all__ = ["Hyperparameters", "hyperparameters", "run_dir", "finetune", "subset", "train_epoch", "make_optimizer", "evaluate", "read_result",
           "load_finetuned", "score_table", "compare_with_paper"]


@dataclass(frozen=True)
class Hyperparameters:
    """A fine-tuning recipe: AdamW with linear warm-up (a fraction of the steps) and linear decay to 0."""

    learning_rate: float
    batch_size: int
    epochs: int
    warmup: float = 0.0
    weight_decay: float = 0.0  # never on biases and LayerNorm weights (Devlin et al.'s optimiser)
    source: str = ""


# Devlin et al. (2019), §4.1: batch 32, 3 epochs; warm-up 10% and weight decay 0.01 as in their code
MINILM_RECIPE = Hyperparameters(5e-5, 32, 3, warmup=0.1, weight_decay=0.01,
                                source="Devlin et al. 2019, GLUE recipe (§4.1, App. A.3), lr 5e-5")


def hyperparameters(task: glue.Task | str, init: str = "auto") -> Hyperparameters:
    """The recipe of a (task, init) pair: MiniLM's for ``"minilm"``, the paper's BERT-tiny one otherwise."""
    task = glue.get_task(task)
    if resolve_init(init) == "minilm":
        return MINILM_RECIPE
    return Hyperparameters(task.learning_rate, task.batch_size, 4, source="the paper, §4.1 (BERT-tiny)")


def _init_tag(init: str, recipe: str, cache: str | os.PathLike | None) -> str:
    """The cache name of a starting point; a folder's weights are hashed, so rebuilding them re-runs."""
    init = resolve_init(init)
    if init in ("hub", "random"):
        return init
    source = Path(model_source(init, recipe, cache))  # fails fast when the folder is missing
    weights = next((source / f for f in ("model.safetensors", "pytorch_model.bin") if (source / f).is_file()), None)
    identity = sha256(weights) if weights else short_hash(str(source.resolve()))
    return {"offline": f"offline-{recipe}-", "minilm": "minilm-"}.get(init, "local-") + identity[:12]


def run_dir(task: glue.Task | str, init: str, seed: int = 0, epochs: int | None = None, max_train: int | None = None,
            recipe: str = "full", cache: str | os.PathLike | None = None,
            data_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of one fine-tuning run.

    Its name holds the settings, the starting weights (:func:`_init_tag`), and a fingerprint of the
    fine-tuning code and of the train and dev files read (:mod:`minilib.cache`, "Provenance").
    """
    task = glue.get_task(task)
    epochs = epochs or hyperparameters(task, init).epochs
    provenance = short_hash(json.dumps([code_fingerprint("minilib.experiments.finetune"),
                                        glue.split_source(task, "train", data_dir),
                                        glue.split_source(task, "validation", data_dir)]))
    run = f"seed{seed}-ep{epochs}" + (f"-n{max_train}" if max_train else "") + f"-{provenance}"
    return cache_dir(cache) / "finetuned" / _init_tag(init, recipe, cache) / task.name / run


@torch.no_grad()
def evaluate(model: BertForSequenceClassification, task: glue.Task | str, encoded, batch_size: int = 128
             ) -> dict[str, float]:
    """The task's official metrics (percent) of ``model`` on an encoded split."""
    task = glue.get_task(task)
    was_training = model.training
    model.eval()
    batches = glue.Batches(encoded, batch_size)
    preds, labels = [], []
    for b in batches:
        logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits
        preds.append(logits.squeeze(-1) if task.is_regression else logits.argmax(-1))
        labels.append(b["labels"])
    model.train(was_training)
    return glue.compute_metrics(task, torch.cat(preds).numpy(), torch.cat(labels).numpy())


def train_epoch(model: BertForSequenceClassification, batches: glue.Batches, opt: torch.optim.Optimizer,
                sched: torch.optim.lr_scheduler.LRScheduler, seed: int, epoch: int, bar: tqdm | None = None) -> None:
    """One pass over ``batches`` (set to ``epoch``); dropout is seeded per step so a resumed run matches."""
    batches.set_epoch(epoch)
    for i, b in enumerate(batches):
        torch.manual_seed(hash((seed, epoch, i)) % 2**63)  # int-tuple hashes are stable across runs
        loss = model(**b).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if bar is not None:
            bar.update()
            if i % 200 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")


def make_optimizer(model: BertForSequenceClassification, hp: Hyperparameters, total_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Fused AdamW (weight decay off biases and LayerNorm) with ``hp``'s linear warm-up and decay to 0."""
    params = dict(model.named_parameters())
    no_decay = [n for n, p in params.items() if p.ndim < 2]  # biases and LayerNorm weights
    groups = [{"params": [p for n, p in params.items() if n not in no_decay], "weight_decay": hp.weight_decay},
              {"params": [params[n] for n in no_decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=hp.learning_rate, betas=BETAS, eps=EPS, fused=True)
    warm = round(hp.warmup * total_steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warm if s < warm else max(0.0, 1 - (s - warm) / (total_steps - warm)))


def subset(dataset, max_train: int | None, seed: int):
    """A seeded random subset of ``max_train`` rows (in dataset order), or all rows."""
    if not max_train or max_train >= len(dataset):
        return dataset
    return dataset.select(np.sort(np.random.default_rng(seed).choice(len(dataset), max_train, replace=False)))


def finetune(task: glue.Task | str, init: str = "auto", seed: int = 0, epochs: int | None = None,
             max_train: int | None = None, recipe: str = "full", data_dir: str | os.PathLike | None = None,
             cache: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Fine-tune (or return the cached run) and return the run folder.

    Parameters
    ----------
    task : GLUE task name or :class:`~minilib.data.glue.Task`.
    init : ``"auto"``, ``"offline"``, ``"hub"``, ``"random"`` or a model folder (see :mod:`minilib.models.bert`).
    seed : seeds the classifier head (all weights for ``"random"``), batch order and dropout.
    epochs : overrides the recipe's (:func:`hyperparameters`: 4 for BERT-tiny, 3 for MiniLM).
    max_train : fine-tune on a random subset of this many training examples (quick runs).
    recipe : which offline encoder (``"full"`` or ``"quick"``) when ``init="offline"``.
    """
    task, init, revision = glue.get_task(task), resolve_init(init), code_revision()
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    hp = hyperparameters(task, init)
    hp = replace(hp, epochs=epochs or hp.epochs)
    epochs = hp.epochs
    out = run_dir(task, init, seed, epochs, max_train, recipe, cache, data_dir)
    if (out / "result.json").is_file():
        return out
    tokenizer = load_tokenizer(init, recipe, cache)
    train = glue.encode(subset(glue.load_split(task, "train", data_dir), max_train, seed), tokenizer)
    dev = glue.encode(glue.load_split(task, "validation", data_dir), tokenizer)
    model = load_classifier(init, task, seed, recipe, cache)
    batches = glue.Batches(train, hp.batch_size, shuffle=True, seed=seed)
    total = epochs * len(batches)
    opt, sched = make_optimizer(model, hp, total)

    partial = out.with_name(out.name + ".partial")
    state_file, start_epoch, seconds = partial / "state.pt", 0, 0.0
    if state_file.is_file():  # resume after the last finished epoch
        state = torch.load(state_file, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch, seconds = state["epoch"], state["seconds"]

    model.train()
    bar = tqdm(total=total, initial=start_epoch * len(batches), desc=f"fine-tune {task.name}", unit="step",
               disable=not progress)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        train_epoch(model, batches, opt, sched, seed, epoch, bar)
        seconds += time.perf_counter() - t0
        if epoch + 1 < epochs:
            partial.mkdir(parents=True, exist_ok=True)
            atomic_file(state_file, lambda p: torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                                                          "sched": sched.state_dict(), "epoch": epoch + 1,
                                                          "seconds": seconds}, p))
    bar.close()

    metrics = evaluate(model, task, dev)
    with atomic_dir(out) as tmp:
        with quiet():
            model.save_pretrained(tmp)
        write_json(tmp / "result.json", {
            "task": task.name, "init": init, "model": describe(init, recipe), "seed": seed,
            "train_examples": len(train), "dev_examples": len(dev), **asdict(hp), "dev": metrics, "train_seconds": round(seconds, 1),
            "examples_per_second": round(epochs * len(train) / seconds, 1), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "code": revision,
        })
    if state_file.exists():
        state_file.unlink()
        partial.rmdir()
    return out


def read_result(path: str | os.PathLike) -> dict:
    """The ``result.json`` of a finished run (dev metrics and provenance)."""
    path = Path(path)
    if not (path / "result.json").is_file():
        raise FileNotFoundError(f"{path} is not a finished fine-tuning run; run minilib.experiments.finetune.finetune first")
    return read_json(path / "result.json")


def load_finetuned(path: str | os.PathLike) -> BertForSequenceClassification:
    """A fine-tuned run's model (from :func:`finetune`'s folder), in eval mode."""
    read_result(path)
    with quiet():
        return BertForSequenceClassification.from_pretrained(path).eval()


def score_table(tasks: list[str], inits: list[str], seeds: Sequence[int] = (0,), recipe: str = "full",
                progress: bool = True) -> pd.DataFrame:
    """Fine-tune every (init, task, seed) triple (cached) and collect the dev metrics as a tidy table."""
    rows = []
    for init in inits:
        for task in tasks:
            for seed in seeds:
                res = read_json(finetune(task, init, seed, recipe=recipe, progress=progress) / "result.json")
                for metric, value in res["dev"].items():
                    rows.append({"task": res["task"], "init": init, "model": res["model"], "metric": metric,
                                 "value": round(value, 2), "seed": seed, "train_seconds": res["train_seconds"],
                                 "examples_per_second": res["examples_per_second"],
                                 "threads": res.get("threads"), "code": res["code"]})
    return pd.DataFrame(rows)


def compare_with_paper(scores: pd.DataFrame, stat: str = "mean") -> pd.DataFrame:
    """Dev scores per starting point (rows) and task metric (columns), over seeds, with the paper's BERT-tiny row.

    ``stat`` is how the seeds of a cell are combined: ``"mean"`` (the paper's row follows), ``"std"``
    (sample standard deviation), ``"min"``, ``"max"`` or ``"count"``.
    """
    if stat not in ("mean", "std", "min", "max", "count"):
        raise ValueError(f"unknown stat {stat!r}; use mean, std, min, max or count")
    ours = scores.assign(column=scores.task + " " + scores.metric).pivot_table(
        index="model", columns="column", values="value", aggfunc=stat, sort=False)
    if stat != "mean":
        return ours
    published = pd.DataFrame({f"{t} {m}": [v] for t, ms in paper.BERT_TINY.items() for m, v in ms.items()},
                             index=["paper: BERT-tiny (Table 2)"])
    return pd.concat([ours, published[[c for c in ours.columns if c in published]]])


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="minilib finetune", description="Fine-tune a BERT encoder on GLUE: BERT-tiny with the "
                            "paper's hyperparameters, all-MiniLM-L6-v2 (--init minilm) with Devlin et al.'s.")
    parser.add_argument("--task", help="one GLUE task (sst2, stsb, mrpc, qqp, qnli)")
    parser.add_argument("--init", default="auto", help=f"{', '.join(INITS)} or a model folder (auto: hub with a "
                        "network, offline with HF_HUB_OFFLINE=1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the --table runs")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (4 for BERT-tiny, 3 for MiniLM)")
    parser.add_argument("--max-train", type=int, help="fine-tune on a random subset of this size")
    parser.add_argument("--recipe", default="full", help="offline encoder recipe (full or quick)")
    parser.add_argument("--table", help="write the dev-score table (--tasks × --inits × --seeds) to this CSV")
    parser.add_argument("--tasks", nargs="+", help="the runs of --table, or without it runs to cache "
                        "(default with --table: sst2 stsb mrpc)")
    parser.add_argument("--inits", nargs="+", default=["random", "offline"])
    args = parser.parse_args(argv)
    if args.table:
        check_output(args.table)  # a committed table from a dirty tree is refused before any fine-tune
        table = score_table(args.tasks or ["sst2", "stsb", "mrpc"], args.inits, args.seeds, args.recipe)
        atomic_file(Path(args.table), lambda p: table.to_csv(p, index=False))
        print(table.to_string(index=False))
    elif args.task or args.tasks:  # one run, or a grid cached for a later --table (make -j2 results)
        for task, init, seed in ([(args.task, args.init, args.seed)] if args.task else
                                 [(t, i, s) for t in args.tasks for i in args.inits for s in args.seeds]):
            out = finetune(task, init, seed, args.epochs, args.max_train, args.recipe)
            print(out, read_json(out / "result.json")["dev"])
    else:
        parser.error("give --task (one run), --tasks (runs) or --table (the score table)")

