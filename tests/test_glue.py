"""GLUE loading (local TSV, Hub code path on local parquet, offline errors) and metrics."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from minilib.data import glue

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "glue"


def test_task_lookup_and_paper_hyperparameters():
    assert glue.get_task("SST-2") is glue.get_task("sst2")
    assert [(t.batch_size, t.learning_rate) for t in glue.TASKS.values()] == [
        (8, 5e-4), (8, 5e-4), (8, 3e-4), (16, 3e-4), (16, 3e-4)]  # §4.1, in the paper's order
    with pytest.raises(ValueError, match="unknown GLUE task 'cola'; choose one of sst2, stsb, mrpc, qqp, qnli"):
        glue.get_task("cola")


def test_local_splits_parse_the_glue_quirks():
    sst = glue.load_split("sst2", "train", FIXTURES)
    assert len(sst) == 12 and sst.column_names == ["text_a", "label"]
    assert sst[0] == {"text_a": "hide new secretions from the parental units ", "label": 0}  # trailing space kept
    mrpc = glue.load_split("mrpc", "validation", FIXTURES)  # file starts with a BOM
    assert mrpc.column_names == ["text_a", "text_b", "label"] and len(mrpc) == 8
    assert mrpc[0]["text_b"].startswith('" The foodservice pie business')  # bare quote kept verbatim
    stsb = glue.load_split("stsb", "validation", FIXTURES)
    assert stsb[0]["label"] == 5.0 and isinstance(stsb[0]["label"], float)
    qnli = glue.load_split("qnli", "validation", FIXTURES)
    assert len(qnli) == 4 and qnli[2]["text_b"].startswith('" Luis Walter Alvarez')  # unbalanced quote
    assert set(qnli["label"]) <= {0, 1}  # entailment = 0 as on the Hub


def test_malformed_rows_name_file_and_line(tmp_path):
    bad = tmp_path / "SST-2"
    bad.mkdir()
    (bad / "train.tsv").write_text("sentence\tlabel\ngood row\t1\na row with\ttoo many\t0\n")
    with pytest.raises(ValueError, match=r"train.tsv:3: expected 2 tab-separated fields, got 3"):
        glue.load_split("sst2", "train", tmp_path)
    (bad / "train.tsv").write_text("sentence\tlabel\nfine\tpositive\n")
    with pytest.raises(ValueError, match=r"train.tsv:2: label 'positive' is not an integer class"):
        glue.load_split("sst2", "train", tmp_path)
    (bad / "train.tsv").write_text("text\tscore\nx\t1\n")
    with pytest.raises(ValueError, match="header lacks column"):
        glue.load_split("sst2", "train", tmp_path)


def test_missing_split_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="QNLI train is not available offline.*nyu-mll/glue"):
        glue.load_split("qnli", "train", FIXTURES)
    monkeypatch.setenv("MINILIB_GLUE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="MINILIB_GLUE_DIR=.*does not exist"):
        glue.load_split("sst2")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        glue.load_split("sst2", "test", FIXTURES)


def test_hub_code_path_on_a_local_copy(monkeypatch, tmp_path):
    # The Hub's nyu-mll/glue layout (parquet per config and split, configs declared in README.md),
    # built locally: the real loading and renaming code runs without a network.
    (tmp_path / "mrpc").mkdir()
    pd.DataFrame({"sentence1": ["a b", "c d"], "sentence2": ["a b c", "e"], "label": [1, 0], "idx": [0, 1]}).to_parquet(
        tmp_path / "mrpc" / "train-00000-of-00001.parquet")
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: mrpc\n  data_files:\n  - split: train\n    path: mrpc/train-*.parquet\n---\n")
    monkeypatch.setattr(glue, "HUB_DATASET", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    ds = glue.load_split("mrpc", "train", data_dir=tmp_path / "mrpc")  # no GLUE TSV there: falls through to the "Hub"
    assert ds.column_names == ["text_a", "text_b", "label"]
    assert ds[0] == {"text_a": "a b", "text_b": "a b c", "label": 1}


def test_metrics_against_hand_computed_values():
    labels = np.array([1, 0, 1, 1, 0, 1])
    preds = np.array([1, 0, 0, 1, 1, 1])  # tp = 3, fp = 1, fn = 1
    m = glue.compute_metrics("mrpc", preds, labels)
    assert m == {"f1": pytest.approx(100 * 6 / 8), "accuracy": pytest.approx(100 * 4 / 6)}
    logits = np.array([[0.1, 0.9], [2.0, -1.0]])
    assert glue.compute_metrics("sst2", logits, np.array([1, 1])) == {"accuracy": 50.0}
    scores, gold = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    m = glue.compute_metrics("stsb", scores, gold)
    assert m["pearson"] == pytest.approx(80.0)  # r = 0.8 by hand
    assert m["spearman"] == pytest.approx(80.0)  # ranks equal the values here
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        glue.compute_metrics("sst2", np.array([1, 0, 1]), np.array([1, 0]))


@pytest.fixture(scope="module")
def tokenizer():
    from minilib.models.bert import load_tokenizer

    return load_tokenizer()


def test_encode_truncates_and_keeps_segments(tokenizer):
    enc = glue.encode(glue.load_split("mrpc", "train", FIXTURES), tokenizer, max_length=16)
    assert enc.column_names == ["label", "input_ids", "token_type_ids"]
    assert max(len(x) for x in enc["input_ids"]) == 16  # MRPC pairs are longer than 16 tokens
    ids, types = enc[0]["input_ids"], enc[0]["token_type_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert set(types) == {0, 1} and types[0] == 0 and types[-1] == 1  # sentence 2 is segment 1
    with pytest.raises(ValueError, match="max_length=4 is too short"):
        glue.encode(glue.load_split("mrpc", "train", FIXTURES), tokenizer, max_length=4)


def test_batches_cover_each_row_once_and_pad_only_to_the_batch(tokenizer):
    enc = glue.encode(glue.load_split("sst2", "train", FIXTURES), tokenizer)
    b = glue.Batches(enc, batch_size=5, shuffle=True, seed=3, group=2)
    rows = np.concatenate(b.order())
    assert sorted(rows.tolist()) == list(range(12)) and len(b) == 3
    for batch, idx in zip(b, b.order()):
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == lengths.max()  # no padding beyond the longest row
        assert lengths.tolist() == [len(enc[int(i)]["input_ids"]) for i in idx]
        assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
        assert batch["labels"].tolist() == [enc[int(i)]["label"] for i in idx]
    again = glue.Batches(enc, batch_size=5, shuffle=True, seed=3, group=2)
    assert all((x == y).all() for x, y in zip(b.order(), again.order()))  # seeded
    again.set_epoch(1)
    assert not all(len(x) == len(y) and (x == y).all() for x, y in zip(b.order(), again.order()))  # new epoch


def test_length_grouping_saves_padding(tokenizer):
    enc = glue.encode(glue.load_split("sst2", "train", FIXTURES), tokenizer)
    padded = lambda b: sum(x["input_ids"].numel() for x in b)  # noqa: E731
    grouped = glue.Batches(enc, batch_size=3, shuffle=True, seed=0, group=4)
    ungrouped = glue.Batches(enc, batch_size=3, shuffle=True, seed=0, group=1)
    assert padded(grouped) < padded(ungrouped)
    assert padded(glue.Batches(enc, batch_size=3)) <= padded(grouped)  # eval: fully sorted
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        glue.Batches(enc, batch_size=0)
