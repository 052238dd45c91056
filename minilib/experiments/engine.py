"""The one sweep engine of the book (chapters 3–7): cells of methods × levels × trials, cached and resumable.

A sweep is a list of :class:`Cell` ``(method, level, trial)``. For each cell the engine asks
``choose(cell)`` for the method's choice (a keep-set per block, or the blocks to remove),
``apply(cell, choice)`` for the pruned model and ``evaluate(model)`` for its metrics. Two caches,
both written atomically (:func:`minilib.cache.cell`), make a sweep resumable and cheap:

* the choice of every cell, ``<folder>/choices/<method>[@<setting>]/<level>-t<trial>.json``;
* the evaluation of every distinct pruned model, ``<folder>/evaluations/<key>.json``: the key is the
  choice (``key`` may add the method, for methods that also change weights), so two methods that make
  the same choice are evaluated once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from minilib.cache import cell as cached_cell
from minilib.cache import code_revision, short_hash

__all__ = ["Cell", "run", "as_json"]


@dataclass(frozen=True)
class Cell:
    """One pruned model of a sweep: a method at a level (neurons kept per block, or blocks removed)."""

    method: str
    level: int
    trial: int = 0
    setting: str = ""  # what else the choice depends on (e.g. an allocation other than the method's own)

    @property
    def name(self) -> str:
        """The folder of its choices: the method, with the setting if any."""
        return f"{self.method}@{self.setting}" if self.setting else self.method


def as_json(choice: Any) -> Any:
    """A choice (arrays of indices, nested) as plain lists of ints, the form it is cached and applied in."""
    if isinstance(choice, (list, tuple)):
        return [as_json(c) for c in choice]
    if isinstance(choice, np.ndarray):
        return choice.astype(int).tolist()
    return int(choice)


def run(cells: Sequence[Cell], choose: Callable[[Cell], Any], apply: Callable[[Cell, Any], nn.Module],
        evaluate: Callable[[nn.Module], dict[str, float]], folder: Path,
        key: Callable[[Cell, Any], str] | None = None, progress: bool = True, desc: str = "sweep") -> list[dict]:
    """Choose, apply and evaluate every cell; one record per cell (``cell``, ``choice``, ``metrics``, seconds, code)."""
    revision = code_revision()
    key = key or (lambda _cell, choice: short_hash(json.dumps(choice)))
    records = []
    bar = tqdm(cells, desc=desc, unit="cell", disable=not progress)
    for c in bar:
        bar.set_postfix(method=c.method, level=c.level)

        def pick(c: Cell = c) -> dict:
            start = time.perf_counter()
            choice = as_json(choose(c))
            return {"choice": choice, "select_seconds": round(time.perf_counter() - start, 3), "code": revision}

        chosen = cached_cell(Path(folder) / "choices" / c.name / f"{c.level}-t{c.trial}.json", pick)

        def score(c: Cell = c, choice: Any = chosen["choice"]) -> dict:
            start = time.perf_counter()
            metrics = evaluate(apply(c, choice))
            return {"metrics": metrics, "eval_seconds": round(time.perf_counter() - start, 3), "code": revision}

        result = cached_cell(Path(folder) / "evaluations" / f"{key(c, chosen['choice'])}.json", score)
        records.append({"cell": c, "choice": chosen["choice"], "metrics": result["metrics"],
                        "select_seconds": chosen["select_seconds"], "eval_seconds": result["eval_seconds"],
                        "code": chosen["code"]})
    return records
