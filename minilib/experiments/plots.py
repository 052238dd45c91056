"""Figure helpers shared by the chapters: one look, and a provenance line on every figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from minilib.experiments import paper

__all__ = ["setup", "source", "gram_heatmap", "cluster_order", "matrix_heatmap", "embedding_scatter", "seed_stability",
           "kl_versus_score", "flops_curves", "curves_grid", "cost_curves"]


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


def embedding_scatter(X: np.ndarray, labels: np.ndarray, kept: np.ndarray, title: str = "") -> plt.Figure:
    """Points on their first two principal axes, coloured by cluster, the kept ones circled."""
    Z = np.asarray(X, dtype=float) - np.mean(X, 0)
    Z = Z @ np.linalg.svd(Z, full_matrices=False)[2][:2].T
    fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
    ax.scatter(Z[:, 0], Z[:, 1], c=np.asarray(labels) % 20, cmap="tab20", s=14, alpha=0.8, linewidths=0)
    ax.scatter(Z[kept, 0], Z[kept, 1], s=60, facecolors="none", edgecolors="k", linewidths=0.8, label="kept")
    ax.set(title=title, xlabel="MDS principal axis 1", ylabel="MDS principal axis 2")
    ax.legend(loc="best")
    return fig


def seed_stability(candidates: list[list[np.ndarray]], n_neurons: int) -> plt.Figure:
    """How often each neuron is kept over seeds, and the Jaccard overlap of every two seeds' keep-sets.

    ``candidates`` holds one keep-set per layer for every seed; layers are pooled.
    """
    sets = [set(np.concatenate([np.asarray(k) + i * n_neurons for i, k in enumerate(c)]).tolist())
            for c in candidates]
    counts = np.zeros(n_neurons * len(candidates[0]))
    for s in sets:
        counts[list(s)] += 1
    jac = np.array([[len(a & b) / len(a | b) for b in sets] for a in sets])
    k, n = len(sets[0]) / len(candidates[0]), n_neurons
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    sns.histplot(counts / len(sets), bins=min(20, len(sets) + 1), ax=axes[0])
    axes[0].set(title=f"fraction of the {len(sets)} seeds that keep a neuron", xlabel="fraction of seeds",
                ylabel="neurons")
    step = max(1, len(sets) // 10)  # at most ~10 tick labels
    sns.heatmap(jac, ax=axes[1], vmin=0, vmax=1, cmap="viridis", square=True, cbar_kws={"shrink": 0.8},
                xticklabels=step, yticklabels=step)
    axes[1].set(title=f"Jaccard overlap between seeds (random keep-sets: {k / (2 * n - k):.2f})",
                xlabel="seed", ylabel="seed")
    return fig


def redundancy_check(check: "pd.DataFrame", title: str = "") -> plt.Figure:
    """:func:`minilib.methods.diagnostics.removed_redundancy` per layer: each statistic over Random's (1)."""
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    x, w = np.arange(len(check)), 0.38
    ax.bar(x - w / 2, check.best_match_ratio, w, label="best kept match of the removed / Random's")
    ax.bar(x + w / 2, check.mean_mi_ratio / check.random_mean_mi_ratio, w,
           label="mean MI of the removed / Random's")
    ax.axhline(1.0, ls="--", c="0.3", lw=1, label="random removal")
    ax.set(xticks=x, xticklabels=[f"layer {i + 1}" for i in check.layer], ylabel="ratio to Random",
           title=title or "are the removed neurons the redundant ones? (> 1: yes)")
    ax.legend(loc="best", fontsize="small")
    return fig


def kl_versus_score(kls: list[float], scores: list[float], best: int, metric: str, dense: float) -> plt.Figure:
    """Each candidate's KL divergence (Eq. 2) against its dev score; the chosen one and the dense score marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    ax.scatter(kls, scores, s=22, label="candidate (one seed)")
    ax.scatter([kls[best]], [scores[best]], s=90, marker="*", c="C3", label="chosen: smallest KL")
    ax.axhline(dense, ls=":", c="0.4", label="dense model")
    ax.set(xlabel="KL(dense ‖ pruned), nats", ylabel=f"dev {metric} (%)", title="subsidiary condition")
    ax.legend(loc="best")
    return fig


def flops_curves(summary: "pd.DataFrame", dense: dict[str, float], metric: str, ax: plt.Axes,
                 x: str = "ffn_flops", by: str = "method", highlight: str | None = "mi-mds",
                 keys: list[str] | None = None) -> plt.Axes:
    """Dev ``metric`` against relative FLOPs, one line per ``by`` value of one task (mean ± std over trials).

    ``keys`` fixes the order, hence the colour and line style, of the lines across panels.
    """
    d = summary[summary.metric == metric]
    keys = keys or [str(k) for k in d[by].unique()]
    palette = sns.color_palette("colorblind", 10)
    for key, g in d.groupby(d[by].astype(str), sort=False):
        i = keys.index(key)
        g = g.sort_values(x)
        style = ({"lw": 2.4, "c": "k"} if key == highlight else
                 {"lw": 1.2, "c": palette[i % 10], "ls": "-" if i < 10 else "--"})
        ax.errorbar(g[x], g["mean"], yerr=g["std"], marker="o", ms=3, capsize=2, label=key, **style)
    ax.axhline(dense[metric], ls=":", c="0.4", label="dense")
    ax.set(xlabel="FFN-relative FLOPs" if x == "ffn_flops" else "encoder-relative FLOPs", ylabel=f"dev {metric} (%)")
    ax.invert_xaxis()
    return ax


def curves_grid(summary: "pd.DataFrame", dense: "pd.DataFrame", by: str = "method", highlight: str | None = "mi-mds",
                ncols: int = 3, legend_title: str | None = None) -> plt.Figure:
    """:func:`flops_curves` for every (task, metric) of ``summary``, one line per ``by`` value.

    ``summary`` comes from :func:`minilib.experiments.glue_sweep.summarize`; ``dense`` has task, metric,
    value rows (the unpruned model's scores). The legend takes a free panel, or the right margin.
    """
    order = list(paper.BERT_TINY)  # the paper's column order
    tasks = sorted(summary.task.unique(), key=lambda t: order.index(t) if t in order else len(order))
    panels = [(t, m) for t in tasks for m in summary[summary.task == t].metric.unique()]
    keys = [str(k) for k in summary[by].unique()]
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 4.2 * nrows), layout="constrained", squeeze=False)
    for ax, (task, metric) in zip(axes.flat, panels):
        d = dense[dense.task == task].set_index("metric")["value"].to_dict()
        flops_curves(summary[summary.task == task], d, metric, ax, by=by, highlight=highlight, keys=keys)
        ax.set_title(f"{task}: {metric}")
    handles: dict = {}
    for ax in axes.flat[:len(panels)]:  # every line once, even those missing from the first panel
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    spare = list(axes.flat[len(panels):])
    for ax in spare:
        ax.axis("off")
    where = spare[0] if spare else fig
    where.legend(list(handles.values()), list(handles), title=legend_title, ncol=2 if len(handles) > 6 else 1,
                 **({"loc": "center"} if spare else {"loc": "outside right upper"}))
    return fig


def perplexity_curves(ax: plt.Axes, summary: "pd.DataFrame", x: str, dense: float, highlight: str,
                      xlabel: str) -> plt.Axes:
    """Perplexity (log scale) against a pruning level, one line per method, the dense model dotted.

    ``summary`` has method, ``x``, mean and std columns (from :func:`minilib.experiments.lm_sweep.summarize`);
    methods with a spread over trials (random) get error bars.
    """
    for method, g in summary.groupby("method", sort=False):
        g = g.sort_values(x)
        style = dict(color="black", lw=2.2, zorder=5) if method == highlight else dict(lw=1.3)
        ax.errorbar(g[x], g["mean"], yerr=g["std"].fillna(0.0), marker="o", ms=3.5, capsize=2, label=method, **style)
    ax.axhline(dense, ls=":", color="0.3", label="dense")
    ax.set(yscale="log", xlabel=xlabel, ylabel="WikiText-2 test perplexity (log)")
    ax.legend(fontsize="small")
    return ax


def compensation_panels(curves: "pd.DataFrame", dense: float, highlight: str = "flap (global)") -> plt.Figure:
    """Chapter 9: one :func:`perplexity_curves` panel per compensation, on a shared axis (from
    :func:`minilib.experiments.reconstruct.curves`)."""
    names = list(dict.fromkeys(curves.compensation))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), sharey=True, layout="constrained")
    for ax, name in zip(np.atleast_1d(axes), names):
        perplexity_curves(ax, curves[curves.compensation == name], "ratio", dense, highlight,
                          "fraction of MLP neurons removed")
        ax.set_title(f"compensation: {name}")
    return fig


def block_profile(ax: plt.Axes, mi: np.ndarray, ceiling: np.ndarray, influence: np.ndarray) -> plt.Axes:
    """Per block: MI-PRUN's information lost ``I(X_{ℓ+1}; X_{ℓ+1}) − I(X_ℓ; X_{ℓ+1})`` beside ShortGPT's BI."""
    blocks = np.arange(len(mi))
    ax.bar(blocks - 0.2, ceiling[1:] - mi, width=0.4, label="MI-PRUN: ceiling − I(X_ℓ; X_ℓ₊₁) (bits)")
    ax.set(xlabel="block ℓ", ylabel="bits lost by skipping the block")
    twin = ax.twinx()
    twin.bar(blocks + 0.2, influence, width=0.4, color="C1", label="ShortGPT: BI = 1 − cos")
    twin.set(ylabel="Block Influence", yscale="log")
    twin.grid(False)
    ax.legend(*[sum(z, []) for z in zip(ax.get_legend_handles_labels(), twin.get_legend_handles_labels())],
              loc="upper center", fontsize="small")
    return ax


def cost_curves(ax: plt.Axes, rates: list, paths: tuple[str, ...] = ("default", "alpha2", "exact"),
                dims: np.ndarray | None = None) -> plt.Axes:
    """Predicted seconds of one layer's all-pairs MI (one batch) against neurons per layer.

    ``rates`` is a list of :class:`~minilib.estimator.cost.Rates` (widths excluded: they are linear in D);
    the book's models are marked at their D.
    """
    from minilib.estimator import cost

    dims = np.geomspace(256, 32768, 40) if dims is None else np.asarray(dims, dtype=float)
    styles = {"default": "-", "alpha2": ":", "exact": "--"}
    for r, colour in zip(rates, sns.color_palette("colorblind")):
        for path in paths:
            ax.plot(dims, dims * (dims - 1) / 2 / r.pairs_per_s.get(path, np.nan), styles[path], color=colour,
                    label=f"{r.device}: {cost.PATHS[path][0]}")
    names: dict[int, list[str]] = {}
    for w in cost.WORKLOADS:
        names.setdefault(w.neurons, []).append(w.name)
    for d, label in names.items():
        ax.axvline(d, color="0.8", lw=0.8, zorder=0)
        ax.text(d, 1.02, ", ".join(label), rotation=90, transform=ax.get_xaxis_transform(), fontsize="x-small",
                ha="center", va="bottom")
    ax.set(xscale="log", yscale="log", xlabel="neurons per layer D",
           ylabel="seconds of all-pairs MI\nper layer and batch (N = 100)")
    ax.legend(fontsize="x-small")
    return ax


def criterion_spread(ax: plt.Axes, retained: "pd.DataFrame") -> plt.Axes:
    """Chapter 8's scale figure: per model, the band between the worst and the best unsupervised
    criterion's retained quality against the FFN keep fraction (:mod:`minilib.experiments.scale`),
    with each criterion's points."""
    for (model, g), color in zip(retained.groupby("model", sort=False), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        band = g.groupby("keep").retained.agg(["min", "max"])
        ax.fill_between(band.index, band["min"], band["max"], color=color, alpha=0.25, label=model)
        ax.scatter(g.keep, g.retained, color=color, s=10)
    ax.axhline(1.0, ls=":", color="0.3")
    ax.set(xlabel="FFN neurons kept (fraction of each layer)", ylabel="quality kept (pruned / dense)")
    ax.invert_xaxis()
    ax.legend(frameon=False)
    return ax
