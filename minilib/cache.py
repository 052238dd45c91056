"""Where long computations keep their results, how they name them, and how they write them.

Artefacts (the offline encoder, fine-tuned checkpoints, MI maps, sweep cells) live under one cache
folder: the ``cache`` argument, else ``$MINILIB_CACHE``, else ``.cache/minilib`` in the
repository. Every artefact is written to a temporary sibling and renamed into place,
so an interrupted run never leaves a file that looks complete.

**Provenance.** An artefact's name holds everything it depends on: its settings, the content of
the data files it read (:func:`data_fingerprint`) and the code that computed it
(:func:`code_fingerprint`: the minilib modules involved and every minilib module they import).
Changing any of them gives a new name, so a stale artefact is never read back; ``python -m minilib
cache clear`` removes them all.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent

__all__ = ["cache_dir", "atomic_dir", "atomic_file", "write_table", "write_json", "read_json", "cell", "sha256", "short_hash", "results_dir",
           "code_revision", "code_fingerprint", "code_modules", "data_fingerprint", "require_clean_tree", "check_output", "clear_cache"]


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache root: the argument, ``$MINILIB_CACHE``, or ``<repo>/.cache/minilib``."""
    path = Path(cache or os.environ.get("MINILIB_CACHE") or REPO / ".cache" / "minilib")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` only if the block finishes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the result private to its writer
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_file(target: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``target``.

    A target in the committed ``results/`` folder is written from a clean tree only
    (:func:`require_clean_tree`), so that the commit every row names is the code that made it.
    """
    check_output(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the result private to its writer
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def write_table(target: Path, table: Any, update: Sequence[str] = (), fill: dict | None = None, **to_csv) -> Any:
    """Write a pandas ``table`` to the CSV ``target`` atomically; returns what was written.

    With ``update`` (column names), the rows of an existing ``target`` whose values in those columns
    match a row of ``table`` are replaced and the others kept: re-running some methods rewrites their
    rows only, each row still naming the commit that made it (its ``code`` column). Columns one side
    lacks are left empty on the other, except ``fill``'s: the value the old rows had (a column added
    since). Refused if ``target`` is absent or lacks a column of ``update``.
    """
    import pandas as pd

    if update:
        if not Path(target).is_file():
            raise FileNotFoundError(f"{target}: no table to update; run without --update to write it whole")
        old = pd.read_csv(target)
        old = old.assign(**{c: v for c, v in (fill or {}).items() if c not in old.columns})
        missing = [c for c in update if c not in old.columns or c not in table.columns]
        if missing:
            raise ValueError(f"{target}: cannot update rows by {missing}, a column one of the tables lacks; "
                             "write the table whole instead")
        replaced = old[list(update)].astype(str).apply(tuple, axis=1).isin(
            set(table[list(update)].astype(str).apply(tuple, axis=1)))
        table = pd.concat([old[~replaced.to_numpy()], table], ignore_index=True)
    atomic_file(Path(target), lambda p: table.to_csv(p, index=False, **to_csv))
    return table


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
    """The git commit of the repository (with ``+dirty`` if it has changes), or ``"unknown"``.

    Changes under ``results/`` do not count: those tables are what a run writes, not what it runs,
    so the steps of ``make results`` can follow each other at one clean commit.
    """
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":(exclude){results_dir().name}"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _module_file(name: str) -> Path | None:
    """The source file of module ``name``, or None (not a module: e.g. a function imported by name)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def _minilib_imports(tree: ast.Module, name: str) -> set[str]:
    """The minilib modules a module's syntax tree imports (``from minilib.x import y`` counts x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "minilib"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "minilib":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}")}
    return found - {name}


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


# File handling and command-line parsing: they decide where a value is written, never what it is,
# and every module imports them, so counting them would invalidate every artefact at once.
_INFRASTRUCTURE = frozenset({"minilib.cache", "minilib.console"})


def code_modules(*modules: str) -> set[str]:
    """``modules`` and every minilib module they import, directly or not: what :func:`code_fingerprint` reads."""
    return set(_code_trees(modules))


@functools.lru_cache(maxsize=None)
def code_fingerprint(*modules: str) -> str:
    """12 hex characters that change when the code of ``modules``, or of a minilib module they import, does.

    Each file counts by its syntax tree without docstrings, so comments, docstrings and layout do
    not invalidate an artefact; any change to what the code does does. ``minilib.cache`` and
    ``minilib.console`` are left out (:data:`_INFRASTRUCTURE`).
    """
    seen = _code_trees(modules)
    if not seen:
        raise ValueError(f"{', '.join(modules)}: not an importable Python module; name a module, e.g. 'minilib.experiments.finetune'")
    return short_hash(json.dumps(sorted(seen.items())))


def _code_trees(modules: Sequence[str]) -> dict[str, str]:
    seen: dict[str, str] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or name in _INFRASTRUCTURE or path is None:
            continue
        tree = ast.parse(path.read_text(), str(path))
        todo += sorted(_minilib_imports(tree, name))
        seen[name] = ast.dump(_without_docstrings(tree))
    return seen


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256(path)


def data_fingerprint(*paths: str | os.PathLike) -> str:
    """12 hex characters of the content of data files (a folder: every file under it, by relative path)."""
    parts = []
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"data file {p} does not exist; pass files that the computation reads")
        for f in files:
            st = f.stat()
            parts.append((str(f.relative_to(p)) if p.is_dir() else f.name, _file_digest(str(f), st.st_size, st.st_mtime_ns)))
    return short_hash(json.dumps(parts))


def require_clean_tree(what: str) -> str:
    """The commit, if the repository has no uncommitted change to tracked files; else a ``ValueError``."""
    rev = code_revision()
    if rev.endswith("+dirty") or rev == "unknown":
        raise ValueError(f"{what} are written from a clean commit only, and the tree is {rev}; commit or stash "
                         "the changes first (git status), or write elsewhere")
    return rev


def check_output(path: str | os.PathLike) -> Path:
    """``path``, after refusing a dirty tree if it is in the committed ``results/`` folder.

    Command lines call it on their output path before any work, and :func:`atomic_file` again
    before it writes.
    """
    p = Path(path)
    if p.resolve().is_relative_to(results_dir().resolve()):
        require_clean_tree(f"the committed tables ({results_dir().name}/)")
    return p


def clear_cache(cache: str | os.PathLike | None = None) -> int:
    """Delete every artefact in the cache folder; returns the number of files removed."""
    root = cache_dir(cache)
    count = sum(1 for f in root.rglob("*") if f.is_file() or f.is_symlink())
    for child in root.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    return count
