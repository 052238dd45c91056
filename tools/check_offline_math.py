"""Check that the built HTML book renders formulas without a network (run by ``make book``).

Every page that loads MathJax must load it from the build itself (``_static/mathjax/…``), and that
file must exist; a page that loads it from a URL shows raw LaTeX to a reader who is offline.

    python tools/check_offline_math.py [book/_build/html]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SCRIPT = re.compile(r"""<script[^>]*\bsrc=["']([^"']*mathjax[^"']*)["']""", re.IGNORECASE)


def problems(html_dir: Path) -> list[str]:
    """One line per page that loads MathJax from a URL or from a file missing from the build."""
    pages = sorted(html_dir.rglob("*.html"))
    if not pages:
        return [f"no HTML pages under {html_dir}; build the book first (make book)"]
    found = []
    for page in pages:
        for src in SCRIPT.findall(page.read_text(encoding="utf-8", errors="replace")):
            if re.match(r"(https?:)?//", src):
                found.append(f"{page.relative_to(html_dir)} loads MathJax from {src}")
            elif not (page.parent / src.split("?")[0]).is_file():
                found.append(f"{page.relative_to(html_dir)} loads {src}, which is not in the build")
    return found


def main(argv: list[str]) -> int:
    html_dir = Path(argv[0] if argv else "book/_build/html")
    bad = problems(html_dir)
    for line in bad:
        print(f"error: {line}", file=sys.stderr)
    if not bad:
        print(f"MathJax is loaded from the build on every page of {html_dir}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
