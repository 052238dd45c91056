"""Critical neurons (chapter 8): a planted neuron that the output relies on is found and put back."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from minilib.experiments import critical as cr
from minilib.methods import METHODS, Calibrated
from zoo import batches, build, outputs

PLANTED = (1, 5)  # block, neuron


@pytest.fixture(scope="module")
def state():
    """A tiny classifier whose block-1 neuron 5 has a 40× down column: its output leans on that neuron."""
    model = build("bert-classifier")
    block, neuron = PLANTED
    with torch.no_grad():
        model.bert.encoder.layer[block].output.dense.weight[:, neuron] *= 40
    return Calibrated(model, batches("bert-classifier", n=6))


def logit_change(state):
    """A metric of a keep-set: the mean absolute change of the logits from the dense model's, negated (higher = better)."""
    dense = torch.cat([outputs(state.model, b) for b in state.batches])

    def evaluate(keep):
        pruned = state.pruned(keep)
        out = torch.cat([outputs(pruned, b) for b in state.batches])
        return {"fidelity": -100 * float((out - dense).abs().mean())}
    return evaluate


def test_redundancy_ranks_put_the_neuron_sharing_most_mi_first():
    mi = np.array([[1.0, 0.1, 0.2], [0.1, 1.0, 0.9], [0.2, 0.9, 1.0]])
    assert cr.redundancy_ranks(mi).tolist() == [2, 1, 0]  # means 0.15, 0.5, 0.55


def test_the_planted_neuron_is_the_top_wanda_neuron_and_its_removal_alone_hurts_most(state):
    drops = cr.single_neuron_drops(state, logit_change(state), top=2)
    assert set(drops.block) == {-1, 0, 1} and len(drops) == 1 + 2 * 2
    block, neuron = PLANTED
    top = drops[(drops.block == block) & (drops.score_rank == 0)]
    assert top.neuron.item() == neuron
    removed = drops[drops.neuron >= 0]
    assert removed.value.idxmin() == top.index.item()  # the worst single removal of all
    assert sorted(drops.redundancy_rank[drops.neuron >= 0].unique()) == sorted(
        {int(cr.redundancy_ranks(state.mi_map.mi[b])[n]) for b, n in zip(removed.block, removed.neuron)})
    # a threshold between the planted drop and every other one finds it alone
    dense = drops[drops.neuron == -1].value.item()
    others = removed[removed.index != top.index.item()]
    cut = (dense - top.value.item() + (dense - others.value).max()) / 2
    assert cr.critical(drops, "fidelity", cut) == [PLANTED]
    with pytest.raises(ValueError, match="no 'accuracy' rows"):
        cr.critical(drops, "accuracy", 1.0)


def test_restored_adds_each_missing_neuron_once_and_keeps_the_rest():
    assert cr.restored([[3, 1], [0, 2]], [(1, 5), (0, 1), (1, 5)]) == [[1, 3], [0, 2, 5]]


def test_method_keeps_reports_what_each_keep_set_misses_and_scores_it_restored(state):
    evaluate = logit_change(state)
    table = cr.method_keeps(state, evaluate, ["random", "wanda"], [0.25], [PLANTED])
    block, neuron = PLANTED
    for method, rows in table.groupby("method"):
        keep = METHODS[method].select(state, 6, 0)  # 0.25 of 24 neurons
        held = neuron in keep[block]
        assert (rows.missing == ("" if held else f"{block}:{neuron}")).all()
        assert sorted(rows.restored.tolist()) == ([False] if held else [False, True])
        chosen = rows[~rows.restored].value.item()
        assert chosen == pytest.approx(evaluate(keep)["fidelity"])
        if not held:  # putting the planted neuron back brings the logits closer to the dense model's
            assert rows[rows.restored].value.item() > chosen
    assert not table[table.method == "wanda"].missing.any()  # its 40× column makes it the top Wanda neuron
    assert table[table.method == "random"].restored.any()  # seed 0 drops it: the restored branch ran
    with pytest.raises(ValueError, match="unknown method"):
        cr.method_keeps(state, evaluate, ["nope"], [0.5], [])


def test_the_command_refuses_bad_arguments_before_loading_anything(capsys):
    from minilib.cli import main

    for argv, message in [(["--levels", "1.5"], "levels are kept fractions"), (["--score", "mi-mds"], "--score must be"),
                          (["--methods", "nope"], "unknown method"), (["--tasks", "cola2"], "cola2")]:
        with pytest.raises(SystemExit) as exit_:
            main(["critical", *argv])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


def test_the_tables_judge_each_task_by_its_headline_metric():
    row = lambda task, block, neuron, metric, value: dict(task=task, block=block, neuron=neuron, score_rank=0,  # noqa: E731
                                                          redundancy_rank=3, metric=metric, value=value)
    neurons = pd.DataFrame([row("mrpc", -1, -1, "accuracy", 80.0), row("mrpc", -1, -1, "f1", 85.0),
                            row("mrpc", 1, 5, "accuracy", 50.0), row("mrpc", 1, 5, "f1", 81.0),
                            row("mrpc", 0, 3, "accuracy", 79.0), row("stsb", -1, -1, "pearson", 88.0),
                            row("stsb", 2, 7, "pearson", 70.0), row("stsb", 2, 7, "spearman", 10.0)])
    t = cr.drops_table(neurons, min_drop=5)
    assert t[["task", "metric", "block", "neuron", "dense", "without it", "drop"]].values.tolist() == [
        ["mrpc", "accuracy", 1, 5, 80.0, 50.0, 30.0], ["stsb", "pearson", 2, 7, 88.0, 70.0, 18.0]]
    kept = pd.DataFrame([dict(task="mrpc", method="mi-alg1", ffn_flops=0.9, restored=False, metric="accuracy", value=40.0),
                         dict(task="mrpc", method="mi-alg1", ffn_flops=0.9, restored=True, metric="accuracy", value=80.0),
                         dict(task="mrpc", method="mi-alg1", ffn_flops=0.5, restored=False, metric="accuracy", value=70.0),
                         dict(task="mrpc", method="mi-alg1", ffn_flops=0.5, restored=False, metric="f1", value=1.0)])
    r = cr.restoration_table(kept)
    assert r.loc[("mrpc", "mi-alg1")].to_dict() == {(0.9, "chosen"): 40.0, (0.9, "restored"): 80.0,
                                                   (0.5, "chosen"): 70.0, (0.5, "restored"): 70.0}
    assert [c[0] for c in r.columns] == [0.9, 0.9, 0.5, 0.5]  # the highest kept fraction first


def test_a_cached_run_evaluates_each_keep_set_once_and_resumes_from_its_folder(state, tmp_path, monkeypatch):
    calls = []

    def evaluate(keep):
        calls.append(keep)
        return {"kept": float(sum(map(len, keep)))}

    first = cr.cached(tmp_path, evaluate)
    assert first([np.arange(3), [0, 1]]) == {"kept": 5.0} and first([[0, 1, 2], [0, 1]]) == {"kept": 5.0}
    assert len(calls) == 1  # the same keep-set, as arrays or lists
    assert cr.cached(tmp_path, evaluate)([[0, 1, 2], [0, 1]]) == {"kept": 5.0} and len(calls) == 1  # a new run reads it
    table = cr.method_keeps(state, cr.cached(tmp_path, logit_change(state)), ["random"], [0.25], [PLANTED],
                            folder=tmp_path)
    assert (tmp_path / "choices" / "random" / "6.json").is_file()
    monkeypatch.setitem(METHODS, "random", SimpleNamespace(select=lambda *_: pytest.fail("re-chosen")))
    again = cr.method_keeps(state, cr.cached(tmp_path, lambda keep: pytest.fail("re-evaluated")), ["random"], [0.25],
                            [PLANTED], folder=tmp_path)
    assert again.equals(table)


def test_the_positive_rate_follows_from_accuracy_and_f1():
    # 10 examples, 6 positive; the classifier: TP 4, FP 2, FN 2, TN 2 -> accuracy 60%, F1 8/12, 6 of 10 labelled positive
    assert cr.predicted_positive(60.0, 200 / 3, positives=6, total=10) == pytest.approx(0.6)
    # always positive: accuracy = F1's precision = P/N
    assert cr.predicted_positive(60.0, 75.0, positives=6, total=10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="stsb is not scored by accuracy and F1"):
        cr.positive_rates(pd.DataFrame(), "stsb")
