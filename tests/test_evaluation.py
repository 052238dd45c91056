"""``minilib evaluate``: the book's own numbers for a saved model, through the same functions."""

import json

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM
from zoo import build, texts, tokenizer

import minilib
from minilib import cli
from minilib.data import glue
from minilib.experiments.finetune import evaluate as glue_score
from minilib.models import lm, surgery

GLUE_FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "glue"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    for name in ("llama", "bert-classifier", "bert-bare"):
        build(name).save_pretrained(root / name)
        tokenizer(root / name)
    (root / "text.txt").write_text(" ".join(texts(60)))
    return root


def _table(capsys, argv) -> str:
    cli.main(argv)
    return capsys.readouterr().out


def test_a_decoders_perplexity_is_the_books(saved, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    _table(capsys, ["evaluate", str(saved / "llama"), "--text", str(saved / "text.txt"), "--windows", "3",
                    "--length", "20", "--out", str(out)])
    row = pd.read_csv(out).iloc[0]
    model = AutoModelForCausalLM.from_pretrained(saved / "llama").eval()
    tok = tokenizer(tmp_path / "tok")
    ids = torch.tensor(tok((saved / "text.txt").read_text(), add_special_tokens=False)["input_ids"])
    assert (row.task, row.metric, row.examples) == ("text.txt", "perplexity", 60)
    assert row.value == pytest.approx(lm.perplexity(model, lm.windows(ids, 20, 3)), rel=1e-9)


def test_a_non_uniform_pruned_model_loads_and_scores_as_in_memory(saved, tmp_path, capsys):
    model = AutoModelForCausalLM.from_pretrained(saved / "llama").eval()
    tok = tokenizer(tmp_path / "tok")
    batches = [{"input_ids": torch.tensor(tok(t)["input_ids"])[None]} for t in texts(8)]
    pruned, report = minilib.prune(model, batches, 0.5, "flap", progress=False)  # global budget, bias
    assert len(set(report.neurons_after)) > 1 and pruned.config.ffn_sizes == report.neurons_after
    pruned.save_pretrained(tmp_path / "flap")
    tok.save_pretrained(tmp_path / "flap")
    out = tmp_path / "s.csv"
    _table(capsys, ["evaluate", str(tmp_path / "flap"), "--text", str(saved / "text.txt"), "--windows", "2",
                    "--length", "25", "--out", str(out)])
    ids = torch.tensor(tok((saved / "text.txt").read_text(), add_special_tokens=False)["input_ids"])
    assert pd.read_csv(out).value[0] == pytest.approx(lm.perplexity(pruned, lm.windows(ids, 25, 2)), rel=1e-9)


def test_an_encoder_gets_the_glue_dev_score_of_its_calibration_task(saved, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINILIB_GLUE_DIR", str(GLUE_FIXTURES))
    folder = saved / "bert-classifier"
    (folder / "pruning.json").write_text(json.dumps({"calibration": {"source": "glue:sst2"}}))
    out = tmp_path / "glue.csv"
    _table(capsys, ["evaluate", str(folder), "--out", str(out)])
    table = pd.read_csv(out)
    model = surgery.load_pruned(folder, type(build("bert-classifier")))
    dev = glue.load_split("sst2", "validation")
    expected = glue_score(model, "sst2", glue.encode(dev, tokenizer(tmp_path / "tok")))
    assert list(table.task.unique()) == ["sst2 dev"] and (table.examples == len(dev)).all()
    assert dict(zip(table.metric, table.value)) == pytest.approx(expected)


@pytest.mark.parametrize("model, extra, message", [
    ("bert-bare", [], "bare encoder without a task head"),
    ("llama", ["--glue", "sst2"], "this model is a decoder"),
    ("bert-classifier", ["--glue", "nope"], "unknown"),
    ("llama", ["--out", "x.txt"], "give a .csv file"),
    ("llama", ["--windows", "0"], "--windows must be a positive integer"),
    ("llama", ["--text", "missing.txt"], "does not exist"),
])
def test_bad_requests_fail_in_one_line(saved, capsys, model, extra, message):
    with pytest.raises(SystemExit) as done:
        cli.main(["evaluate", str(saved / model), *extra])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and message in err and len(err.splitlines()) == 1 and err.startswith("error:")
