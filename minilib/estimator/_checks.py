"""Input validation shared by the information-theory modules.

Every check raises ``ValueError`` with a one-line message that names the problem
and the fix, so bad input fails fast at the boundary instead of as a NaN later.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # numpy array, torch tensor or nested sequence of numbers


def as_float64(x: ArrayLike, name: str, keep_device: bool = False) -> torch.Tensor:
    """``x`` as a float64 tensor (on the CPU unless ``keep_device``), rejecting NaN and infinity."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to(device=t.device if keep_device else "cpu", dtype=torch.float64)
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ValueError(
            f"{name} contains NaN or infinite values (first at index {bad}); "
            "drop or impute those samples before estimating entropies"
        )
    return t


def samples(x: ArrayLike, name: str = "x") -> torch.Tensor:
    """Samples of one variable: shape (N,) for a scalar, (N, d) for a vector; N >= 2."""
    t = as_float64(x, name)
    if t.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (N,) or (N, d), got {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"{name} has {t.shape[0]} sample(s); the entropy estimators need at least 2")
    return t


def sample_matrix(x: ArrayLike, name: str = "X", keep_device: bool = False) -> torch.Tensor:
    """Samples of many scalar variables: shape (N, D), N >= 2 samples as rows."""
    t = as_float64(x, name, keep_device)
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape (N samples, D variables), got {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"{name} has {t.shape[0]} sample(s); the entropy estimators need at least 2")
    return t


def constant_columns(X: torch.Tensor, rtol: float = 1e-12) -> torch.Tensor:
    """Boolean mask of the columns of ``X`` (N, D) whose spread is negligible.

    A column counts as constant when its range is at most ``rtol`` times the
    largest absolute value in it (or exactly zero): its RBF Gram matrix is all
    ones whatever the kernel width, so it has no entropy and no usable width.
    """
    X = X.reshape(X.shape[0], -1) if X.ndim != 2 else X
    spread = X.max(dim=0).values - X.min(dim=0).values
    scale = X.abs().max(dim=0).values
    return spread <= rtol * scale


def not_constant(x: torch.Tensor, name: str) -> None:
    """Reject one variable (shape (N,) or (N, d)) whose samples are all the same."""
    if constant_columns(x.reshape(x.shape[0], -1)).all():
        raise ValueError(
            f"{name} is constant over its {x.shape[0]} samples: its Gram matrix is all ones, "
            "with no entropy and no kernel width; drop it before estimating"
        )


def no_constant_columns(X: torch.Tensor, name: str) -> None:
    """Reject a sample matrix (N, D) with constant columns, naming them."""
    const = constant_columns(X)
    if const.any():
        idx = const.nonzero().flatten().tolist()
        shown = ", ".join(map(str, idx[:10])) + (", …" if len(idx) > 10 else "")
        raise ValueError(
            f"{name} has {len(idx)} constant column(s) ({shown}) over its {X.shape[0]} samples: "
            "they have no entropy and no kernel width; drop them first "
            "(minilib.estimator.entropy.constant_columns(X) gives the mask)"
        )


def positive(value: float, name: str) -> float:
    """A finite, strictly positive scalar."""
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def unit_interval(value: float, name: str) -> float:
    """A number in [0, 1]."""
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def alpha_order(alpha: float) -> float:
    """Rényi order: finite and > 0 (α = 1 is the von Neumann limit)."""
    return positive(alpha, "alpha (the Rényi order)")


def sigmas(sigma: ArrayLike, n: int, name: str = "sigma") -> torch.Tensor:
    """Kernel widths broadcast to shape (n,), each finite and > 0."""
    s = torch.as_tensor(sigma, dtype=torch.float64).flatten()
    if s.numel() == 1:
        s = s.expand(n)
    if s.numel() != n:
        raise ValueError(f"{name} has {s.numel()} values but there are {n} variables; pass one width or one per variable")
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"{name} must be finite and > 0 for every variable, got min {s.min().item():.3g}")
    return s.contiguous()
