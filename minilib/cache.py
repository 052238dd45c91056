"""Where long computations keep their results, and how they write them (atomically).

Artefacts (the offline encoder, fine-tuned checkpoints, MI maps) live under one cache
folder: the ``cache`` argument, else ``$MINILIB_CACHE``, else ``.cache/minilib`` in the
repository. Every artefact is written to a temporary sibling and renamed into place,
so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent

__all__ = ["cache_dir", "atomic_dir", "atomic_file", "write_json", "read_json", "cell", "sha256", "short_hash", "results_dir",
           "code_revision"]


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache root: the argument, ``$MINILIB_CACHE``, or ``<repo>/.cache/minilib``."""
    path = Path(cache or os.environ.get("MINILIB_CACHE") or REPO / ".cache" / "minilib")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` only if the block finishes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_file(target: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def write_json(target: Path, obj: Any) -> Path:
    return atomic_file(target, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def cell(path: Path, compute: Callable[[], Any]) -> Any:
    """The cached JSON result at ``path``, or ``compute()`` written there atomically: every sweep's cells.

    An interrupted sweep resumes where it stopped, since only finished cells exist.
    """
    if Path(path).is_file():
        return read_json(path)
    result = compute()
    write_json(Path(path), result)
    return result


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def short_hash(text: str) -> str:
    """A 12-character name for a path or setting that is too long to be a folder name."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def results_dir() -> Path:
    """The committed result tables of the full profile (``<repo>/results``)."""
    return REPO / "results"


def code_revision() -> str:
    """The git commit of the repository (with ``+dirty`` if it has changes), or ``"unknown"``."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
