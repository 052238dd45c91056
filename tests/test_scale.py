"""The scale question's measures: retained quality and the spread of the unsupervised criteria."""

import pandas as pd
import pytest

from minilib.experiments import scale


def test_the_headline_is_accuracy_where_a_task_has_it():
    assert [scale.headline(t) for t in ("mrpc", "sst2", "stsb")] == ["accuracy", "accuracy", "pearson"]


def test_glue_retained_quality_uses_headline_metrics_and_unsupervised_methods_only():
    rows = []
    for method, (sst2, mrpc) in {"random": (40.0, 60.0), "mi-mds": (80.0, 75.0), "taylor": (90.0, 90.0)}.items():
        for trial in (0, 1):
            rows += [{"task": "sst2", "method": method, "ffn_flops": 0.5, "trial": trial, "metric": "accuracy",
                      "value": sst2 + (2 * trial - 1)},  # trials 1 apart either side: their mean is the value
                     {"task": "mrpc", "method": method, "ffn_flops": 0.5, "trial": trial, "metric": "accuracy",
                      "value": mrpc},
                     {"task": "mrpc", "method": method, "ffn_flops": 0.5, "trial": trial, "metric": "f1",
                      "value": 1.0}]  # not MRPC's headline metric here (scale.headline): ignored
    dense = pd.DataFrame({"task": ["sst2", "mrpc", "mrpc"], "metric": ["accuracy", "accuracy", "f1"],
                          "value": [80.0, 75.0, 70.0]})
    r = scale.retained_glue(pd.DataFrame(rows), dense, "tiny").set_index("method").retained
    assert set(r.index) == {"random", "mi-mds"}  # Taylor is supervised
    assert r["mi-mds"] == pytest.approx(1.0) and r["random"] == pytest.approx((0.5 + 0.8) / 2)
    with pytest.raises(ValueError, match="the dense scores lack"):
        scale.retained_glue(pd.DataFrame(rows), dense[dense.task == "sst2"], "tiny")


def test_lm_retained_quality_and_the_spread_with_and_without_random():
    lm = pd.DataFrame({"method": ["hfprune", "wanda", "random", "random", "taylor-ce"], "ratio": [0.2] * 5,
                       "trial": [0, 0, 0, 1, 0], "perplexity": [20.0, 25.0, 40.0, 200 / 3, 10.0],
                       "dense_perplexity": [10.0] * 5})
    r = scale.retained_lm(lm, "lm")
    assert set(r.method) == {"hfprune", "wanda", "random"} and (r.keep == 0.8).all()
    s = scale.criterion_spread(r).iloc[0]
    assert (s.model, s.keep, s.criteria) == ("lm", 0.8, 3)
    assert s.best == pytest.approx(0.5) and s.worst == pytest.approx((0.25 + 0.15) / 2)
    assert s.spread == pytest.approx(0.3) and s.spread_no_random == pytest.approx(0.1)


def test_zero_shot_retained_quality_is_the_task_mean_over_the_dense_mean():
    rows = [{"pruning": "dense", "method": "dense", "level": 0.0, "task": t, "metric": "acc", "value": v}
            for t, v in (("piqa", 0.6), ("arc_easy", 0.4))]
    for method, (piqa, arc) in {"wanda": (0.6, 0.3), "taylor-ce": (0.6, 0.4), "random": (0.5, 0.25)}.items():
        rows += [{"pruning": "mlp", "method": method, "level": 0.2, "task": "piqa", "metric": "acc", "value": piqa},
                 {"pruning": "mlp", "method": method, "level": 0.2, "task": "arc_easy", "metric": "acc", "value": arc},
                 {"pruning": "mlp", "method": method, "level": 0.2, "task": "piqa", "metric": "acc_norm", "value": 1.0}]
    rows.append({"pruning": "blocks", "method": "angular", "level": 2.0, "task": "piqa", "metric": "acc", "value": 0.1})
    r = scale.retained_zeroshot(pd.DataFrame(rows), "lm").set_index("method")
    assert set(r.index) == {"wanda", "random"} and (r.keep == 0.8).all()  # CE-Taylor is supervised; blocks apart
    assert r.retained["wanda"] == pytest.approx(0.45 / 0.5) and r.retained["random"] == pytest.approx(0.375 / 0.5)
    with pytest.raises(ValueError, match="no dense 'acc' rows"):
        scale.retained_zeroshot(pd.DataFrame(rows[2:]), "lm")


def test_gap_to_best_compares_trial_means_with_the_best_other_method():
    scores = pd.DataFrame({"task": ["mrpc"] * 6, "keep": [0.5] * 6,
                           "method": ["ours", "ours", "wanda", "taylor", "mi-mds", "random"],
                           "score": [70.0, 74.0, 71.0, 73.0, 90.0, 50.0]})
    g = scale.gap_to_best(scores, "ours", exclude=("mi-mds",)).iloc[0]
    assert (g["ours"], g["best peer"], g["peer score"], g["gap"]) == (72.0, "taylor", 73.0, -1.0)
    assert scale.gap_to_best(scores, "ours").iloc[0]["best peer"] == "mi-mds"
    ppl = scores.assign(keep=0.8)
    g = scale.gap_to_best(ppl, "ours", by=("keep",), lower_is_better=True).iloc[0]
    assert (g["best peer"], g["gap"]) == ("random", 50.0 - 72.0)  # perplexity: lower is better
    with pytest.raises(ValueError, match="'nope' is not in the table"):
        scale.gap_to_best(scores, "nope")


def test_lm_scores_put_perplexity_on_the_keep_fraction_for_gap_to_best():
    lm = pd.DataFrame({"method": ["ours", "wanda", "random", "random"], "ratio": [0.3] * 4, "trial": [0, 0, 0, 1],
                       "perplexity": [40.0, 50.0, 300.0, 500.0]})
    s = scale.lm_scores(lm)
    assert (s.keep == 0.7).all() and s.score.tolist() == [40.0, 50.0, 300.0, 500.0]  # 1 - 0.3 rounded, not 0.7000…01
    g = scale.gap_to_best(s, "ours", by=("keep",), lower_is_better=True).iloc[0]
    assert (g["best peer"], g["gap"]) == ("wanda", 10.0)


def test_headline_scores_average_trials_of_the_headline_metric():
    table = pd.DataFrame({"task": ["stsb"] * 3 + ["mrpc"] * 2, "ffn_flops": [0.5] * 5, "method": ["random"] * 5,
                          "metric": ["pearson", "pearson", "spearman", "accuracy", "f1"],
                          "value": [10.0, 20.0, 99.0, 60.0, 81.0]})
    s = scale.headline_scores(table).set_index("task").score
    assert s.to_dict() == {"stsb": 15.0, "mrpc": 60.0}


def test_verdict_asks_random_and_the_best_label_free_peer():
    assert "wanda" in scale.LABEL_FREE_PEERS and "taylor" not in scale.LABEL_FREE_PEERS
    assert not {"random", "mi-mds", "pcc-mds"} & set(scale.LABEL_FREE_PEERS)
    scores = pd.DataFrame({"task": ["mrpc"] * 6 + ["stsb"] * 4, "keep": [0.5] * 10,
                           "method": ["ours", "ours", "wanda", "taylor", "random", "random",
                                      "ours", "wanda", "hfprune", "random"],
                           "score": [70.0, 74.0, 71.0, 90.0, 60.0, 62.0, 30.0, 20.0, 25.0, 40.0]})
    v = scale.verdict(scores, "ours").set_index("task")
    assert (v.loc["mrpc", "random"], v.loc["mrpc", "best peer"]) == (61.0, "wanda")  # taylor is supervised
    assert v.loc["mrpc", ["beats random", "beats peers"]].tolist() == [True, True]
    assert (v.loc["stsb", "best peer"], v.loc["stsb", "beats random"], v.loc["stsb", "beats peers"]) == (
        "hfprune", False, True)
    ppl = scale.verdict(scores.assign(keep=0.8), "ours", by=("task",), lower_is_better=True).set_index("task")
    assert ppl.loc["stsb", ["beats random", "beats peers"]].tolist() == [True, False]  # 30 < 40, 30 > 20


def test_compensated_models_are_never_averaged_with_their_method():
    lm = pd.DataFrame({"method": ["mi-mds", "mi-mds", "random"], "ratio": [0.2] * 3, "trial": [0, 0, 0],
                       "perplexity": [40.0, 20.0, 300.0], "dense_perplexity": [10.0] * 3,
                       "compensation": ["none", "merge", None]})
    s = scale.lm_scores(lm).set_index("method").score
    assert (s["mi-mds"], s["mi-mds + merge"]) == (40.0, 20.0)
    r = scale.retained_lm(lm, "m").set_index("method").retained
    assert set(r.index) == {"mi-mds", "random"} and r["mi-mds"] == 0.25  # merge is not a criterion of its own
    zs = pd.DataFrame({"pruning": ["mlp"] * 4 + ["dense"], "method": ["mi-mds"] * 4 + ["dense"],
                       "level": [0.2] * 4 + [0.0], "task": ["piqa", "boolq"] * 2 + ["piqa"],
                       "metric": ["acc"] * 5, "value": [0.5, 0.7, 0.6, 0.8, 0.9],
                       "compensation": ["none", "none", "merge", "merge", "none"]})
    z = scale.zeroshot_scores(zs).set_index("method").score
    assert z.to_dict() == pytest.approx({"mi-mds": 60.0, "mi-mds + merge": 70.0})
    assert (scale.zeroshot_scores(zs).keep == 0.8).all()
