"""Provenance of cached artefacts and of the committed tables (minilib.cache)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from minilib import cache
from minilib.cli import main as cli
from minilib.data import glue
from minilib.experiments import finetune

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _fresh_fingerprints():
    cache.code_fingerprint.cache_clear()
    yield
    cache.code_fingerprint.cache_clear()


def _module(tmp_path, monkeypatch, source: str, name: str = "fp_probe") -> str:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    cache.code_fingerprint.cache_clear()
    return cache.code_fingerprint(name)


def test_code_fingerprint_ignores_docstrings_comments_and_layout_but_not_code(tmp_path, monkeypatch):
    base = _module(tmp_path, monkeypatch, 'def f(x):\n    """Doc."""\n    return x + 1\n')
    assert _module(tmp_path, monkeypatch, 'def f(x):  # why\n    """Other doc."""\n\n    return x + 1\n') == base
    assert _module(tmp_path, monkeypatch, 'def f(x):\n    """Doc."""\n    return x + 2\n') != base


def test_code_fingerprint_follows_minilib_imports(tmp_path, monkeypatch):
    """A fine-tune's fingerprint moves when the GLUE module it imports changes, not when plots.py does."""
    before = cache.code_fingerprint("minilib.experiments.finetune")
    plots = cache.code_fingerprint("minilib.experiments.plots")
    edited = tmp_path / "glue.py"
    edited.write_text(Path(glue.__file__).read_text() + "\nEXTRA = 1\n")
    real = cache._module_file
    monkeypatch.setattr(cache, "_module_file", lambda name: edited if name == "minilib.data.glue" else real(name))
    cache.code_fingerprint.cache_clear()
    assert cache.code_fingerprint("minilib.experiments.finetune") != before
    assert cache.code_fingerprint("minilib.experiments.plots") == plots
    edited.write_text(Path(cache.__file__).read_text() + "\nEXTRA = 1\n")  # file handling does not count
    monkeypatch.setattr(cache, "_module_file", lambda name: edited if name == "minilib.cache" else real(name))
    cache.code_fingerprint.cache_clear()
    assert cache.code_fingerprint("minilib.experiments.finetune") == before
    with pytest.raises(ValueError, match="not an importable Python module"):
        cache.code_fingerprint("no_such_module_here")


def test_data_fingerprint_is_the_content(tmp_path):
    f = tmp_path / "a.tsv"
    f.write_text("x\t1\n")
    first = cache.data_fingerprint(f)
    f.write_text("x\t2\n")
    assert cache.data_fingerprint(f) != first
    f.write_text("x\t1\n")  # same content again, new mtime
    assert cache.data_fingerprint(f) == first
    folder = cache.data_fingerprint(tmp_path)
    (tmp_path / "b.tsv").write_text("y\t1\n")
    assert cache.data_fingerprint(tmp_path) != folder  # a folder counts every file under it
    (tmp_path / "b.tsv").rename(tmp_path / "c.tsv")
    assert cache.data_fingerprint(tmp_path) not in (folder, cache.data_fingerprint(f))  # ... by name, too
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cache.data_fingerprint(tmp_path / "missing.tsv")


def test_a_fine_tune_run_is_named_after_its_data_and_code(tmp_path, monkeypatch):
    data = tmp_path / "glue"
    shutil.copytree(FIXTURES / "glue" / "SST-2", data / "SST-2")
    first = finetune.run_dir("sst2", "random", cache=tmp_path / "c", data_dir=data)
    assert first == finetune.run_dir("sst2", "random", cache=tmp_path / "c", data_dir=data)
    with open(data / "SST-2" / "train.tsv", "a") as f:
        f.write("one more sentence\t1\n")
    assert finetune.run_dir("sst2", "random", cache=tmp_path / "c", data_dir=data) != first
    monkeypatch.setattr(finetune, "code_fingerprint", lambda *m: "changedcode0")
    again = finetune.run_dir("sst2", "random", cache=tmp_path / "c", data_dir=data)
    assert again.parent == first.parent and again.name.startswith("seed0-ep4-") and again != first


def test_committed_tables_are_written_from_a_clean_tree_only(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "results_dir", lambda: tmp_path / "results")
    target = tmp_path / "results" / "table.csv"
    monkeypatch.setattr(cache, "code_revision", lambda: "abc1234+dirty")
    with pytest.raises(ValueError, match="clean commit only, and the tree is abc1234\\+dirty"):
        cache.atomic_file(target, lambda p: p.write_text("a,b\n"))
    assert not target.exists()
    cache.atomic_file(tmp_path / "elsewhere.csv", lambda p: p.write_text("a,b\n"))  # outside results/: allowed
    monkeypatch.setattr(cache, "code_revision", lambda: "abc1234")
    cache.atomic_file(target, lambda p: p.write_text("a,b\n"))
    assert target.read_text() == "a,b\n"


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        f = cache.atomic_file(tmp_path / "t.csv", lambda p: p.write_text("a\n"))
        with cache.atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(mask)
    assert f.stat().st_mode & 0o777 == 0o644 and (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_a_table_update_replaces_the_rerun_rows_and_keeps_the_others(tmp_path):
    import pandas as pd
    target = tmp_path / "t.csv"
    old = pd.DataFrame({"task": ["a", "a", "b"], "method": ["x", "y", "x"], "value": [1.0, 2.0, 3.0],
                        "code": ["old"] * 3})
    with pytest.raises(FileNotFoundError, match="no table to update"):
        cache.write_table(target, old, ("task", "method"))
    cache.write_table(target, old)
    new = pd.DataFrame({"task": ["a", "c"], "method": ["x", "x"], "value": [9.0, 7.0], "code": ["new"] * 2,
                        "cluster": ["kmedoids"] * 2})
    out = cache.write_table(target, new, ("task", "method"))
    back = pd.read_csv(target)
    assert back.equals(out.reset_index(drop=True)) and len(back) == 4
    rows = {(r.task, r.method): (r.value, r.code) for r in back.itertuples()}
    assert rows == {("a", "y"): (2.0, "old"), ("b", "x"): (3.0, "old"), ("a", "x"): (9.0, "new"),
                    ("c", "x"): (7.0, "new")}
    assert back.cluster.isna().sum() == 2  # a column the old rows lack stays empty for them
    with pytest.raises(ValueError, match="cannot update rows by \\['compensation'\\]"):
        cache.write_table(target, new.assign(compensation="merge"), ("method", "compensation"))
    filled = cache.write_table(target, new.assign(compensation="none"), ("method", "compensation"),
                               {"compensation": "none"})  # the old rows were uncompensated: x's are replaced
    assert sorted(zip(filled.method, filled.code)) == [("x", "new"), ("x", "new"), ("y", "old")]


def test_a_changed_result_table_leaves_the_tree_clean_and_changed_code_does_not(tmp_path, monkeypatch):
    """The steps of ``make results`` write results/ one after another at the same clean commit."""
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    monkeypatch.setattr(cache, "REPO", tmp_path)
    rev = cache.code_revision()
    assert len(rev) >= 7 and "+" not in rev
    (tmp_path / "results" / "table.csv").write_text("a\n2\n")
    assert cache.code_revision() == rev == cache.require_clean_tree("tables")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert cache.code_revision() == rev + "+dirty"


def test_the_sweep_command_refuses_a_dirty_tree_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(cache, "code_revision", lambda: "abc1234+dirty")
    with pytest.raises(SystemExit) as exit_:
        cli(["sweep", "--tasks", "sst2", "--out", str(cache.results_dir() / "pruning.csv")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the committed tables (results/) are written from a clean commit only") and "Traceback" not in err


def test_cache_clear_removes_every_artefact(tmp_path, capsys):
    (tmp_path / "c" / "mimaps" / "x").mkdir(parents=True)
    (tmp_path / "c" / "mimaps" / "x" / "m.npz").write_bytes(b"0")
    (tmp_path / "c" / "top.json").write_text("{}")
    cli(["cache", "where", "--cache", str(tmp_path / "c")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "c")
    cli(["cache", "clear", "--cache", str(tmp_path / "c")])
    assert capsys.readouterr().out.startswith("removed 2 files")
    assert list((tmp_path / "c").iterdir()) == []
