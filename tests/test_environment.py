"""The two dependency lists (pyproject.toml for pip, environment.yml for conda) must not drift."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pip) == sorted(deps)
    assert "python=3.11" in env["dependencies"]


def test_torch_is_pinned_to_the_cpu_build_version():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps
    assert any(d.startswith("jupyter-book") and "<2" in d for d in deps)  # 2.x cannot build offline
