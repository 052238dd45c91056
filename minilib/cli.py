"""The command line: ``python -m minilib COMMAND …`` (also installed as ``minilib``).

Commands::

    minilib prune MODEL --calibration DATA --keep FRACTION --method NAME --out DIR [options]
    minilib evaluate DIR  perplexity / zero-shot (decoders) or GLUE dev (encoders) (minilib.evaluation)
    minilib pretrain …    the offline BERT-tiny encoder (minilib.models.pretrain)
    minilib finetune …    GLUE fine-tunes with the paper's hyperparameters (minilib.experiments.finetune)
    minilib sweep …       the BERT-tiny pruning sweep and ablations (minilib.experiments.glue_sweep)
    minilib lm …          chapter 7's block and MLP sweeps on a causal LM (minilib.experiments.lm_sweep)
    minilib critical …    single neurons whose removal breaks a fine-tune (minilib.experiments.critical)
    minilib reconstruct … compensation and allocation on a causal LM (minilib.experiments.reconstruct)
    minilib redundancy …  the redundancy check of every method's keep-sets (minilib.experiments.redundancy)
    minilib cache clear   delete every cached artefact (minilib.cache); ``cache where`` prints the folder

Every argument is checked before any expensive step; a bad one prints one ``error: …`` line and
exits with status 2, an interruption exits with 130 and leaves no half-written output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from minilib.console import ArgumentParser, run

__all__ = ["main", "prune_main", "cache_main", "load_model"]

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keep must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"--keep is the fraction of each layer's FFN neurons kept, in (0, 1]; "
                                         f"got {value}")
    return value


def prune_parser() -> argparse.ArgumentParser:
    from minilib.methods import METHODS, Settings
    from minilib.methods.allocation import ALLOCATIONS, DEFAULT_FLOOR
    from minilib.methods.compensation import COMPENSATIONS, FITS
    from minilib.methods.selection import CLUSTERINGS

    d = Settings()
    p = ArgumentParser(prog="minilib prune", description="Prune the FFN neurons of a Hugging Face model.")
    p.add_argument("model", help="a local model folder or a Hub id")
    p.add_argument("--calibration", required=True,
                   help="a .txt file (one example per line), a .jsonl/.csv/.tsv file with a text column, glue:TASK, "
                   "or hf:NAME[:CONFIG]:SPLIT[:COLUMN] (a Hub dataset or a folder from save_to_disk)")
    p.add_argument("--text-column", help="the text column of a table or dataset (default: text)")
    p.add_argument("--pair-column", help="the second text of a pair task (default: text_pair, when present)")
    p.add_argument("--label-column", help="the labels, for supervised methods (default: label, when present)")
    p.add_argument("--keep", required=True, type=_fraction, help="fraction of each layer's FFN neurons kept, (0, 1]")
    p.add_argument("--method", default="mi-mds", choices=list(METHODS), metavar="NAME",
                   help=f"one of {', '.join(METHODS)} (default: mi-mds)")
    p.add_argument("--out", help="output folder: the model, its tokenizer and pruning.json (required unless --estimate)")
    p.add_argument("--estimate", action="store_true",
                   help="print each stage's predicted time and peak memory (minilib.estimate) and stop; loads no weights")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--batch-size", type=int, help="calibration texts per forward pass (default: 32 for an encoder, "
                   "4 for a decoder)")
    p.add_argument("--max-length", type=int, default=128, help="truncate calibration texts to this many tokens")
    p.add_argument("--max-examples", type=int, help="use at most this many calibration examples (the first ones)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="Rényi order (default: the paper's 1.01)")
    p.add_argument("--widths", default=d.widths, choices=["aligned", "scott"])
    p.add_argument("--reduction", choices=["mean", "cls", "tokens"], help="default: mean (encoders), tokens (decoders)")
    p.add_argument("--mi-batch", type=int, default=d.mi_batch, help="samples per MI batch (the paper: 100)")
    p.add_argument("--max-batches", type=int, help="MI batches to average (default: all)")
    p.add_argument("--mds-seeds", type=int, default=d.mds_seeds, help="M, candidates of the KL choice (Eq. 2)")
    p.add_argument("--mds", default=d.mds, choices=["smacof", "classical"],
                   help="MDS solver of --cluster kmeans: metric SMACOF or classical (one eigendecomposition)")
    p.add_argument("--mds-mass", type=float, default=d.mds_mass,
                   help="with --mds classical: keep the fewest MDS axes holding this share of the eigenvalue mass")
    p.add_argument("--cluster", default=d.cluster, choices=list(CLUSTERINGS),
                   help="cluster step: k-medoids (default) or agglomerative on the MI distances, or k-means on "
                   "the --mds coordinates (the paper's literal pipeline)")
    p.add_argument("--mi-tol", type=_tolerance, default=d.mi_tol,
                   help=f"certified error bound (bits) of every MI entry, or 'exact' (default: {d.mi_tol:g})")
    p.add_argument("--compensation", choices=list(COMPENSATIONS), metavar="MODE",
                   help=f"how kept weights take over what is removed: {', '.join(COMPENSATIONS)} "
                   "(default: the method's own; none for the paper's)")
    p.add_argument("--allocation", choices=list(ALLOCATIONS), metavar="BUDGET",
                   help=f"neurons per layer: {', '.join(ALLOCATIONS)} (default: the method's own; uniform)")
    p.add_argument("--floor", type=float, default=DEFAULT_FLOOR,
                   help=f"a non-uniform budget keeps at least floor x keep of each layer (default {DEFAULT_FLOOR})")
    p.add_argument("--fit", choices=list(FITS), default="dense",
                   help="compensation fitted on the dense model's inputs or on the pruned layers' (sequential)")
    p.add_argument("--first-token", choices=["in", "out"],
                   help="each sequence's first token in compensation's fit or out (default: the family's; "
                   "an encoder's [CLS] out, a decoder's first position in)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _tolerance(text: str) -> float | None:
    if text == "exact":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of bits or 'exact'")
    return value


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def _check_out(out: Path, overwrite: bool, model: str) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    if Path(model).exists() and out.resolve() == Path(model).resolve():
        raise ValueError("--out is the input model folder; write the pruned model somewhere else")


def _model_config(source: str):
    """The config of a local folder (which must hold weights) or a Hub id, loaded without the weights."""
    from transformers import AutoConfig

    path = Path(source)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; give a folder written by save_pretrained or a Hub id")
        if not any((path / w).is_file() for w in WEIGHTS):
            raise FileNotFoundError(f"{path} has no weights ({' or '.join(WEIGHTS[::2])}); "
                                    "save the model with save_pretrained")
    try:
        return AutoConfig.from_pretrained(source)
    except OSError as err:
        raise OSError(f"cannot load {source!r}: not a local folder, and the Hub "
                      f"{'is switched off (HF_HUB_OFFLINE=1)' if os.environ.get('HF_HUB_OFFLINE') else 'did not have it'}"
                      f" ({str(err).splitlines()[0][:120]})") from None


def _model_class(config):
    """The ``transformers`` class the config names (``architectures``), else ``AutoModel``."""
    import transformers

    names = getattr(config, "architectures", None) or []
    return (getattr(transformers, names[0], None) if names else None) or transformers.AutoModel


def load_model(source: str, config=None, dtype: str = "float32"):
    """A model of the class its config names (``architectures``), else ``AutoModel``, with its tokenizer
    (a pruned model whose layers differ in width or gained a bias too: :func:`~minilib.models.surgery.load_pruned`)."""
    import torch
    from transformers import AutoTokenizer

    from minilib.models.bert import quiet
    from minilib.models.surgery import load_pruned

    config = config or _model_config(source)
    with quiet():
        model = load_pruned(source, _model_class(config), dtype=getattr(torch, dtype))
        tokenizer = AutoTokenizer.from_pretrained(source)
    return model.eval(), tokenizer


def prune_main(argv: Sequence[str] | None = None) -> None:
    from minilib.api import check_samples, prune
    from minilib.cache import atomic_dir
    from minilib.data.calibration import read_file
    from minilib.models.families import family_of
    from minilib.methods import Settings, check_method, check_plan
    from minilib.methods.compensation import Compensation
    from minilib.methods.scores import keep_fraction

    args = prune_parser().parse_args(argv)
    options = dict(alpha=args.alpha, widths=args.widths, reduction=args.reduction, mi_batch=args.mi_batch,
                   max_batches=args.max_batches, mds_seeds=args.mds_seeds, mds=args.mds,
                   mds_mass=args.mds_mass, cluster=args.cluster, mi_tol=args.mi_tol)
    settings = Settings(**options)  # validates them before anything is loaded
    _, mode, allocation = check_plan(args.method, args.compensation, args.allocation)
    skip_first = None if args.first_token is None else args.first_token == "out"
    compensation = Compensation(mode, fit=args.fit, skip_first=skip_first)
    if not 0.0 <= args.floor <= 1.0:
        raise ValueError(f"--floor is a fraction of the uniform count, in [0, 1]; got {args.floor}")
    for name in ("batch_size", "max_length", "max_examples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if not args.out and not args.estimate:
        raise ValueError("--out is required: the folder the pruned model is written to (or pass --estimate)")
    out = Path(args.out or ".")
    if not args.estimate:
        _check_out(out, args.overwrite, args.model)
    device = _device(args.device)
    data = read_file(args.calibration, seed=args.seed, text=args.text_column, pair=args.pair_column,
                     label=args.label_column)
    if args.max_examples:
        data = data.select(range(min(args.max_examples, len(data))))
    config = _model_config(args.model)
    family = family_of(config)
    keep_fraction(family.width(config), args.keep)
    check_method(args.method, family.causal or "label" in data.column_names)
    check_samples(args.method, family, settings, len(data))
    if args.estimate:
        print(_estimate(args, config, family, data, settings, mode, device))
        return

    start = time.perf_counter()
    model, tokenizer = load_model(args.model, config, args.dtype)
    model.to(device)
    loaded = time.perf_counter() - start
    pruned, report = prune(model, data, args.keep, args.method, tokenizer=tokenizer, seed=args.seed,
                           batch_size=args.batch_size, max_length=args.max_length, progress=not args.quiet,
                           compensation=compensation, allocation=allocation, floor=args.floor, **options)
    report.seconds = {"load": round(loaded, 3), **report.seconds}
    start = time.perf_counter()
    with atomic_dir(out) as tmp:  # the folder appears only when everything is written
        pruned.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        report.seconds["save"] = round(time.perf_counter() - start, 3)
        report.calibration["source"] = args.calibration
        report.save(tmp / "pruning.json")
    print(report.summary())
    plain = not (getattr(pruned.config, "ffn_sizes", None) or getattr(pruned.config, "ffn_down_bias", False))
    reload = (f"{type(pruned).__name__}.from_pretrained({str(out)!r})" if plain else
              f"minilib.models.surgery.load_pruned({str(out)!r}, {type(pruned).__name__})")
    print(f"wrote {out} (reload with {reload})")


def _estimate(args: argparse.Namespace, config, family, data, settings, mode: str, device) -> str:
    """``--estimate``: the stages' predicted time and memory, from the calibration data and the config alone."""
    import torch
    from transformers import AutoTokenizer

    from minilib.data.calibration import as_batches, count_samples
    from minilib.estimate import estimate

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    samples = count_samples(as_batches(data, tokenizer, args.batch_size or family.batch_size, args.max_length))
    with torch.device("meta"):  # the architecture's shapes without its weights
        cls = _model_class(config)
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)  # Auto or concrete
    parameters = sum(p.numel() for p in model.parameters())
    table = estimate(config, args.method, settings, samples["examples"], samples["tokens"], args.keep,
                     parameters=parameters, dtype_bytes=torch.finfo(getattr(torch, args.dtype)).bits // 8,
                     compensation=mode, device=str(device))
    lines = [f"estimate for {args.method} on {args.model} ({parameters:,} parameters, {family.name}), "
             f"{samples['examples']:,} calibration examples, {samples['tokens']:,} tokens, keep {args.keep}:"]
    for r in table.itertuples():
        up_to = f"up to {_duration(r.up_to_seconds)}" if r.up_to_seconds > r.seconds * 1.01 else ""
        lines.append(f"  {r.stage:<17}{_duration(r.seconds):>10} {up_to:>16}  peak {r.peak_gb:7.2f} GB  {r.basis}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _commands() -> dict[str, tuple[str, Callable[[Sequence[str] | None], None]]]:
    def lazy(module: str) -> Callable[[Sequence[str] | None], None]:
        def call(argv: Sequence[str] | None) -> None:
            import importlib

            importlib.import_module(f"minilib.{module}").main(argv)
        return call

    return {"prune": ("prune a model's FFN neurons (the library's entry point)", prune_main),
            "pretrain": ("build the offline BERT-tiny encoder", lazy("models.pretrain")),
            "finetune": ("fine-tune BERT-tiny on GLUE (one run or the score table)", lazy("experiments.finetune")),
            "sweep": ("the BERT-tiny pruning sweep or an ablation (chapters 5-6)", lazy("experiments.glue_sweep")),
            "lm": ("block and MLP pruning sweeps of a causal LM (chapter 7)", lazy("experiments.lm_sweep")),
            "critical": ("single neurons whose removal breaks a fine-tune (chapter 8)", lazy("experiments.critical")),
            "reconstruct": ("compensation and allocation of every method on a causal LM (chapter 9)",
                            lazy("experiments.reconstruct")),
            "evaluate": ("score a saved model as the book's tables do (perplexity, zero-shot, GLUE dev)",
                         lazy("evaluation")),
            "redundancy": ("does each method remove the redundant neurons? (chapter 8)",
                           lazy("experiments.redundancy")),
            "cache": ("where the cache is, or clear it", cache_main)}


def cache_main(argv: Sequence[str] | None = None) -> None:
    """``minilib cache where|clear [--cache DIR]``."""
    from minilib import cache

    p = ArgumentParser(prog="minilib cache", description="The cache of long computations (minilib.cache).")
    p.add_argument("action", choices=["where", "clear"], help="print the cache folder, or delete everything in it")
    p.add_argument("--cache", help="the cache folder (default: $MINILIB_CACHE or .cache/minilib)")
    args = p.parse_args(argv)
    if args.action == "where":
        print(cache.cache_dir(args.cache))
    else:
        print(f"removed {cache.clear_cache(args.cache):,} files from {cache.cache_dir(args.cache)}")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: minilib COMMAND [options]   (minilib COMMAND --help for each)\n\ncommands:")
        for name, (about, _) in commands.items():
            print(f"  {name:<10}{about}")
        if not argv:
            sys.exit(2)
        return
    if argv[0] not in commands:
        print(f"error: unknown command {argv[0]!r}; choose from {', '.join(commands)}", file=sys.stderr)
        sys.exit(2)
    sys.argv[0] = f"minilib {argv[0]}"
    run(commands[argv[0]][1], argv[1:])

