"""Fine-tuning throughput on SST-2: minilib's loop against transformers' Trainer, in one run.

Both train the same model (``--init``: BERT-tiny's offline encoder if built, else a random init,
the speed does not depend on the weights; or all-MiniLM-L6-v2, ``minilm``) on the same random
SST-2 training subset for one epoch with the model's recipe (:func:`minilib.experiments.finetune.hyperparameters`:
BERT-tiny batch 8 and lr 5e-4, MiniLM batch 32 and lr 5e-5). The Trainer uses its default settings
(AdamW from torch.optim, padding to the longest sequence of each randomly drawn batch). Also
prints the measured SST-2 fine-tune time (from the cached full run, if present) and
the time of one layer's MI map at N = 100 samples (α = 1.01 and α = 2).

    python benchmarks/bench_finetune.py [--examples 4000] [--init minilm]
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
from minilib.models.bert import describe, load_classifier, load_tokenizer, offline_encoder_dir, quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--init", help="offline (default when built), random or minilm")
    args = parser.parse_args()
    task = glue.get_task("sst2")
    init = args.init or ("offline" if (offline_encoder_dir("full") / "manifest.json").is_file() else "random")
    hp = finetune.hyperparameters(task, init)
    tokenizer = load_tokenizer(init)
    train = glue.encode(finetune.subset(glue.load_split(task, "train"), args.examples, 0), tokenizer)
    n = len(train)
    print(f"SST-2, {n} training examples, batch {hp.batch_size}, lr {hp.learning_rate}, 1 epoch, "
          f"{torch.get_num_threads()} threads, model: {describe(init)}")

    model = load_classifier(init, task, seed=0)
    batches = glue.Batches(train, hp.batch_size, shuffle=True, seed=0)
    opt, sched = finetune.make_optimizer(model, hp, len(batches))
    model.train()
    t0 = time.perf_counter()
    finetune.train_epoch(model, batches, opt, sched, seed=0, epoch=0)
    ours = n / (time.perf_counter() - t0)

    model = load_classifier(init, task, seed=0)
    with tempfile.TemporaryDirectory() as tmp, quiet():
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=hp.batch_size,
                                  learning_rate=hp.learning_rate, num_train_epochs=1, report_to=[],
                                  warmup_ratio=hp.warmup, weight_decay=hp.weight_decay,
                                  save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0)
        trainer = Trainer(model=model, args=targs, train_dataset=train.rename_column("label", "labels"),
                          data_collator=DataCollatorWithPadding(tokenizer))
        t0 = time.perf_counter()
        trainer.train()
        theirs = n / (time.perf_counter() - t0)

    full_epochs = hp.epochs * 67349
    print(f"{'':28s}{'examples/s':>12s}{f'{hp.epochs} epochs of SST-2 (est.)':>28s}")
    print(f"{'minilib (fused, grouped)':28s}{ours:12.0f}{full_epochs / ours / 60:25.1f} min")
    print(f"{'transformers Trainer':28s}{theirs:12.0f}{full_epochs / theirs / 60:25.1f} min")
    print(f"speed-up: {ours / theirs:.2f}x")
    run = finetune.run_dir(task, init, seed=0)
    if (run / "result.json").is_file():
        res = json.loads((run / "result.json").read_text())
        print(f"measured {res['epochs']}-epoch SST-2 fine-tune ({init}, full data): {res['train_seconds'] / 60:.1f} min "
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
