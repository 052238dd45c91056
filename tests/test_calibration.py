"""Calibration sources (``--calibration``): text, JSON lines, CSV, TSV, GLUE and Hugging Face datasets."""

import csv
import json

import pytest
from datasets import Dataset, DatasetDict
from zoo import texts

from minilib.data.calibration import read_file

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "glue"


@pytest.fixture
def pairs():
    a, b = texts(12), texts(12, seed=1)
    return [{"text": x, "text_pair": y, "label": i % 2} for i, (x, y) in enumerate(zip(a, b))]


def test_every_file_form_gives_the_same_dataset(tmp_path, pairs):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        with (tmp_path / f"d{suffix}").open("w", newline="") as f:
            writer = csv.DictWriter(f, ["label", "text", "text_pair"], delimiter=delimiter)
            writer.writeheader()
            writer.writerows(pairs)
    got = [read_file(str(tmp_path / f"d{s}")).to_dict() for s in (".jsonl", ".csv", ".tsv")]
    assert got[0] == got[1] == got[2] == {k: [r[k] for r in pairs] for k in ("text", "text_pair", "label")}
    (tmp_path / "t.txt").write_text("\n".join(r["text"] for r in pairs) + "\n\n")
    assert read_file(str(tmp_path / "t.txt"))["text"] == [r["text"] for r in pairs]


def test_named_columns_read_glue_dev_files_as_they_are():
    mrpc = read_file(str(FIXTURES / "MRPC" / "dev.tsv"), text="#1 String", pair="#2 String", label="Quality")
    assert mrpc.column_names == ["text", "text_pair", "label"] and set(mrpc["label"]) <= {0, 1}
    assert all('"' in t for t in mrpc["text_pair"][:1])  # an unbalanced quote stays text (read unquoted)
    sst2 = read_file(str(FIXTURES / "SST-2" / "dev.tsv"), text="sentence")
    lines = (FIXTURES / "SST-2" / "dev.tsv").read_text().splitlines()
    assert len(sst2) == len(lines) - 1 and sst2["label"] == [int(l.split("\t")[1]) for l in lines[1:]]


@pytest.mark.parametrize("content, name, options, message", [
    ("sentence\tlabel\nw1 w2\t1\n", "d.tsv", {},
     r"has no column 'text' \(it has sentence, label\); name the text column"),
    ("sentence\tlabel\nw1\t1\nw2\tw3\t0\n", "d.tsv", {"text": "sentence"}, "line 3: its fields do not match"),
    ("a\tb\nc\td\n", "d.txt", {}, "has tab-separated fields; name it .tsv"),
    ("text,label\nw1,yes\n", "d.csv", {}, "label column 'label' of .* is not numeric"),
    ("[1, 2]\n", "d.jsonl", {}, "must be a JSON object"),
    ("w1\n", "d.parquet", {}, "unknown extension '.parquet'"),
    ("text\nw1\n", "d.csv", {"pair": "second"}, "has no column 'second'.*--pair-column"),
])
def test_a_file_that_does_not_parse_as_its_extension_says_so(tmp_path, content, name, options, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        read_file(str(tmp_path / name), **options)


def test_hugging_face_datasets_saved_to_disk(tmp_path):
    rows = {"sentence": ["w1 w2", "", " ", "w3 w4 w5"], "other": ["a b", "c", "d", "e f"], "label": [0, 1, 1, 0]}
    DatasetDict({"train": Dataset.from_dict(rows), "validation": Dataset.from_dict(rows)}).save_to_disk(tmp_path / "dd")
    Dataset.from_dict({"text": rows["sentence"]}).save_to_disk(tmp_path / "one")
    got = read_file(f"hf:{tmp_path / 'dd'}:validation:sentence")  # NAME:SPLIT:COLUMN, empty texts skipped
    assert got["text"] == ["w1 w2", "w3 w4 w5"] and got["label"] == [0, 0]
    named = read_file(f"hf:{tmp_path / 'dd'}:train", text="other")
    assert named["text"] == rows["other"]
    assert read_file(f"hf:{tmp_path / 'one'}:train")["text"] == ["w1 w2", "w3 w4 w5"]
    with pytest.raises(ValueError, match="has no split 'test'; it has train, validation"):
        read_file(f"hf:{tmp_path / 'dd'}:test:sentence")
    with pytest.raises(ValueError, match="has no column 'text'"):
        read_file(f"hf:{tmp_path / 'dd'}:train")


def test_a_hub_dataset_offline_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"^cannot load 'hf:no-such/dataset:cfg:train': [^\n]*$"):
        read_file("hf:no-such/dataset:cfg:train")
