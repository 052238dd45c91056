"""Chapter 8's scale question: at matched compression, how far apart are the unsupervised criteria?

The paper's abstract says that the choice of pruning criterion matters in small models but not in
large ones. To compare models scored by different measures, every pruned model is put on one
scale, the **fraction of the dense model's quality it keeps**:

* a GLUE model: its dev score over the dense model's, on each task's headline metric (:func:`headline`:
  accuracy for SST-2 and MRPC, Pearson for STS-B), averaged over tasks;
* a language model: the dense model's WikiText-2 perplexity over the pruned model's
  (:func:`retained_lm`), or, on the same footing as GLUE, its mean zero-shot accuracy over the
  dense model's (:func:`retained_zeroshot`; only at the zero-shot sweep's levels).

At each FFN keep fraction the **spread** is the best unsupervised criterion's retained quality
minus the worst one's (trials averaged first), with and without Random; a criterion is
unsupervised when the registry labels it ``"U"`` (:data:`minilib.methods.METHODS`).

:func:`gap_to_best` asks the other question of the chapter: how far one method is from the best of
the others, at each task and keep fraction; :func:`verdict` the paper's own: does a method beat Random
and the label-free peers (:data:`LABEL_FREE_PEERS`) there?
"""

from __future__ import annotations

import pandas as pd

from minilib.data import glue
from minilib.experiments.lm_sweep import with_compensation
from minilib.methods import METHODS

__all__ = ["headline", "headline_scores", "lm_scores", "retained_glue", "retained_lm", "retained_zeroshot", "criterion_spread",
           "gap_to_best", "LABEL_FREE_PEERS", "verdict", "zeroshot_scores"]

#: The registry's label-free criteria that read no similarity map: the paper's method's peers
#: (Random is the baseline of :func:`verdict`, not a peer).
LABEL_FREE_PEERS = tuple(m for m, spec in METHODS.items() if spec.labels == "U" and spec.similarity is None
                         and m != "random")


def headline(task: str) -> str:
    """The metric chapter 8 judges a GLUE task by: accuracy where the task has it, else its first (STS-B: Pearson).

    GLUE's headline for MRPC is F1, but a model that predicts the majority class (68% of MRPC's
    dev pairs are paraphrases) keeps an F1 of 81, so F1 cannot tell a broken model from a sound one.
    """
    metrics = glue.get_task(task).metrics
    return "accuracy" if "accuracy" in metrics else metrics[0]


def headline_scores(table: pd.DataFrame) -> pd.DataFrame:
    """A GLUE sweep's headline scores (:func:`headline`), trials averaged: task, keep, method, score."""
    t = table[table.metric == table.task.map(headline)]
    out = t.groupby(["task", "ffn_flops", "method"], sort=False).value.mean().reset_index()
    return out.rename(columns={"ffn_flops": "keep", "value": "score"})


def _unsupervised(methods: pd.Series) -> pd.Series:
    return methods.map(lambda m: m in METHODS and METHODS[m].labels == "U")


def retained_glue(table: pd.DataFrame, dense: pd.DataFrame, model: str) -> pd.DataFrame:
    """A GLUE sweep (:func:`minilib.experiments.glue_sweep.sweep`) as retained quality per
    (keep fraction, method), its unsupervised methods only; ``dense`` is the dense model's scores
    (``published_dense``)."""
    base = dense.set_index(["task", "metric"]).value
    missing = {(t, headline(t)) for t in table.task.unique()} - set(base.index)
    if missing:
        raise ValueError(f"the dense scores lack {sorted(missing)}; pass the dense rows of the same fine-tune")
    scores = headline_scores(table)  # trials first
    scores = scores[_unsupervised(scores.method)]
    scores = scores.assign(retained=scores.score / [base[(t, headline(t))] for t in scores.task])
    return scores.groupby(["keep", "method"]).retained.mean().reset_index().assign(model=model)


def _kept(removed: pd.Series) -> pd.Series:
    """The keep fraction of an LM table's fraction removed, rounded so 1 − 0.3 groups as 0.7."""
    return (1 - removed).round(6)


def lm_scores(table: pd.DataFrame) -> pd.DataFrame:
    """An MLP sweep (:func:`minilib.experiments.lm_sweep.mlp_sweep`) in :func:`gap_to_best`'s form:
    keep (the fraction of each block's neurons kept), method (``"mi-mds + merge"`` for a compensated
    model), trial and score (the perplexity)."""
    table = with_compensation(table)
    return pd.DataFrame({"keep": _kept(table.ratio), "method": table.method, "trial": table.trial,
                         "score": table.perplexity})


def zeroshot_scores(table: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """A zero-shot sweep's MLP-pruned models in :func:`gap_to_best`'s form: keep, method (compensated
    models apart) and score, the ``metric`` in percent averaged over the tasks."""
    t = with_compensation(table[(table.metric == metric) & (table.pruning == "mlp")])
    mean = t.groupby(["level", "method"], sort=False).value.mean().reset_index()
    return pd.DataFrame({"keep": _kept(mean.level), "method": mean.method, "score": 100 * mean.value})


def retained_lm(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """An MLP sweep as retained quality (dense over pruned perplexity) per (keep fraction, method),
    its unsupervised methods only."""
    t = with_compensation(table)
    t = t[_unsupervised(t.method)]  # a compensated model ("mi-mds + merge") is not a criterion of its own
    t = lm_scores(t).assign(retained=t.dense_perplexity / t.perplexity)
    return t.groupby(["keep", "method"]).retained.mean().reset_index().assign(model=model)


def retained_zeroshot(table: pd.DataFrame, model: str, metric: str = "acc") -> pd.DataFrame:
    """A zero-shot sweep (:func:`minilib.experiments.lm_sweep.zeroshot_sweep`) as retained quality:
    each MLP-pruned model's ``metric`` averaged over tasks, over the dense model's, per (keep
    fraction, method), its unsupervised methods only."""
    t = with_compensation(table[table.metric == metric])
    dense = t[t.pruning == "dense"]
    if dense.empty:
        raise ValueError(f"the zero-shot table has no dense {metric!r} rows; pass the whole table of one sweep")
    mlp = t[(t.pruning == "mlp") & _unsupervised(t.method)]
    mean = mlp.groupby(["level", "method"]).value.mean().reset_index()
    mean = mean.assign(keep=_kept(mean.level), retained=mean.value / dense.value.mean())
    return mean[["keep", "method", "retained"]].assign(model=model)


def criterion_spread(retained: pd.DataFrame) -> pd.DataFrame:
    """Per (model, keep fraction): how many unsupervised criteria, the best and worst retained
    quality, and the spread between them with Random (``spread``) and without (``spread_no_random``)."""
    def stats(g: pd.DataFrame) -> pd.Series:
        rest = g[g.method != "random"].retained
        return pd.Series({"criteria": len(g), "best": g.retained.max(), "worst": g.retained.min(),
                          "spread": g.retained.max() - g.retained.min(),
                          "spread_no_random": rest.max() - rest.min() if len(rest) else float("nan")})
    return retained.groupby(["model", "keep"], sort=False)[["method", "retained"]].apply(stats).reset_index()


def gap_to_best(scores: pd.DataFrame, method: str, by: tuple[str, ...] = ("task", "keep"),
                exclude: tuple[str, ...] = (), lower_is_better: bool = False) -> pd.DataFrame:
    """Per ``by`` group of ``scores`` (columns ``*by, method, score``; trials are averaged): ``method``'s
    score, the best other method's (leaving out ``exclude``), its name, and the gap (positive: ``method``
    is better; in the score's units, perplexity gaps as ``best - method``)."""
    means = scores.groupby([*by, "method"], sort=False).score.mean().reset_index()
    if method not in set(means.method):
        raise ValueError(f"{method!r} is not in the table; it has {sorted(means.method.unique())}")
    rows = []
    for key, g in means.groupby(list(by), sort=False):
        ours, peers = g[g.method == method], g[(g.method != method) & ~g.method.isin(exclude)]
        if ours.empty or peers.empty:
            continue
        best = peers.loc[peers.score.idxmin() if lower_is_better else peers.score.idxmax()]
        gap = (best.score - ours.score.item()) if lower_is_better else (ours.score.item() - best.score)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), method: ours.score.item(),
                     "best peer": best.method, "peer score": best.score, "gap": gap})
    return pd.DataFrame(rows)


def verdict(scores: pd.DataFrame, method: str, by: tuple[str, ...] = ("task", "keep"),
            lower_is_better: bool = False, peers: tuple[str, ...] = LABEL_FREE_PEERS) -> pd.DataFrame:
    """Per ``by`` group (trials averaged): ``method``'s score, Random's, the best of ``peers`` present
    (its name and score), and whether ``method`` beats Random and that peer (strictly)."""
    means = scores.groupby([*by, "method"], sort=False).score.mean().reset_index()
    if method not in set(means.method):
        raise ValueError(f"{method!r} is not in the table; it has {sorted(means.method.unique())}")
    better = (lambda a, b: a < b) if lower_is_better else (lambda a, b: a > b)
    rows = []
    for key, g in means.groupby(list(by), sort=False):
        score = g.set_index("method").score
        others = g[g.method.isin(peers)]
        if method not in score or "random" not in score or others.empty:
            continue
        best = others.loc[others.score.idxmin() if lower_is_better else others.score.idxmax()]
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), method: score[method],
                     "random": score["random"], "best peer": best.method, "peer score": best.score,
                     "beats random": bool(better(score[method], score["random"])),
                     "beats peers": bool(better(score[method], best.score))})
    return pd.DataFrame(rows)
