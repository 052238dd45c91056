"""Tiny random models of every supported architecture, built from configs (no weights needed), and data."""

from __future__ import annotations

import torch
import transformers as tf

VOCAB = 60

_ENCODER = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                max_position_embeddings=40)
_DECODER = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=12, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64)

# name: (model class, config class, config kwargs)
ZOO = {
    "bert-classifier": (tf.BertForSequenceClassification, tf.BertConfig, {**_ENCODER, "num_labels": 2}),
    "bert-bare": (tf.BertModel, tf.BertConfig, _ENCODER),  # a sentence-embedding encoder such as MiniLM
    "roberta": (tf.RobertaForSequenceClassification, tf.RobertaConfig, {**_ENCODER, "num_labels": 3,
                                                                        "pad_token_id": 1}),
    "electra": (tf.ElectraForSequenceClassification, tf.ElectraConfig, {**_ENCODER, "embedding_size": 16,
                                                                        "num_labels": 2}),
    "llama": (tf.LlamaForCausalLM, tf.LlamaConfig, _DECODER),
    "mistral": (tf.MistralForCausalLM, tf.MistralConfig, _DECODER),
    "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config, _DECODER),
    "qwen3": (tf.Qwen3ForCausalLM, tf.Qwen3Config, {**_DECODER, "head_dim": 4}),
    "xlm-roberta": (tf.XLMRobertaForSequenceClassification, tf.XLMRobertaConfig,
                    {**_ENCODER, "num_labels": 2, "pad_token_id": 1}),
    "deberta-v2": (tf.DebertaV2ForSequenceClassification, tf.DebertaV2Config, {**_ENCODER, "num_labels": 2}),
    "distilbert": (tf.DistilBertForSequenceClassification, tf.DistilBertConfig,
                   dict(vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=24, max_position_embeddings=40,
                        num_labels=2)),
    "modernbert": (tf.ModernBertForSequenceClassification, tf.ModernBertConfig,
                   {**_ENCODER, "num_labels": 2, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3,
                    "cls_token_id": 2, "sep_token_id": 3, "global_attn_every_n_layers": 2, "local_attention": 8}),
    # GPT-2 keeps n_inner=None, its default: 4 × hidden neurons
    "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config, dict(vocab_size=VOCAB, n_embd=16, n_layer=3, n_head=4, n_positions=64,
                                                      bos_token_id=0, eos_token_id=0)),
    "opt": (tf.OPTForCausalLM, tf.OPTConfig, dict(vocab_size=VOCAB, hidden_size=16, ffn_dim=12, num_hidden_layers=3,
                                                  num_attention_heads=4, max_position_embeddings=64,
                                                  word_embed_proj_dim=16, pad_token_id=1)),
    "gpt-neox": (tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig, {**_DECODER, "num_key_value_heads": 4}),
    "gemma": (tf.GemmaForCausalLM, tf.GemmaConfig, {**_DECODER, "head_dim": 4}),
    "gemma2": (tf.Gemma2ForCausalLM, tf.Gemma2Config, {**_DECODER, "head_dim": 4}),
    "gemma3": (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig, {**_DECODER, "head_dim": 4}),
    "phi3": (tf.Phi3ForCausalLM, tf.Phi3Config, {**_DECODER, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0}),
}
DECODERS = [n for n in ZOO if ZOO[n][0].__name__.endswith("ForCausalLM") or n == "gpt2"]
ENCODERS = [n for n in ZOO if n not in DECODERS]


def build(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    cls, config_cls, kwargs = ZOO[name]
    torch.manual_seed(0)
    return cls(config_cls(**kwargs)).to(dtype).eval()


def batches(name: str, n: int = 4, size: int = 6, length: int = 9, labels: bool = True) -> list[dict]:
    """Random token batches (encoders: with padding in the first row and class labels)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(3, VOCAB, (size, length), generator=g)
        b = {"input_ids": ids}
        if name in ENCODERS:
            mask = torch.ones_like(ids)
            mask[0, 6:] = 0
            b["attention_mask"] = mask
            if labels and ZOO[name][0] is not tf.BertModel:
                b["labels"] = torch.randint(0, ZOO[name][2]["num_labels"], (size,), generator=g)
        out.append(b)
    return out


def outputs(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The model's main output tensor (logits, or the last hidden state of a bare encoder)."""
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def tokenizer(folder) -> tf.PreTrainedTokenizerFast:
    """A word-level tokenizer over the zoo's vocabulary, saved into ``folder`` (for the CLI tests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(VOCAB - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                      cls_token="[CLS]", sep_token="[SEP]")
    fast.save_pretrained(folder)
    return fast


def texts(n: int = 40, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{int(i)}" for i in torch.randint(0, VOCAB - 4, (int(l),), generator=g))
            for l in torch.randint(4, 12, (n,), generator=g)]
