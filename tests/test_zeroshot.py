"""Zero-shot tasks: the local files in lm-eval's document schemas, and lm-eval's scores checked by hand."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from minilib.data import zeroshot

pytest.importorskip("lm_eval")


@pytest.mark.parametrize("name, count", [("piqa", 1838), ("arc_easy", 2376), ("arc_challenge", 1172), ("boolq", 3270),
                                         ("hellaswag", 10042), ("winogrande", 1267), ("openbookqa", 500),
                                         ("lambada_openai", 5153)])
def test_every_local_file_is_read_whole(name, count):
    assert len(zeroshot.documents(name)) == count  # the row counts of ../shared/data/zeroshot/SOURCES.md


def test_documents_have_the_builtin_schemas():
    piqa = zeroshot.documents("piqa")[0]
    assert piqa["goal"].startswith("How do I ready a guinea pig cage") and piqa["label"] == 0
    arc = zeroshot.documents("arc_easy")[0]
    assert arc["choices"]["label"] == ["A", "B", "C", "D"] and arc["answerKey"] == "A"
    assert zeroshot.documents("boolq")[0]["label"] == 0  # "false"
    obqa = zeroshot.documents("openbookqa")[0]
    assert obqa["choices"]["text"] == ["make more phone calls", "quit eating lunch out", "buy less with monopoly money",
                                       "have lunch with friends"] and obqa["answerKey"] == "B"
    hs = zeroshot.documents("hellaswag")[0]
    assert (hs["activity_label"], hs["label"], len(hs["endings"])) == ("Roof shingle removal", "3", 4)
    assert hs["endings"][3] == "starts pulling up roofing on a roof."
    wg = zeroshot.documents("winogrande")[0]  # gold 1: "... so Maria" always got the easier cases
    assert wg["answer"] == "2" and wg["option2"].endswith("so Maria") and wg["sentence"] == "_ always got the easier cases."


def test_the_subset_is_fixed_by_its_seed_and_errors_are_clear(tmp_path):
    a, b = zeroshot.subset_indices(100, 10, seed=3), zeroshot.subset_indices(100, 10, seed=3)
    assert (a == b).all() and len(set(a)) == 10 and (np.diff(a) > 0).all()
    assert (zeroshot.subset_indices(5, None) == np.arange(5)).all()
    with pytest.raises(ValueError, match="unknown zero-shot task 'mmlu'"):
        zeroshot.task_config("mmlu")
    with pytest.raises(FileNotFoundError, match="MINILIB_ZEROSHOT_DIR"):
        zeroshot.task_config("piqa", data_dir=tmp_path)


@pytest.fixture
def word_lm():
    """A random 2-block Llama over a word-level vocabulary (no special tokens added), so the
    loglikelihoods below can be computed by hand with the same tokenisation."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = set()
    for name in ("piqa", "arc_easy", "winogrande"):
        for d in zeroshot.documents(name):
            text = " ".join(str(v) for v in d.values())
            words |= set(w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text + " Question Answer :"))
    vocab = {w: i for i, w in enumerate(["[UNK]", "<s>", "</s>", *sorted(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(config).eval(), tok


def _loglik(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context) as lm-eval scores it: the continuation's tokens are those the
    whole string has beyond the context's."""
    ctx = tok(context, add_special_tokens=False).input_ids
    cont = tok(context + continuation, add_special_tokens=False).input_ids[len(ctx):]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[:, :-1]).logits.double(), -1)[0]
    return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))


def test_accuracies_are_the_hand_computed_argmaxes(word_lm, tmp_path):
    model, tok = word_lm
    scores = zeroshot.evaluate(model, tok, ["piqa", "arc_easy", "winogrande"], limit=6, seed=1, batch_size=4,
                               cache=tmp_path).set_index(["task", "metric"])
    expected = {}
    for name in ("piqa", "arc_easy", "winogrande"):
        docs = zeroshot.documents(name)
        hits, norm_hits = [], []
        for i in zeroshot.subset_indices(len(docs), 6, seed=1):
            d = docs[i]
            if name == "piqa":  # "Question: {goal}\nAnswer:" + " " + choice, the built-in piqa.yaml
                ctx = [f"Question: {d['goal']}\nAnswer:"] * 2
                choices, gold = [d["sol1"], d["sol2"]], d["label"]
            elif name == "arc_easy":
                ctx = [f"Question: {d['question']}\nAnswer:"] * len(d["choices"]["text"])
                choices, gold = d["choices"]["text"], d["choices"]["label"].index(d["answerKey"])
            else:  # one continuation after either context
                ctx, gold = [d["option1"], d["option2"]], int(d["answer"]) - 1
                choices = [d["sentence"][2:]] * 2
            ll = np.array([_loglik(model, tok, c, " " + x) for c, x in zip(ctx, choices)])
            hits.append(int(np.argmax(ll)) == gold)
            norm_hits.append(int(np.argmax(ll / np.array([len(x) for x in choices]))) == gold)
        expected[(name, "acc")] = np.mean(hits)
        if name != "winogrande":
            expected[(name, "acc_norm")] = np.mean(norm_hits)
    for key, value in expected.items():
        assert scores.loc[key, "value"] == pytest.approx(value, abs=1e-12), key
        assert scores.loc[key, "examples"] == 6
        assert scores.loc[key, "stderr"] == pytest.approx(np.sqrt(value * (1 - value) / 5), abs=1e-9)
    assert set(scores.index) == set(expected)


def test_the_zero_shot_sweep_scores_the_sweeps_own_pruned_models(word_lm, tmp_path):
    from minilib.experiments import lm_sweep

    model, tok = word_lm
    g = torch.Generator().manual_seed(0)
    n = model.config.vocab_size
    setup = lm_sweep.Setup(model, torch.randint(3, n, (2, 16), generator=g), torch.randint(3, n, (3, 16), generator=g),
                           "word Llama", tmp_path / "run", mi_tokens=30, mi_batch=15, tokenizer=tok)
    kw = dict(tasks=["piqa"], limit=4, mlp_methods=("magnitude", "random"), block_methods=("mi-prun",), progress=False)
    table = lm_sweep.zeroshot_sweep(setup, ratios=(0.5,), n_blocks=(1,), **kw)
    assert set(zip(table.pruning, table.method, table.level)) == {
        ("dense", "dense", 0.0), ("mlp", "magnitude", 0.5), ("mlp", "random", 0.5), ("blocks", "mi-prun", 1.0)}
    assert set(table.metric) == {"acc", "acc_norm"} and (table.examples == 4).all() and table.stderr.notna().all()
    dense = zeroshot.evaluate(model, tok, ["piqa"], limit=4, cache=tmp_path).set_index("metric").value
    got = table[table.pruning == "dense"].set_index("metric").value
    assert got.to_dict() == pytest.approx(dense.to_dict())
    # the block sweep reads the same cached choice, and the perplexity evaluations stay apart
    blocks_t = lm_sweep.block_sweep(setup, [1], methods=("mi-prun",), progress=False)
    chosen = json.loads((tmp_path / "run" / "blocks" / "choices" / "mi-prun" / "1-t0.json").read_text())["choice"]
    assert blocks_t.blocks.iloc[0] == " ".join(map(str, chosen)) and blocks_t.perplexity.iloc[0] > 1
    assert lm_sweep.zeroshot_sweep(setup, ratios=(0.5,), n_blocks=(1,), **kw).equals(table)  # all from the cache
    summary = lm_sweep.zeroshot_summary(table)
    assert len(summary) == 4 and list(summary.columns) == [("piqa", "value"), ("piqa", "stderr"), ("mean", "value"),
                                                           ("mean", "stderr")]
    row = summary.loc[("dense", "dense", 0.0)]
    assert row[("piqa", "value")] == pytest.approx(100 * dense["acc"]) == pytest.approx(row[("mean", "value")])
    with pytest.raises(ValueError, match="no 'f1' rows"):
        lm_sweep.zeroshot_summary(table, "f1")
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        lm_sweep.zeroshot_sweep(lm_sweep.Setup(model, setup.eval_windows, setup.calib_windows, "x", tmp_path), **kw)


def test_minilib_evaluate_gives_the_same_zero_shot_rows(word_lm, tmp_path, capsys):
    from minilib import cli

    model, tok = word_lm
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    text = tmp_path / "text.txt"
    text.write_text(" ".join(d["goal"] for d in zeroshot.documents("piqa")[:40]))
    cli.main(["evaluate", str(tmp_path / "lm"), "--text", str(text), "--windows", "1", "--length", "32",
              "--zeroshot", "piqa", "--limit", "4", "--out", str(tmp_path / "scores.csv")])
    table = pd.read_csv(tmp_path / "scores.csv")
    direct = zeroshot.evaluate(model, tok, ["piqa"], 4, 0).set_index("metric").value.to_dict()
    assert table[table.task == "piqa"].set_index("metric").value.to_dict() == pytest.approx(direct)
    assert table.metric.iloc[0] == "perplexity" and "acc" in capsys.readouterr().out
