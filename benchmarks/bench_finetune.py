"""Fine-tuning throughput on SST-2: minilib's loop against transformers' Trainer, in one run.

Both train the same BERT-tiny (the offline encoder if built, else a random init: the speed
does not depend on the weights) on the same random SST-2 training subset for one epoch with
the paper's batch size (8) and learning rate (5e-4). The Trainer uses its default settings
(AdamW from torch.optim, padding to the longest sequence of each randomly drawn batch). Also
prints the measured 4-epoch SST-2 fine-tune time (from the cached full run, if present) and
the time of one layer's MI map at N = 100 samples (α = 1.01 and α = 2).

    python benchmarks/bench_finetune.py [--examples 4000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from minilib.experiments import finetune
from minilib.data import glue
from minilib.estimator import mimap
from minilib.models.hooks import capture_activations
from minilib.estimator.kernel_width import NeuronKernelWidth
from minilib.models.bert import load_classifier, load_tokenizer, offline_encoder_dir, quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=4000)
    args = parser.parse_args()
    task = glue.get_task("sst2")
    init = "offline" if (offline_encoder_dir("full") / "manifest.json").is_file() else "random"
    tokenizer = load_tokenizer()
    train = glue.encode(finetune.subset(glue.load_split(task, "train"), args.examples, 0), tokenizer)
    n = len(train)
    print(f"SST-2, {n} training examples, batch {task.batch_size}, lr {task.learning_rate}, 1 epoch, "
          f"{torch.get_num_threads()} threads, model: {init} BERT-tiny")

    model = load_classifier(init, task, seed=0)
    batches = glue.Batches(train, task.batch_size, shuffle=True, seed=0)
    opt, sched = finetune.make_optimizer(model, task, len(batches))
    model.train()
    t0 = time.perf_counter()
    finetune.train_epoch(model, batches, opt, sched, seed=0, epoch=0)
    ours = n / (time.perf_counter() - t0)

    model = load_classifier(init, task, seed=0)
    with tempfile.TemporaryDirectory() as tmp, quiet():
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=task.batch_size,
                                  learning_rate=task.learning_rate, num_train_epochs=1, report_to=[],
                                  save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0)
        trainer = Trainer(model=model, args=targs, train_dataset=train.rename_column("label", "labels"),
                          data_collator=DataCollatorWithPadding(tokenizer))
        t0 = time.perf_counter()
        trainer.train()
        theirs = n / (time.perf_counter() - t0)

    full_epochs = 4 * 67349
    print(f"{'':28s}{'examples/s':>12s}{'4 epochs of SST-2 (est.)':>28s}")
    print(f"{'minilib (fused, grouped)':28s}{ours:12.0f}{full_epochs / ours / 60:25.1f} min")
    print(f"{'transformers Trainer':28s}{theirs:12.0f}{full_epochs / theirs / 60:25.1f} min")
    print(f"speed-up: {ours / theirs:.2f}x")
    run = finetune.run_dir(task, init, seed=0, epochs=4)
    if (run / "result.json").is_file():
        res = json.loads((run / "result.json").read_text())
        print(f"measured 4-epoch SST-2 fine-tune ({init}, full data): {res['train_seconds'] / 60:.1f} min "
              f"({res['examples_per_second']:.0f} examples/s), dev accuracy {res['dev']['accuracy']:.1f}")

    sample = glue.encode(glue.load_split(task, "train").select(range(100)), tokenizer)
    acts = capture_activations(model, glue.Batches(sample, 50))[0].double()
    keep = ~mimap.dead_neurons(acts, [slice(0, 100)])
    for alpha in (1.01, 2.0):
        t0 = time.perf_counter()
        widths = NeuronKernelWidth().partial_fit(acts[:, keep])
        widths.mutual_information(acts[:, keep], alpha)
        print(f"one layer's MI map, N = 100, {int(keep.sum())} neurons, alpha = {alpha}: "
              f"{time.perf_counter() - t0:.1f} s (kernel widths + all pairs)")


if __name__ == "__main__":
    main()
