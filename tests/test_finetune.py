"""Fine-tuning: determinism, resuming after an interruption, caching, clear errors (tiny runs on fixtures)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from minilib.experiments import finetune

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "glue"


@pytest.fixture(autouse=True)
def glue_fixtures(monkeypatch):
    monkeypatch.setenv("MINILIB_GLUE_DIR", str(FIXTURES))


def _weights(run):
    return finetune.load_finetuned(run).state_dict()


def test_same_seed_same_model_and_scores(tmp_path):
    a = finetune.finetune("mrpc", "random", seed=0, epochs=2, cache=tmp_path / "a", progress=False)
    b = finetune.finetune("mrpc", "random", seed=0, epochs=2, cache=tmp_path / "b", progress=False)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = (json.loads((r / "result.json").read_text()) for r in (a, b))
    assert ra["dev"] == rb["dev"] and set(ra["dev"]) == {"f1", "accuracy"}
    assert ra["train_examples"] == 12 and ra["dev_examples"] == 8 and ra["batch_size"] == 8
    c = finetune.finetune("mrpc", "random", seed=1, epochs=2, cache=tmp_path / "a", progress=False)
    assert not torch.equal(wa["classifier.weight"], _weights(c)["classifier.weight"])


def test_training_moves_the_weights_and_the_result_is_cached(tmp_path):
    run = finetune.finetune("stsb", "random", seed=0, epochs=1, cache=tmp_path, progress=False)
    res = json.loads((run / "result.json").read_text())
    assert set(res["dev"]) == {"pearson", "spearman"} and res["learning_rate"] == 5e-4
    stamp = (run / "result.json").stat().st_mtime_ns
    assert finetune.finetune("stsb", "random", seed=0, epochs=1, cache=tmp_path, progress=False) == run
    assert (run / "result.json").stat().st_mtime_ns == stamp  # not re-run
    from minilib.models.bert import load_classifier
    before = load_classifier("random", "stsb", seed=0, cache=tmp_path).state_dict()
    after = _weights(run)
    assert not torch.equal(before["bert.encoder.layer.0.intermediate.dense.weight"],
                           after["bert.encoder.layer.0.intermediate.dense.weight"])


def test_interrupted_run_resumes_to_the_same_model(tmp_path, monkeypatch):
    whole = finetune.finetune("sst2", "random", seed=0, epochs=2, cache=tmp_path / "whole", progress=False)
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def crash_in_epoch_two(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # 12 examples / batch 8 = 2 steps per epoch
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        finetune.finetune("sst2", "random", seed=0, epochs=2, cache=tmp_path / "cut", progress=False)
    out = finetune.run_dir("sst2", "random", 0, 2, cache=tmp_path / "cut")
    assert not out.exists() and (out.parent / (out.name + ".partial") / "state.pt").is_file()  # nothing final
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    resumed = finetune.finetune("sst2", "random", seed=0, epochs=2, cache=tmp_path / "cut", progress=False)
    ww, wr = _weights(whole), _weights(resumed)
    assert all(torch.equal(ww[k], wr[k]) for k in ww)
    assert not (out.parent / (out.name + ".partial")).exists()


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        finetune.finetune("sst2", "random", epochs=0, cache=tmp_path)
    with pytest.raises(FileNotFoundError, match="QNLI train is not available offline"):
        finetune.finetune("qnli", "random", cache=tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a finished fine-tuning run"):
        finetune.load_finetuned(tmp_path)


def test_run_cache_follows_the_weights_of_a_folder(tmp_path):
    from transformers import BertConfig, BertModel

    from minilib.models.bert import bert_tiny_dir, quiet
    folder = tmp_path / "encoder"
    with quiet():
        torch.manual_seed(0)
        BertModel(BertConfig.from_pretrained(bert_tiny_dir())).save_pretrained(folder)
        first = finetune.run_dir("sst2", str(folder), cache=tmp_path)
        assert first == finetune.run_dir("sst2", str(folder), cache=tmp_path)
        torch.manual_seed(1)  # rebuilt weights in the same folder: a new run, never a stale cached one
        BertModel(BertConfig.from_pretrained(bert_tiny_dir())).save_pretrained(folder)
    assert finetune.run_dir("sst2", str(folder), cache=tmp_path) != first
    with pytest.raises(FileNotFoundError, match="the offline encoder .* is not built"):
        finetune.run_dir("sst2", "offline", cache=tmp_path)


def test_comparison_combines_the_seeds_of_each_cell():
    rows = [{"task": "sst2", "model": m, "metric": "accuracy", "value": v, "seed": s}
            for m, vals in (("a", (70.0, 74.0, 78.0)), ("b", (80.0, 80.0, 80.0))) for s, v in enumerate(vals)]
    scores = pd.DataFrame(rows)
    mean = finetune.compare_with_paper(scores)
    assert mean.loc["a", "sst2 accuracy"] == 74.0 and mean.loc["b", "sst2 accuracy"] == 80.0
    assert mean.loc["paper: BERT-tiny (Table 2)", "sst2 accuracy"] == 83.2
    assert list(mean.columns) == ["sst2 accuracy"]  # only the metrics that were run
    std = finetune.compare_with_paper(scores, "std")
    assert std.loc["a", "sst2 accuracy"] == pytest.approx(4.0) and std.loc["b", "sst2 accuracy"] == 0.0
    assert "paper: BERT-tiny (Table 2)" not in std.index
    assert finetune.compare_with_paper(scores, "count").loc["a", "sst2 accuracy"] == 3
    with pytest.raises(ValueError, match="unknown stat"):
        finetune.compare_with_paper(scores, "median")


def test_recipes_per_model():
    tiny, mini = finetune.hyperparameters("mrpc", "random"), finetune.hyperparameters("mrpc", "minilm")
    assert (tiny.learning_rate, tiny.batch_size, tiny.epochs, tiny.warmup, tiny.weight_decay) == (3e-4, 8, 4, 0, 0)
    assert (mini.learning_rate, mini.batch_size, mini.epochs, mini.warmup, mini.weight_decay) == (5e-5, 32, 3, 0.1, 0.01)


def test_warm_up_then_linear_decay_and_no_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    hp = finetune.Hyperparameters(1e-3, 8, 1, warmup=0.1, weight_decay=0.01)
    opt, sched = finetune.make_optimizer(model, hp, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(5e-4) and opt.param_groups[0]["lr"] == 0  # 0 after the last step
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.01 and [p.ndim for p in decayed["params"]] == [2]
    assert plain["weight_decay"] == 0 and len(plain["params"]) == 3  # the bias and LayerNorm's weight and bias
    # without warm-up the paper's schedule: 1 − s/total from the first step
    opt, sched = finetune.make_optimizer(model, finetune.Hyperparameters(1e-3, 8, 1), total_steps=4)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def test_minilm_fine_tunes_with_its_recipe(tmp_path):
    run = finetune.finetune("mrpc", "minilm", seed=0, epochs=1, cache=tmp_path, progress=False)
    res = json.loads((run / "result.json").read_text())
    assert (res["model"], res["batch_size"], res["learning_rate"], res["warmup"]) == (
        "all-MiniLM-L6-v2 (offline copy)", 32, 5e-5, 0.1)
    assert "Devlin" in res["source"] and run.parent.parent.name.startswith("minilm-")
    assert finetune.load_finetuned(run).config.intermediate_size == 1536
