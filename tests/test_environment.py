"""The dependency lists (pyproject.toml for pip, environment.yml for conda) must not drift."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _conda_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_environment_yml_lists_the_runtime_dependencies_and_extras():
    extras = PROJECT["optional-dependencies"]
    wanted = [d for d in PROJECT["dependencies"] if not d.startswith("torch")] + extras["book"] + extras["test"]
    pip = [p for p in _conda_pip() if not p.startswith("torch")]
    assert sorted(pip) == sorted(d.split("  #")[0] for d in wanted)


def test_torch_is_pinned_in_the_environment_but_not_in_the_package_metadata():
    assert "torch==2.13.0" in _conda_pip()
    assert not any(d.startswith("torch==") for d in PROJECT["dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet torch==2.13.0" in makefile
    assert makefile.index("torch==2.13.0") < makefile.index("-e '.[book,test]'")  # torch first, never a newer one


def test_the_book_and_test_tools_are_extras_not_runtime_dependencies():
    runtime = " ".join(PROJECT["dependencies"])
    for tool in ("jupyter-book", "papermill", "pytest", "matplotlib"):
        assert tool not in runtime
    assert any(d.startswith("jupyter-book") and "<2" in d for d in PROJECT["optional-dependencies"]["book"])
    assert PROJECT["scripts"]["minilib"] == "minilib.cli:main"
