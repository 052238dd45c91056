"""``minilib prune --estimate`` against measured prunings of the book's models, stage by stage.

    python benchmarks/bench_estimate.py [--out results/bench-estimate.csv]

Each run prints the predicted seconds (and "up to", the MI map at the highest-rank layer's rate) beside
the stages a real :func:`minilib.prune` measured (``PruningReport.stages``), and the ratio measured /
predicted. Models: the offline all-MiniLM-L6-v2 copy on ``glue:sst2`` and the offline SmolLM2-135M on 16
WikiText-2 validation windows, with the settings the book uses for them. Run it on an otherwise idle
machine: the figures are wall times.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModel, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import minilib  # noqa: E402
from minilib.cache import code_revision, write_table  # noqa: E402
from minilib.data.calibration import as_batches, count_samples, glue_sample  # noqa: E402
from minilib.estimate import estimate  # noqa: E402
from minilib.methods import Settings  # noqa: E402
from minilib.models import bert, lm  # noqa: E402

RUNS = [  # model, method, options (Settings), compensation
    ("minilm", "wanda", {}, "none"),
    ("minilm", "mi-mds", {"max_batches": 2, "mds_seeds": 4}, "merge"),
    ("smollm2", "hfprune", {}, "none"),
    ("smollm2", "mi-mds", {"max_batches": 1, "mds_seeds": 2}, "none"),
]


def _model(name: str):
    if name == "minilm":
        folder = bert.minilm_dir(required=True)
        model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
        return model, tokenizer, list(glue_sample("sst2")["text"])
    model, tokenizer = lm.load_lm("offline")
    ids = lm.windows(lm.wikitext_ids(tokenizer, "valid"), 256, 16)
    return model, tokenizer, [{"input_ids": ids[i:i + 4]} for i in range(0, 16, 4)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the table here (CSV)")
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, commit {code_revision()}")
    rows = []
    for name, method, options, compensation in RUNS:
        model, tokenizer, data = _model(name)
        settings = Settings(**options)
        batches = as_batches(data, tokenizer, 32 if name == "minilm" else 4)
        samples = count_samples(batches)
        t0 = time.perf_counter()
        predicted = estimate(model.config, method, settings, samples["examples"], samples["tokens"], 0.5,
                             parameters=sum(q.numel() for q in model.parameters()),
                             compensation=compensation).set_index("stage")
        predicted_in = time.perf_counter() - t0
        _, report = minilib.prune(model, batches, 0.5, method, compensation=compensation, progress=False, **options)
        measured = {**report.stages, "total": sum(report.stages.values())}
        for stage in predicted.index:
            got = measured.get(stage, float("nan"))
            rows.append({"model": name, "method": method, "stage": stage, "predicted_s": predicted.seconds[stage],
                         "up_to_s": predicted.up_to_seconds[stage], "measured_s": got,
                         "ratio": got / predicted.seconds[stage] if predicted.seconds[stage] else float("nan"),
                         "estimate_s": predicted_in, "threads": torch.get_num_threads(), "commit": code_revision()})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_columns", 12):
        print(table.drop(columns=["commit", "threads"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.out:
        write_table(Path(args.out), table)


if __name__ == "__main__":
    main()
