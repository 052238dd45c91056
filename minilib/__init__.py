"""minilib: information-theoretic pruning of transformer FFN neurons (the package behind the book).

``minilib.prune(model, calibration, keep, method="mi-mds")`` is the entry point
(:mod:`minilib.api`); ``python -m minilib prune …`` is the command line (:mod:`minilib.cli`).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["prune", "PruningReport", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the estimator chapters should not pay for loading transformers.
    if name in ("prune", "PruningReport"):
        from minilib import api

        return getattr(api, name)
    raise AttributeError(f"module 'minilib' has no attribute {name!r}")
