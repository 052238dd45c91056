"""Install minilib from its wheel, away from the source tree, and prune every supported architecture with it.

    python tools/check_install.py [--work DIR]

1. Builds the wheel and the sdist from this checkout (setuptools' PEP 517 hooks, no network) and checks
   that both hold every module of ``minilib/``.
2. Makes a fresh virtual environment, installs the wheel into it with pip (no index), and lends it this
   environment's third-party packages through a ``.pth`` line (the editable ``minilib`` here is not
   activated by such a line), so the import of ``minilib`` can only find the wheel.
3. From a folder outside the checkout: imports every module of the installed package, then runs the
   installed ``minilib prune`` command (the paper's method, ``mi-mds``) on a tiny random model of every
   architecture in ``tests/zoo.py``, and reloads each result with ``from_pretrained``: it must be smaller.

Exits non-zero with one ``error:`` line naming what failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _modules(names: list[str]) -> set[str]:
    """``minilib/…/x.py`` paths among archive member names (an sdist's start with its folder)."""
    out = set()
    for name in names:
        parts = Path(name).parts
        if "minilib" in parts and name.endswith(".py"):
            out.add("/".join(parts[parts.index("minilib"):]))
    return out


def build(out: Path) -> tuple[Path, Path]:
    """The wheel and sdist of this checkout, built in ``out``."""
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' staging folder: no stale module may ride along
    code = (f"from setuptools import build_meta as b; w = b.build_wheel({str(out)!r}); "
            f"s = b.build_sdist({str(out)!r}); print('built:', w, s)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"building the wheel failed: {done.stderr.strip().splitlines()[-1]}")
    wheel, sdist = (out / name for name in done.stdout.rsplit("built:", 1)[1].split())
    source = {str(p.relative_to(ROOT)) for p in (ROOT / "minilib").rglob("*.py")}
    for archive, names in ((wheel, zipfile.ZipFile(wheel).namelist()), (sdist, tarfile.open(sdist).getnames())):
        missing = source - _modules(names)
        if missing:
            raise RuntimeError(f"{archive.name} lacks {len(missing)} modules, e.g. {sorted(missing)[0]}")
    return wheel, sdist


def make_env(env: Path, wheel: Path) -> Path:
    """A fresh venv with the wheel installed and this environment's packages visible; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


IMPORT_ALL = """
import importlib, pkgutil, sys, minilib
assert not minilib.__file__.startswith(sys.argv[1]), f"imported the checkout: {minilib.__file__}"
names = [m.name for m in pkgutil.walk_packages(minilib.__path__, "minilib.") if m.name != "minilib.__main__"]
for name in names:
    importlib.import_module(name)
print(len(names), minilib.__version__, minilib.__file__)
"""


def check_architectures(python: Path, work: Path) -> list[str]:
    """``minilib prune`` (installed command) on every zoo architecture; one line per model."""
    sys.path.insert(0, str(ROOT / "tests"))
    import transformers
    from transformers.utils import logging

    logging.disable_progress_bar()
    from zoo import DECODERS, ZOO, build, texts, tokenizer

    calibration = work / "calibration.txt"
    calibration.write_text("\n".join(texts(48)) + "\n")
    command = python.parent / "minilib"
    lines = []
    # transformers 5 gives every qwen2 folder its own byte-level BPE tokenizer class, which the zoo's word-level
    # test tokenizer cannot be: Qwen2 is checked through the API in tests/test_families.py, not here
    for name in (n for n in ZOO if n != "qwen2"):
        source, out = work / "models" / name, work / "pruned" / name
        model = build(name)
        model.save_pretrained(source)
        tokenizer(source)
        start = time.perf_counter()
        done = subprocess.run([str(command), "prune", str(source), "--calibration", str(calibration), "--keep", "0.5",
                               "--method", "mi-mds", "--mds-seeds", "2", "--out", str(out), "--quiet"],
                              cwd=work, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode:
            last = (done.stderr.strip() or done.stdout).splitlines()[-1]
            raise RuntimeError(f"minilib prune failed on {name}: {last}")
        auto = transformers.AutoModelForCausalLM if name in DECODERS else (
            transformers.AutoModel if name == "bert-bare" else transformers.AutoModelForSequenceClassification)
        back = auto.from_pretrained(out)
        before, after = (sum(p.numel() for p in m.parameters()) for m in (model, back))
        if type(back) is not type(model) or not after < before:
            raise RuntimeError(f"{name}: the pruned model reloads as {type(back).__name__} with {after:,} parameters "
                               f"(dense: {type(model).__name__}, {before:,})")
        report = json.loads((out / "pruning.json").read_text())
        lines.append(f"{name:<16} {report['family']:<12} {before:>7,} → {after:>7,} parameters "
                     f"({time.perf_counter() - start:.1f} s)")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", help="working folder (default: a temporary one, removed afterwards)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp).resolve()
        if ROOT in (work, *work.parents):
            raise SystemExit("error: --work must lie outside the checkout")
        work.mkdir(parents=True, exist_ok=True)
        wheel, sdist = build(work / "dist")
        print(f"built {wheel.name} and {sdist.name}: every module of minilib/ in both")
        python = make_env(work / "env", wheel)
        done = subprocess.run([str(python), "-c", IMPORT_ALL, str(ROOT)], cwd=work, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"importing the installed package failed: {done.stderr.strip().splitlines()[-1]}")
        count, version, where = done.stdout.split()
        print(f"installed minilib {version} imports all {count} modules from {where}")
        for line in check_architectures(python, work):
            print(line)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
