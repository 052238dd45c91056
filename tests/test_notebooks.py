"""Every chapter runs headless through papermill on the quick profile, without errors or warnings.

The executed copies land in book/chapters/ (the book build reuses them when nothing changed).
"""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "tools" / "execute_notebooks.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)


def test_there_are_chapters():
    assert [p.name for p in NOTEBOOKS][:2] == ["01_renyi_entropy.ipynb", "02_kernel_width.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebook_is_clean_and_parameterised(notebook):
    nb = json.loads(notebook.read_text())
    ids = [c.get("id") for c in nb["cells"]]
    assert None not in ids and len(set(ids)) == len(ids), "every cell needs its own id (nbformat 4.5)"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "commit notebooks without outputs"
    wide = [line for c in code for line in "".join(c["source"]).split("\n") if len(line) > 100]
    assert not wide, f"code lines past 100 columns scroll sideways in the HTML: {wide[0]!r}"
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1 and 'profile = "quick"' in "".join(params[0]["source"])
    assert "import minilib" in "".join("".join(c["source"]) for c in code).replace("from minilib", "import minilib")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_on_quick_profile(notebook):
    out, _ = runner.execute(notebook, profile="quick")
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    stderr = ["".join(o["text"]) for o in outputs if o.get("name") == "stderr"]
    assert not stderr, f"stderr output (warnings) in {notebook.name}: {stderr[0][:300]}"
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures, "a chapter without figures"


def test_unknown_profile_is_a_clear_error():
    from minilib.experiments import profile

    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        profile.select("fast", quick={"n": 1}, full={"n": 2})
