"""CPU inference latency of an FFN-pruned BERT encoder against the dense model, beside the FLOPs reduction.

Latency does not depend on *which* neurons are kept, only on how many, so the model is
BERT-tiny's (``--model bert-tiny``, chapter 5) or all-MiniLM-L6-v2's (``--model minilm``,
chapter 8) architecture (``config.json`` of the local folder or the Hub) with random weights,
pruned to the first ``k`` neurons of every layer by :func:`minilib.models.surgery.prune_ffn` (real
removal: smaller matrices, not masks). Each setting is the median of ``--repeats`` forward passes
on random token ids of the task's mean dev length (open decision 9 in the book's introduction), at batch size 1 (one request)
and 32 (throughput), with 1 thread and with all threads; the models take turns in blocks and the
median of the block medians is reported (``spread_ms``: their range). Prints a table and writes it
as CSV:

    python benchmarks/bench_latency.py [--task sst2] [--out results/latency.csv]
    python benchmarks/bench_latency.py --model minilm --out results/minilm-latency.csv

Run it on an otherwise idle machine: other processes inflate the medians.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoConfig, BertForSequenceClassification

from minilib.models import surgery
from minilib.cache import atomic_file, check_output, code_revision
from minilib.models.bert import bert_tiny_dir, minilm_dir

MODELS = {"bert-tiny": ("BERT-tiny", lambda: bert_tiny_dir()), "minilm": ("all-MiniLM-L6-v2", lambda: minilm_dir(True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bert-tiny", choices=sorted(MODELS))
    parser.add_argument("--task", default="sst2", choices=sorted(surgery.MEAN_DEV_LENGTH))
    parser.add_argument("--levels", nargs="+", type=float, default=[1.0, 0.8, 0.6, 0.4, 0.2])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--repeats", type=int, default=400, help="forward passes per model and setting")
    parser.add_argument("--rounds", type=int, default=8, help="blocks the passes are split into, models interleaved")
    parser.add_argument("--out", default="results/latency.csv")
    args = parser.parse_args()
    if args.out:
        check_output(args.out)  # results/ only from a clean tree: refused before the run, not after
    torch.manual_seed(0)
    name, folder = MODELS[args.model]
    config = AutoConfig.from_pretrained(folder())
    dense = BertForSequenceClassification(config).eval()
    length = round(surgery.MEAN_DEV_LENGTH[args.task])
    threads = sorted({1, torch.get_num_threads()})
    models, flops = {}, {}
    for level in args.levels:
        k = max(1, round(level * config.intermediate_size))
        models[k] = dense if k == config.intermediate_size else surgery.prune_ffn(
            copy.deepcopy(dense), [list(range(k))] * config.num_hidden_layers)
        flops[k] = surgery.relative_flops(config, [k] * config.num_hidden_layers, surgery.MEAN_DEV_LENGTH[args.task])
    rows = []
    for batch_size in args.batches:
        ids = torch.randint(1000, config.vocab_size, (batch_size, length))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for n in threads:
            # the models take turns, block by block, so that drift of the machine (clock, caches,
            # other processes) spreads over all of them instead of favouring the ones timed last
            medians: dict[int, list[float]] = {k: [] for k in models}
            for _ in range(args.rounds):
                for k, model in models.items():
                    medians[k].append(surgery.latency(model, batch, repeats=args.repeats // args.rounds,
                                                      warmup=5, threads=n)["median_s"])
            for k, m in medians.items():
                rows.append({"task": args.task, "length": length, "batch": batch_size, "threads": n,
                             "ffn_flops": round(k / config.intermediate_size, 4),
                             "encoder_flops": round(flops[k]["encoder"], 4),
                             "median_ms": round(1e3 * statistics.median(m), 4),
                             "spread_ms": round(1e3 * (max(m) - min(m)), 4),
                             "parameters": surgery.count_parameters(models[k])["total"]})
    table = pd.DataFrame(rows)
    base = table[table.ffn_flops == 1.0].set_index(["batch", "threads"])["median_ms"]
    table["speedup"] = [round(base[(b, n)] / m, 3) for b, n, m in zip(table.batch, table.threads, table.median_ms)]
    table["model"], table["commit"] = name, code_revision()
    print(f"{name} ({config.num_hidden_layers} layers × {config.intermediate_size} FFN neurons), {args.task} mean dev length {length}, "
          f"{args.repeats} CPU forward passes per setting in {args.rounds} interleaved blocks")
    print(table.drop(columns=["task", "length"]).to_string(index=False))
    atomic_file(Path(args.out), lambda p: table.to_csv(p, index=False))
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
