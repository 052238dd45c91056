"""Execute the book's notebooks headless with papermill, into the book's source tree.

    python tools/execute_notebooks.py [--profile quick|full] [--out book/chapters] [NOTEBOOK ...]

Each source notebook in ``notebooks/`` (committed without outputs) is run with
``-p profile PROFILE`` and written to ``OUT/<name>.ipynb``, atomically: a failed
cell raises, and no executed copy that looks complete is left behind. A copy
whose inputs have not changed (same notebook, same ``minilib`` sources, same
profile) is reused, so the tests and the book build share one execution.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUT = ROOT / "book" / "chapters"


def _stamp(notebook: Path, profile: str) -> str:
    """Hash of everything an execution depends on in this repository."""
    h = hashlib.sha256(f"{profile}\n".encode())
    for f in [notebook, *sorted((ROOT / "minilib").rglob("*.py")), *sorted((ROOT / "results").glob("*"))]:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def execute(notebook: Path, profile: str = "quick", out_dir: Path = DEFAULT_OUT, force: bool = False) -> tuple[Path, float]:
    """Run one notebook; return the executed copy's path and seconds spent (0 if reused)."""
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}; list them with `ls {NOTEBOOKS}`")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / notebook.name
    stamp = _stamp(notebook, profile)
    if not force and target.exists():
        if nbformat.read(target, as_version=4).metadata.get("minilib", {}).get("stamp") == stamp:
            return target, 0.0
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=out_dir)
    os.close(fd)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), tmp, parameters={"profile": profile}, cwd=str(NOTEBOOKS),
            kernel_name="python3", progress_bar=False,
        )
        nb = nbformat.read(tmp, as_version=4)
        nb.metadata["minilib"] = {"stamp": stamp, "profile": profile}
        for cell in nb.cells:  # the book shows the parameters cell once, not papermill's copy too
            if "injected-parameters" in cell.metadata.get("tags", []):
                cell.metadata["tags"].append("remove-cell")
        nbformat.write(nb, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    ap.add_argument("--profile", default=os.environ.get("PROFILE", "quick"), choices=["quick", "full"])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--force", action="store_true", help="re-run even if an up-to-date copy exists")
    args = ap.parse_args(argv)
    for nb in args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb")):
        path, secs = execute(nb, args.profile, args.out, args.force)
        print(f"{nb.name}: {'up to date' if secs == 0 else f'executed in {secs:.0f} s'} ({args.profile}) -> {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
