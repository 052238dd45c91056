"""The one sweep engine: cached choices and evaluations, identical choices evaluated once, resumption;
and chapter 7's two sweeps on it, on a tiny Llama."""

import copy
import itertools

import numpy as np
import pytest
import torch

import minilib.methods
from minilib.experiments import engine, lm_sweep
from minilib.methods.compensation import Compensation, compensate


def _counting(choices):
    calls = {"choose": 0, "evaluate": 0}

    def choose(cell):
        calls["choose"] += 1
        return choices[cell.method]

    def evaluate(model):
        calls["evaluate"] += 1
        return {"score": float(model.weight.detach().sum())}
    return calls, choose, evaluate


def _apply(_cell, choice):
    layer = torch.nn.Linear(1, len(choice[0]), bias=False)
    torch.nn.init.ones_(layer.weight)
    return layer


def test_identical_choices_are_evaluated_once_and_cells_are_cached(tmp_path):
    calls, choose, evaluate = _counting({"a": [np.array([0, 2])], "b": [np.array([0, 2])], "c": [np.array([1])]})
    cells = [engine.Cell(m, 2) for m in "abc"]
    first = engine.run(cells, choose, _apply, evaluate, tmp_path, progress=False)
    assert calls == {"choose": 3, "evaluate": 2}  # a and b chose the same neurons
    assert [r["metrics"]["score"] for r in first] == [2.0, 2.0, 1.0] and first[0]["choice"] == [[0, 2]]
    again = engine.run(cells, choose, _apply, evaluate, tmp_path, progress=False)
    assert calls == {"choose": 3, "evaluate": 2}  # everything from the cache
    assert [r["metrics"] for r in again] == [r["metrics"] for r in first]


def test_a_key_can_keep_evaluations_apart(tmp_path):
    calls, choose, evaluate = _counting({"a": [[0]], "b": [[0]]})
    engine.run([engine.Cell("a", 1), engine.Cell("b", 1)], choose, _apply, evaluate, tmp_path,
               key=lambda cell, choice: f"{cell.method}-{choice}", progress=False)
    assert calls["evaluate"] == 2


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    calls, choose, evaluate = _counting({"a": [[0]], "b": [[1, 2]], "c": [[0, 1, 2]]})

    def flaky(model):
        if model.out_features == 3:
            raise KeyboardInterrupt
        return evaluate(model)
    cells = [engine.Cell(m, 1) for m in "abc"]
    with pytest.raises(KeyboardInterrupt):
        engine.run(cells, choose, _apply, flaky, tmp_path, progress=False)
    assert calls["evaluate"] == 2
    done = engine.run(cells, choose, _apply, evaluate, tmp_path, progress=False)
    assert calls["evaluate"] == 3 and done[2]["metrics"]["score"] == 3.0


@pytest.fixture
def setup(tiny_llama, tmp_path):
    g = torch.Generator().manual_seed(3)
    return lm_sweep.Setup(tiny_llama, torch.randint(0, 40, (2, 12), generator=g),
                          torch.randint(0, 40, (3, 12), generator=g), "tiny Llama", tmp_path, mi_tokens=24, mi_batch=12)


def test_mlp_sweep_runs_every_method_and_resumes_from_its_cells(setup):
    table = lm_sweep.mlp_sweep(setup, [0.25, 0.5], methods=("magnitude", "hfprune", "random"), trials=2,
                               progress=False)
    assert len(table) == 2 * (1 + 1 + 2) and set(table.ratio) == {0.25, 0.5}
    assert set(table.kept_per_block) == {9, 6} and (table.perplexity > 0).all()
    blocks_t = lm_sweep.block_sweep(setup, [1], methods=("mi-prun",), progress=False)
    t = lm_sweep.timings({"blocks": blocks_t.assign(wall_seconds=1.0), "mlp": table.assign(wall_seconds=2.0)})
    assert t["hfprune scores (s)"] == table[table.method == "hfprune"].select_seconds.max()  # the sweep's own columns
    assert table.dense_perplexity.nunique() == 1
    expected = lm_sweep.keep_ratio(lm_sweep.METHODS["hfprune"].score(setup.state, 0), 0.5)
    cell = setup.folder / "mlp" / "choices" / "hfprune" / "6-t0.json"
    assert cell.is_file() and cell.read_text().count("[") == 1 + len(expected)
    again = lm_sweep.mlp_sweep(setup, [0.25, 0.5], methods=("magnitude", "hfprune", "random"), trials=2,
                               progress=False)
    assert again.drop(columns=["select_seconds", "eval_seconds"]).equals(
        table.drop(columns=["select_seconds", "eval_seconds"]))


def test_merge_compensation_reuses_the_keep_sets_and_is_evaluated_apart(tiny_llama, tmp_path):
    g = torch.Generator().manual_seed(3)
    setup = lm_sweep.Setup(tiny_llama, torch.randint(0, 40, (2, 12), generator=g),
                           torch.randint(0, 40, (3, 12), generator=g), "tiny Llama", tmp_path, neuron_mi_batch=16,
                           neuron_mi_batches=1)
    plain = lm_sweep.mlp_sweep(setup, [0.5], methods=("mi-mds",), trials=1, progress=False)
    merged = lm_sweep.mlp_sweep(setup, [0.5], methods=("mi-mds",), trials=1, progress=False, compensation="merge")
    assert list(plain.compensation) == ["none"] and list(merged.compensation) == ["merge"]
    assert len(list((tmp_path / "mlp" / "choices").rglob("*.json"))) == 1  # one keep-set for both
    evaluations = sorted(p.name for p in (tmp_path / "mlp" / "evaluations").iterdir())
    assert evaluations == [evaluations[0], f"merge-{evaluations[0]}"]
    keep = lm_sweep.METHODS["mi-mds"].select(setup.state, 6, 0)
    partners = lm_sweep.METHODS["mi-mds"].partners(setup.state, keep)
    expected = setup.perplexity(compensate(copy.deepcopy(tiny_llama), keep, setup.state.batches, Compensation("merge"),
                                           partners, setup.state.compensation_stats(), 0)[0])
    assert merged.perplexity.iloc[0] == pytest.approx(expected) != plain.perplexity.iloc[0]
    with pytest.raises(ValueError, match="merge folds removed neurons"):
        lm_sweep.mlp_sweep(setup, [0.5], methods=("wanda",), trials=1, progress=False, compensation="merge")


def test_the_mi_methods_prune_a_decoders_mlp_deterministically_on_a_few_token_batches(tiny_llama, tmp_path):
    def fresh(folder):
        g = torch.Generator().manual_seed(3)
        return lm_sweep.Setup(tiny_llama, torch.randint(0, 40, (2, 12), generator=g),
                              torch.randint(0, 40, (3, 12), generator=g), "tiny Llama", folder, neuron_mi_batch=16,
                              neuron_mi_batches=1)
    a, b = fresh(tmp_path / "a"), fresh(tmp_path / "b")
    table = lm_sweep.mlp_sweep(a, [0.5], methods=("mi-mds", "mi-mds-wanda"), trials=1, progress=False)
    assert list(table.method) == ["mi-mds", "mi-mds-wanda"] and (table.kept_per_block == 6).all()
    m = a.state.mi_map  # the first batch of 16 of the 33 token positions the windows give
    assert (m.meta["batches"], m.meta["samples"], m.meta["batch_size"]) == (1, 16, 16)
    for name in ("mi-mds", "mi-mds-wanda"):  # the same seed gives the same keep-sets from a fresh state
        first, again = (lm_sweep.METHODS[name].select(s.state, 6, 0) for s in (a, b))
        assert all(np.array_equal(x, y) for x, y in zip(first, again))


def test_a_decoders_mi_map_is_saved_once_and_read_back_by_a_resumed_sweep(tiny_llama, tmp_path, monkeypatch):
    def fresh(folder: str):
        g = torch.Generator().manual_seed(3)
        return lm_sweep.Setup(tiny_llama, torch.randint(0, 40, (2, 12), generator=g),
                              torch.randint(0, 40, (3, 12), generator=g), "tiny Llama", tmp_path / folder,
                              neuron_mi_batch=16, maps=tmp_path / "maps")
    first = fresh("run").state.mi_map
    assert len(list((tmp_path / "maps").glob("*/mimap-aligned.npz"))) == 1  # one folder per map Settings
    monkeypatch.setattr(minilib.methods, "compute_mi_map",
                        lambda *a, **k: pytest.fail("the saved map was recomputed"))
    again = fresh("run-of-other-sweep-code").state.mi_map  # the map outlives the sweep's own cache key
    assert all(np.array_equal(x, y) for x, y in zip(first.mi, again.mi)) and again.meta == first.meta


def test_block_sweep_removes_the_chosen_blocks(setup):
    table = lm_sweep.block_sweep(setup, [1, 2], methods=("block-influence", "mi-prun", "mi-prun-fbs", "random"),
                                 trials=2, progress=False)
    assert len(table) == 2 * (1 + 1 + 1 + 2)
    assert all(len(b.split()) == k for b, k in zip(table.blocks, table.blocks_removed))
    assert all(c == setup.mi.cost([int(b) for b in s.split()]) for s, c in zip(table.blocks, table.mi_cost))
    # MI-PRUN is the exact optimum of its cost: no set of k blocks costs less, FBS included
    for k in (1, 2):
        brute = min(itertools.combinations(range(setup.mi.n_blocks), k), key=setup.mi.cost)
        assert table.query(f"method == 'mi-prun' and blocks_removed == {k}").mi_cost.item() == \
            pytest.approx(setup.mi.cost(brute), abs=1e-12)
    gap = lm_sweep.search_gap(table)
    assert gap.index.tolist() == [1, 2] and (gap.cost_gap >= -1e-12).all()
    assert (gap.same_set == (gap.blocks_exact == gap.blocks_fbs)).all()
    with pytest.raises(ValueError, match="mi-prun-fbs"):
        lm_sweep.search_gap(table[table.method != "mi-prun-fbs"])
    with pytest.raises(ValueError, match="unknown block method"):
        lm_sweep.block_sweep(setup, [1], methods=("nope",), progress=False)


def test_dpi_check_compares_every_segment_with_its_bound(setup):
    mi = setup.mi
    L = mi.n_blocks
    dpi = lm_sweep.dpi_check(mi)
    assert len(dpi) == (L - 1) * L // 2  # every segment of two or more blocks
    row = dpi[(dpi.start == 0) & (dpi.stop == 2)].iloc[0]
    assert row.mi == mi.segment(0, 2) and row.bound == min(mi.block[0], mi.block[1])
    assert (dpi.excess == dpi.mi - dpi.bound).all()
    assert dpi.length.max() == L and lm_sweep.dpi_check(mi, max_length=2).length.unique().tolist() == [2]
    summary = lm_sweep.dpi_summary(dpi)
    assert summary.segments.sum() == len(dpi)
    assert summary.loc[2, "violated"] == pytest.approx((dpi[dpi.length == 2].excess > 0).mean())


def test_timings_read_the_committed_tables():
    import pandas as pd

    blocks_t = pd.DataFrame({"method": ["mi-prun", "mi-prun", "random"], "select_seconds": [5.0, 0.1, 0.0],
                             "eval_seconds": [1.0, 2.0, 3.0], "wall_seconds": [9.0] * 3})
    mlp_t = pd.DataFrame({"method": ["hfprune", "magnitude"], "select_seconds": [4.0, 0.5], "wall_seconds": [7.0] * 2})
    t = lm_sweep.timings({"blocks": blocks_t, "mlp": mlp_t})
    assert t["MI-PRUN: states + block MIs + search, first call (s)"] == 5.0
    assert t["block cell evaluation, median (s)"] == 2.0 and t["hfprune scores (s)"] == 4.0
