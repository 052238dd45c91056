"""``python -m minilib``: prune end to end from a model folder, and every bad input as one line before any work."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM
from zoo import batches, build, outputs, texts, tokenizer

from minilib import cli
from minilib.api import PruningReport

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A saved tiny BERT (bare, like all-MiniLM-L6-v2) and a tiny Llama, each with a tokenizer, and data."""
    root = tmp_path_factory.mktemp("cli")
    for name in ("bert-bare", "llama"):
        build(name).save_pretrained(root / name)
        tokenizer(root / name)
    (root / "calib.txt").write_text("\n".join(texts(40)) + "\n")
    (root / "pairs.jsonl").write_text("".join(json.dumps({"text": a, "text_pair": b, "label": i % 2}) + "\n"
                                              for i, (a, b) in enumerate(zip(texts(30), texts(30, seed=1)))))
    return root


def _cli(*args, **env):
    """Run the command line in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "minilib", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, timeout=600)


def test_prune_writes_a_model_that_reloads_and_a_report(folders, tmp_path):
    out = tmp_path / "pruned"
    done = _cli("prune", folders / "bert-bare", "--calibration", folders / "calib.txt", "--keep", "0.5",
                "--method", "mi-mds", "--out", out, "--mds-seeds", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "mi-mds: kept 24/48 FFN neurons" in done.stdout
    model = AutoModel.from_pretrained(out)
    assert model.config.intermediate_size == 12
    report = json.loads((out / "pruning.json").read_text())
    assert set(PruningReport.__dataclass_fields__) <= set(report)
    assert report["method"] == "mi-mds" and report["settings"]["alpha"] == 1.01 and report["neurons_after"] == [12, 12]
    assert report["calibration"]["examples"] == 40 and set(report["seconds"]) >= {"load", "select", "surgery", "save"}
    assert (out / "tokenizer.json").is_file()


def test_prune_a_decoder_in_process_matches_the_api(folders, tmp_path):
    cli.main(["prune", str(folders / "llama"), "--calibration", str(folders / "calib.txt"), "--keep", "0.75",
              "--method", "hfprune", "--out", str(tmp_path / "lm"), "--quiet", "--seed", "3"])
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    assert back.config.intermediate_size == 9
    import minilib

    tok = tokenizer(tmp_path / "tok")
    same, _ = minilib.prune(build("llama"), texts(40), 0.75, "hfprune", tokenizer=tok, progress=False, seed=3)
    batch = batches("llama")[0]
    assert torch.equal(outputs(back, batch), outputs(same, batch))


def test_prune_with_flap_writes_a_compensated_non_uniform_model(folders, tmp_path, capsys):
    from minilib.models import surgery

    cli.main(["prune", str(folders / "llama"), "--calibration", str(folders / "calib.txt"), "--keep", "0.5",
              "--method", "flap", "--out", str(tmp_path / "flap"), "--quiet"])
    assert "load_pruned" in capsys.readouterr().out  # per-layer widths: minilib's loader, said so
    report = json.loads((tmp_path / "flap" / "pruning.json").read_text())
    assert report["allocation"] == "global" and report["compensation"]["mode"] == "bias"
    assert report["compensation"]["skip_first"] is False  # a decoder's first position is fitted (the family's)
    back = surgery.load_pruned(tmp_path / "flap", AutoModelForCausalLM)
    assert surgery.ffn_sizes(back) == report["neurons_after"] and sum(report["neurons_after"]) == 18
    assert back.config.mlp_bias  # Llama's own switch carries the compensation bias


def test_supervised_method_reads_labels_from_a_jsonl(folders, tmp_path):
    model = build("bert-classifier")
    model.save_pretrained(tmp_path / "clf")
    tokenizer(tmp_path / "clf")
    cli.main(["prune", str(tmp_path / "clf"), "--calibration", str(folders / "pairs.jsonl"), "--keep", "0.5",
              "--method", "fisher", "--out", str(tmp_path / "out"), "--quiet"])
    report = json.loads((tmp_path / "out" / "pruning.json").read_text())
    assert report["calibration"]["labels"] is True and report["neurons_after"] == [12, 12]


def test_subcommands_share_the_entry_point():
    done = _cli("--help")
    assert done.returncode == 0 and all(c in done.stdout for c in ("prune", "evaluate", "pretrain", "finetune", "sweep", "lm", "critical",
                                                                 "cache"))
    assert _cli("nope").stderr.strip() == "error: unknown command 'nope'; choose from prune, pretrain, finetune, " \
                                          "sweep, lm, critical, reconstruct, evaluate, redundancy, cache"


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("extra, message", [
    (["--keep", "1.5"], "in (0, 1]; got 1.5"),
    (["--keep", "0"], "in (0, 1]; got 0.0"),
    (["--keep", "0.01"], "rounds to 0"),
    (["--method", "nope"], "invalid choice: 'nope'"),
    (["--method", "fisher"], "fisher is supervised and needs labels"),
    (["--alpha", "-1"], "alpha must be > 0"),
    (["--method", "wanda", "--compensation", "merge"], "merge folds removed neurons into their cluster"),
    (["--method", "mi-mds", "--allocation", "global"], "allocation global ranks scores"),
    (["--method", "flap", "--floor", "2"], "--floor is a fraction"),
    (["--compensation", "refit"], "invalid choice: 'refit'"),
    (["--mds-mass", "0.9"], "needs mds='classical'"),
    (["--cluster", "dbscan"], "invalid choice: 'dbscan'"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
])
def test_bad_arguments_fail_in_one_line(folders, tmp_path, capsys, extra, message):
    argv = ["prune", str(folders / "bert-bare"), "--calibration", str(folders / "calib.txt"), "--keep", "0.5",
            "--out", str(tmp_path / "o"), *extra]
    assert message in _error(capsys, argv)
    assert not (tmp_path / "o").exists()


def test_bad_inputs_fail_in_one_line(folders, tmp_path, capsys):
    base = ["--keep", "0.5", "--out", str(tmp_path / "o")]
    moe = tmp_path / "mixtral"
    from transformers import MixtralConfig, MixtralForCausalLM
    MixtralForCausalLM(MixtralConfig(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1)).save_pretrained(moe)
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("sentence\tlabel\nw1 w2\t1\nw3\tw4\t0\n")
    empty, binary, few = tmp_path / "empty.txt", tmp_path / "bin.txt", tmp_path / "few.txt"
    empty.write_text("\n\n")
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    few.write_text("w1 w2\nw3 w4\n")
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((folders / "bert-bare" / "config.json").read_text())
    cases = {
        (str(moe), str(folders / "calib.txt")): "unsupported architecture 'mixtral'",
        (str(folders / "bert-bare"), str(ragged)): "line 3: its fields do not match the header's 2 tab-separated",
        (str(folders / "bert-bare"), str(folders / "pairs.jsonl") + ".gz"): "does not exist",
        (str(folders / "bert-bare"), "hf:only-a-name"): "write hf:NAME[:CONFIG]:SPLIT[:COLUMN]",
        (str(no_weights), str(folders / "calib.txt")): "has no weights",
        (str(tmp_path / "missing"), str(folders / "calib.txt")): "cannot load",
        (str(folders / "bert-bare"), str(empty)): "has no examples",
        (str(folders / "bert-bare"), str(binary)): "cannot read calibration file",
        (str(folders / "bert-bare"), str(tmp_path / "nothing.txt")): "does not exist",
        (str(folders / "bert-bare"), str(few)): "needs at least 16 calibration samples",
    }
    for (model, data), message in cases.items():
        assert message in _error(capsys, ["prune", model, "--calibration", data, *base]), message
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    line = _error(capsys, ["prune", str(folders / "bert-bare"), "--calibration", str(folders / "calib.txt"),
                           "--keep", "0.5", "--out", str(busy)])
    assert "exists and is not empty; pass --overwrite" in line and (busy / "keep.txt").read_text() == "mine"


def test_an_interruption_leaves_no_output_folder(folders, tmp_path, capsys, monkeypatch):
    import minilib.api

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt
    monkeypatch.setattr(minilib.api, "prune", interrupted)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["prune", str(folders / "bert-bare"), "--calibration", str(folders / "calib.txt"), "--keep", "0.5",
                  "--out", str(tmp_path / "o"), "--quiet"])
    assert exit_.value.code == 130 and "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))


def test_an_interrupted_save_leaves_the_old_output_untouched(folders, tmp_path, monkeypatch):
    out = tmp_path / "o"
    cli.main(["prune", str(folders / "bert-bare"), "--calibration", str(folders / "calib.txt"), "--keep", "0.5",
              "--method", "magnitude", "--out", str(out), "--quiet"])
    before = (out / "pruning.json").read_text()

    def broken(self, path):
        raise KeyboardInterrupt
    monkeypatch.setattr(PruningReport, "save", broken)
    with pytest.raises(SystemExit):
        cli.main(["prune", str(folders / "bert-bare"), "--calibration", str(folders / "calib.txt"), "--keep", "0.25",
                  "--method", "magnitude", "--out", str(out), "--quiet", "--overwrite"])
    assert (out / "pruning.json").read_text() == before and not list(tmp_path.glob(".o.*"))


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--levels", "1.5", "--init", "offline"], "levels are kept fractions of each layer's FFN neurons, in (0, 1]"),
    (["sweep", "--methods", "nope", "--init", "offline"], "unknown method(s) ['nope']"),
    (["sweep", "--mds-mass", "1.5", "--mds", "classical", "--init", "offline"], "mds_mass is a share"),
    (["sweep", "--tasks", "cola", "--init", "offline"], "unknown GLUE task 'cola'"),
    (["sweep", "--ablate", "reduction", "--values", "max"], "--values for reduction must be among mean, cls, tokens"),
    (["sweep", "--ablate", "cluster", "--values", "dbscan"], "--values for cluster must be among kmeans, kmedoids"),
    (["redundancy", "--removed", "1.5"], "--removed fractions must be in [0, 1)"),
    (["redundancy", "--methods", "nope"], "unknown method(s) ['nope']"),
    (["redundancy", "--tasks", "cola"], "unknown GLUE task 'cola'"),
    (["lm", "--cluster", "dbscan", "--profile", "quick"], "invalid choice: 'dbscan'"),
    (["sweep", "--fit-fraction", "2", "--init", "minilm"], "--fit-fraction is a fraction of the training set"),
    (["sweep", "--methods", "mi-mds", "--allocation", "global"], "allocation global ranks scores across layers"),
    (["lm", "--tables", "nope", "--profile", "quick"], "unknown tables"),
    (["lm", "--methods", "nope", "--profile", "quick"], "unknown method(s) ['nope']"),
    (["lm", "--methods", "wanda", "--compensation", "merge", "--tables", "mlp"], "merge folds removed neurons"),
    (["lm", "--compensation", "merge", "--methods", "mi-mds"], "applies to the MLP tables"),
    (["lm", "--update", "--tables", "blocks"], "--update rewrites rows of the mlp and zeroshot tables"),
    (["lm", "--update", "--tables", "mlp", "--out", "nowhere"], "no lm-mlp.csv in nowhere yet"),
    (["sweep", "--update", "--out", "nowhere.csv"], "--update: nowhere.csv does not exist"),
    (["sweep", "--update", "--ablate", "alpha", "--values", "2"], "an ablation table is written whole"),
    (["finetune"], "give --task (one run), --tasks (runs) or --table"),
])
def test_subcommand_arguments_are_checked_before_any_expensive_step(capsys, monkeypatch, tmp_path, argv, message):
    import minilib.experiments.finetune as ft
    import minilib.models.lm as lm

    def expensive(*_a, **_k):
        raise AssertionError("an expensive step ran before the arguments were checked")
    monkeypatch.setattr(ft, "finetune", expensive)
    monkeypatch.setattr(lm, "load_lm", expensive)
    monkeypatch.setenv("MINILIB_CACHE", str(tmp_path))  # no offline encoder here: a fine-tune would fail first
    assert message in _error(capsys, argv)


def test_finetune_tasks_without_a_table_runs_the_grid_into_the_cache(capsys, monkeypatch, tmp_path):
    """``make -j2 results`` caches the random-init runs in one lane and writes the table in another."""
    import minilib.experiments.finetune as ft

    runs = []

    def fake(task, init, seed, *_a):
        runs.append((task, init, seed))
        out = tmp_path / f"{task}-{init}-{seed}"
        out.mkdir()
        (out / "result.json").write_text('{"dev": {"f1": 1.0}}')
        return out
    monkeypatch.setattr(ft, "finetune", fake)
    cli.main(["finetune", "--tasks", "mrpc", "stsb", "--inits", "random", "--seeds", "0", "1"])
    assert runs == [("mrpc", "random", 0), ("mrpc", "random", 1), ("stsb", "random", 0), ("stsb", "random", 1)]
    assert capsys.readouterr().out.count("{'f1': 1.0}") == 4


def test_the_installed_console_script_is_the_same_entry_point(tmp_path):
    """``minilib`` as pyproject.toml installs it (not ``python -m``): its command list and one command."""
    script = Path(sys.executable).with_name("minilib")
    if not script.is_file():
        pytest.skip("minilib is not installed as a console script in this environment (pip install -e .)")
    done = subprocess.run([str(script), "cache", "where", "--cache", str(tmp_path / "c")], capture_output=True,
                          text=True, cwd=REPO, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "c"), done.stderr[-500:]
    listed = subprocess.run([str(script)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert listed.returncode == 2 and all(f"  {c}" in listed.stdout for c in ("prune", "sweep", "lm", "cache"))
