"""Figure helpers shared by the chapters: one look, and a provenance line on every figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

__all__ = ["setup", "source", "gram_heatmap"]


def setup() -> None:
    """The book's seaborn theme (call once per notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titlesize": "medium"})


def source(fig: plt.Figure, text: str) -> plt.Figure:
    """Write where a figure's numbers come from (model, data, seed) under it."""
    fig.text(0.01, -0.02, f"Source: {text}", ha="left", va="top", fontsize="x-small", color="0.35", wrap=True)
    return fig


def gram_heatmap(ax: plt.Axes, K: torch.Tensor | np.ndarray, title: str = "") -> plt.Axes:
    """A Gram matrix as a heatmap on a fixed [0, 1] colour scale."""
    sns.heatmap(np.asarray(K), ax=ax, vmin=0.0, vmax=1.0, cmap="viridis", square=True,
                xticklabels=False, yticklabels=False, cbar_kws={"shrink": 0.7})
    ax.set(title=title, xlabel="sample b", ylabel="sample a")
    return ax
