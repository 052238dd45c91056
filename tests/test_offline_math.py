"""The offline-formula check that `make book` runs on the built HTML (tools/check_offline_math.py)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_offline_math", ROOT / "tools" / "check_offline_math.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def _page(path: Path, src: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<html><head><script defer="defer" src="{src}"></script></head><body>$x$</body></html>')


def test_a_page_loading_mathjax_from_a_cdn_is_reported(tmp_path):
    _page(tmp_path / "chapters" / "a.html", "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js")
    assert check.problems(tmp_path) == ["chapters/a.html loads MathJax from https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"]
    assert check.main([str(tmp_path)]) == 1


def test_a_local_mathjax_must_be_in_the_build(tmp_path):
    _page(tmp_path / "chapters" / "a.html", "../_static/mathjax/tex-chtml.js")
    assert check.problems(tmp_path) == ["chapters/a.html loads ../_static/mathjax/tex-chtml.js, which is not in the build"]
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("/* MathJax */")
    assert check.problems(tmp_path) == [] and check.main([str(tmp_path)]) == 0


def test_an_empty_build_is_an_error(tmp_path):
    assert check.problems(tmp_path)[0].startswith("no HTML pages under")
