"""Run profiles of the book's notebooks: ``"quick"`` for CI, ``"full"`` for published results."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

PROFILES = ("quick", "full")


def select(profile: str, *, quick: dict[str, Any], full: dict[str, Any]) -> SimpleNamespace:
    """The settings of one profile as attributes, e.g. ``select(p, quick={"n": 50}, full={"n": 400}).n``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {PROFILES} (papermill -p profile quick)")
    if quick.keys() != full.keys():
        raise ValueError(f"quick and full profiles must set the same keys: {sorted(quick)} vs {sorted(full)}")
    return SimpleNamespace(**(quick if profile == "quick" else full))
