"""Figure helpers shared by the chapters: one look, and a provenance line on every figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

__all__ = ["setup", "source", "gram_heatmap", "cluster_order", "matrix_heatmap"]


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


def cluster_order(similarity: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering on ``max(similarity) − similarity`` (for heatmaps)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    s = np.asarray(similarity, dtype=float)
    d = s.max() - s
    np.fill_diagonal(d, 0.0)
    return leaves_list(linkage(squareform((d + d.T) / 2, checks=False), method="average"))


def matrix_heatmap(ax: plt.Axes, M: np.ndarray, order: np.ndarray, title: str = "", label: str = "",
                   vmin: float | None = None, vmax: float | None = None, cmap: str = "rocket_r") -> plt.Axes:
    """A neuron × neuron matrix, rows and columns in ``order`` (e.g. :func:`cluster_order`)."""
    sns.heatmap(np.asarray(M)[np.ix_(order, order)], ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, square=True,
                xticklabels=False, yticklabels=False, cbar_kws={"shrink": 0.7, "label": label}, rasterized=True)
    ax.set(title=title, xlabel="neuron (clustered order)", ylabel="neuron (clustered order)")
    return ax
