"""The pruning sweep on tiny fixture runs: every method, the dense level, caching/resuming, errors."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from minilib.experiments import glue_sweep
from minilib.experiments import finetune
from minilib.methods import Method, layer_counts

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "glue"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MINILIB_GLUE_DIR", str(FIXTURES))
    cache = tmp_path_factory.mktemp("cache")
    out = {t: finetune.finetune(t, "random", seed=0, epochs=1, cache=cache, progress=False) for t in ("sst2", "stsb")}
    yield out, cache
    mp.undo()


@pytest.fixture(autouse=True)
def glue_fixtures(monkeypatch):
    monkeypatch.setenv("MINILIB_GLUE_DIR", str(FIXTURES))


def _sweep(runs, cache, methods=tuple(glue_sweep.METHODS), levels=(1.0, 0.5)):
    return glue_sweep.sweep(list(runs.values()), methods, levels, trials=1, cache=cache, progress=False,
                             fraction=1.0, mds_seeds=2)


def test_every_method_runs_and_keeping_everything_is_the_dense_model(runs):
    runs, cache = runs
    table = _sweep(runs, cache)
    stsb = set(table[table.task == "stsb"].method)
    assert stsb == set(glue_sweep.METHODS) - {"hfprune", "taylor-self"}  # need a class distribution
    assert set(table[table.task == "sst2"].method) == set(glue_sweep.METHODS)
    for task, run in runs.items():
        dense = finetune.read_result(run)["dev"]
        full = table[(table.task == task) & (table.ffn_flops == 1.0)]
        for _, row in full.iterrows():  # least-squares tuning with nothing pruned is the identity up to its ridge
            tol = 0.1 if glue_sweep.METHODS[row.method].tune else 1e-9
            assert row.value == pytest.approx(round(dense[row.metric], 2), abs=tol)
        assert (full.encoder_flops == 1.0).all()
    half = table[table.ffn_flops == 0.5]
    assert (half.encoder_flops < 1).all() and (half.encoder_flops > 0.5).all()  # attention is not pruned
    assert {"model", "code", "profile", "labels", "trial"} <= set(table.columns)
    assert set(table[table.method == "taylor"].labels) == {"S"} and set(table[table.method == "mi-mds"].labels) == {"U"}


def test_an_interrupted_sweep_resumes_from_its_cache(runs, monkeypatch):
    runs, cache = runs
    first = _sweep(runs, cache, methods=("magnitude", "mi-alg1"))

    def boom(*_):
        raise AssertionError("recomputed a cached cell")

    for name in ("magnitude", "mi-alg1"):
        monkeypatch.setitem(glue_sweep.METHODS, name, Method("U", "fails if called", select_rule=boom))
    again = _sweep(runs, cache, methods=("magnitude", "mi-alg1"))
    assert again.drop(columns="code").equals(first.drop(columns="code"))


def _choices(cache, method: str) -> dict[str, list]:
    """The keep-sets a sweep cached for ``method``, by cell file name."""
    return {p.name: json.loads(p.read_text())["choice"] for p in Path(cache).glob(f"sweeps/**/choices/{method}/*.json")}


def test_the_proposed_method_is_deterministic(runs, tmp_path):
    runs, cache = runs
    a = _sweep({"sst2": runs["sst2"]}, cache, methods=("mi-mds",), levels=(0.3,))
    # a fresh cache for the cells (the MI map is recomputed too): the same keep-sets, hence the same scores
    b = glue_sweep.sweep([runs["sst2"]], ["mi-mds"], [0.3], trials=1, cache=tmp_path, progress=False,
                          fraction=1.0, mds_seeds=2, seed=0)
    first, second = _choices(cache, "mi-mds"), _choices(tmp_path, "mi-mds")
    level = f"{round(0.3 * 512)}-t0.json"
    assert level in first and first[level] == second[level]
    assert a.value.tolist() == b.value.tolist()


def test_every_method_keeps_its_own_neurons(runs):
    """Each method's cached keep-set: the right size in every layer, and the top of its own score."""
    from minilib.methods import scores as sc

    runs, cache = runs
    _sweep({"sst2": runs["sst2"]}, cache, levels=(0.1,))
    keep = {m: _choices(cache, m)["51-t0.json"] for m in glue_sweep.METHODS}
    for m, layers in keep.items():
        assert all(k == sorted(k) for k in layers), m
        if glue_sweep.METHODS[m].allocation == "uniform":
            assert [len(set(k)) for k in layers] == [51, 51], m
        else:  # FLAP's global budget: the same total
            assert sum(len(set(k)) for k in layers) == 102, m
    ctx = glue_sweep.Context(runs["sst2"], fraction=1.0, cache=cache)
    direct = {"magnitude": sc.magnitude_scores(ctx.model), "taylor": sc.taylor_scores(ctx.model, ctx.batches),
              "fisher": sc.fisher_scores(ctx.model, ctx.batches), "wanda": sc.wanda_scores(ctx.model, ctx.batches),
              "hfprune": sc.token_taylor_scores(ctx.model, ctx.batches, "entropy")}
    for m, score in direct.items():
        assert keep[m] == [sorted(np.argsort(-s, kind="stable")[:51].tolist()) for s in score], m
    assert keep["random"] != keep["magnitude"] and keep["mi-mds"] != keep["mi-alg1"]
    assert keep["mi-mds-wanda"] != keep["mi-mds"] and keep["mi-mds-wanda"] != keep["wanda"]


@pytest.mark.parametrize("kwargs, message", [
    ({"methods": ["nope"], "levels": [0.5]}, "unknown method"),
    ({"methods": ["random"], "levels": [0.0]}, r"levels are kept fractions of each layer.s FFN neurons, in \(0, 1\]"),
    ({"methods": ["random"], "levels": [1.5]}, r"levels are kept fractions of each layer.s FFN neurons, in \(0, 1\]"),
])
def test_bad_sweeps(runs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        glue_sweep.sweep(list(runs[0].values()), progress=False, **kwargs)


def test_summary_and_table2_side_by_side():
    import pandas as pd
    rows = [{"task": "mrpc", "method": m, "labels": glue_sweep.METHODS[m].labels, "ffn_flops": level,
             "encoder_flops": 0.7, "trial": t, "metric": "f1", "value": v}
            for m, level, t, v in [("random", 0.4, 0, 70.0), ("random", 0.4, 1, 72.0), ("mi-mds", 0.4, 0, 75.0),
                                   ("mi-mds", 0.8, 0, 80.0)]]
    s = glue_sweep.summarize(pd.DataFrame(rows))
    r = s[(s.method == "random") & (s.ffn_flops == 0.4)].iloc[0]
    assert (r["mean"], r["count"]) == (71.0, 2) and r["std"] == pytest.approx(2 ** 0.5)
    dense = pd.DataFrame([{"task": "mrpc", "metric": "f1", "value": 82.0}])
    t2 = glue_sweep.compare_table2(pd.DataFrame(rows), dense, level=0.4)
    assert t2.loc["dense (this run)", "mrpc f1"] == 82.0 and t2.loc["mi-mds (U)", "mrpc f1"] == 75.0
    assert t2.loc["paper: Proposed method (U)", "mrpc f1"] == 80.9  # F1 first (open decision 10)
    assert "paper: TextPruner (S)" in t2.index and t2.loc[glue_sweep.PAPER_DENSE, "mrpc f1"] == 81.1
    near = pd.DataFrame(rows).assign(ffn_flops=lambda d: d.ffn_flops.replace(0.4, 205 / 512))  # whole neurons
    assert glue_sweep.compare_table2(near, dense, level=0.4).loc["mi-mds (U)", "mrpc f1"] == 75.0
    with pytest.raises(ValueError, match="no level within 0.01 of 0.6"):
        glue_sweep.compare_table2(near, dense, level=0.6)
    drops = glue_sweep.drops_from_dense(t2)
    assert drops.loc["mi-mds (U)", "mrpc f1"] == pytest.approx(75.0 - 82.0)  # against this run's dense model
    assert drops.loc["paper: Proposed method (U)", "mrpc f1"] == pytest.approx(80.9 - 81.1)  # against the paper's
    assert "dense (this run)" not in drops.index and glue_sweep.PAPER_DENSE not in drops.index


def test_ablation_varies_one_setting_and_keeps_cells_apart(runs):
    runs, cache = runs
    table = glue_sweep.ablate([runs["sst2"]], "alpha", ["2", "1.01"], [0.5], trials=1, cache=cache,
                               progress=False, fraction=1.0, mds_seeds=2)
    assert set(table.setting) == {"2.0", "1.01"} and set(table.ablation) == {"alpha"}
    assert set(table.method) == {"mi-mds"} and (table.ffn_flops == 0.5).all()
    summary = glue_sweep.summarize(table, "setting")
    assert set(summary.setting) == {"2.0", "1.01"} and (summary["count"] == 1).all()
    folders = {p.parent.parent.parent.name for p in Path(cache).glob("sweeps/**/choices/mi-mds/*.json")}
    assert {f for f in folders if "-a2-" in f} and {f for f in folders if "-a1.01-" in f}
    with pytest.raises(ValueError, match="unknown ablation"):
        glue_sweep.ablate([runs["sst2"]], "beta", [1], [0.5], progress=False)


def test_published_dense_is_the_pruned_fine_tune_only():
    dense = glue_sweep.published_dense()
    assert set(dense.init) == {"offline"} and set(dense.seed) == {0}
    assert not dense.duplicated(["task", "metric"]).any()  # one dense score per task metric
    with pytest.raises(ValueError, match="no rows for init='offline', seed=99"):
        glue_sweep.published_dense(seed=99)


def test_the_mi_map_is_cached_per_setting_and_read_back_without_recomputing(runs, monkeypatch):
    runs, cache = runs
    run = runs["sst2"]
    first = glue_sweep.neuron_mi_map(run, fraction=1.0, max_batches=1, cache=cache, progress=False)
    files = set(Path(cache).glob("mimaps/**/*.npz"))

    def boom(*_a, **_k):
        raise AssertionError("recomputed a cached MI map")

    with monkeypatch.context() as mp:
        mp.setattr(glue_sweep.mimap, "compute_mi_map", boom)
        again = glue_sweep.neuron_mi_map(run, fraction=1.0, max_batches=1, cache=cache, progress=False)
    assert np.array_equal(first.mi, again.mi) and np.array_equal(first.alive, again.alive)
    other = glue_sweep.neuron_mi_map(run, fraction=1.0, max_batches=1, alpha=2.0, cache=cache, progress=False)
    assert len(set(Path(cache).glob("mimaps/**/*.npz")) - files) == 1 and not np.allclose(other.mi, first.mi)


def test_the_mi_maps_cache_key_depends_on_the_code_that_computes_it_not_on_the_methods():
    from minilib.cache import code_modules

    computes = code_modules("minilib.experiments.neuron_maps")
    assert {"minilib.estimator.mimap", "minilib.models.hooks", "minilib.data.glue"} <= computes
    assert not {m for m in computes if m.startswith("minilib.methods") or m.endswith("glue_sweep")}


def test_the_mi_map_and_the_peers_read_the_same_calibration_sentences(runs):
    """The MI map's activations and the peers' batches are the same rows of the training set."""
    import torch

    from minilib.models.hooks import capture_activations

    runs, cache = runs
    ctx = glue_sweep.Context(runs["stsb"], fraction=0.5, seed=3, cache=cache)
    mi_rows = glue_sweep.calibration_activations(runs["stsb"], 0.5, seed=3)
    peer_rows = capture_activations(ctx.model, ctx.batches, "mean")
    assert mi_rows[0].shape == peer_rows[0].shape
    for a, b in zip(mi_rows, peer_rows):  # the same multiset of rows (the MI map shuffles them)
        key = lambda t: t[torch.argsort(t[:, 0] + 1e-3 * t[:, 1])]
        torch.testing.assert_close(key(a), key(b), atol=1e-5, rtol=1e-4)


def test_a_minilm_run_is_swept_with_classical_mds(tmp_path):
    run = finetune.finetune("mrpc", "minilm", seed=0, epochs=1, cache=tmp_path, progress=False)
    table = glue_sweep.sweep([run], ["mi-mds", "magnitude"], [0.5], trials=1, cache=tmp_path, progress=False,
                             fraction=1.0, mds_seeds=2, mds="classical")
    assert set(table.model) == {"all-MiniLM-L6-v2 (offline copy)"} and set(table.method) == {"mi-mds", "magnitude"}
    assert (table.ffn_flops == 0.5).all() and set(table.metric) == {"f1", "accuracy"}
    kept = [json.loads(p.read_text()) for p in tmp_path.glob("sweeps/**/choices/mi-mds/*.json")]
    assert len(kept) == 1 and [len(k) for k in kept[0]["choice"]] == [768] * 6  # half of 1,536, in all 6 layers
    assert all("-classical-kmedoids-code" in p.parent.parent.parent.name  # the setting names its cluster step
               for p in tmp_path.glob("sweeps/**/choices/mi-mds/*.json"))
    assert set(table.cluster) == {"kmedoids"}


def test_a_gradient_score_after_the_kl_choice_in_one_context(runs, tmp_path):
    runs, _ = runs  # the KL choice runs first and builds the calibration batches; Taylor then backpropagates them
    table = glue_sweep.sweep([runs["sst2"]], ["mi-mds", "taylor"], [0.5], trials=1, cache=tmp_path, progress=False,
                             fraction=1.0, mds_seeds=2)
    assert list(table.drop_duplicates("method").method) == ["mi-mds", "taylor"]


def test_compensation_fits_on_its_own_larger_sample_and_a_sweep_takes_an_allocation(runs):
    runs, cache = runs
    ctx = glue_sweep.Context(runs["sst2"], fraction=0.5, fit_fraction=1.0, cache=cache)
    tokens = lambda batches: sum(int(b["attention_mask"].sum()) for b in batches)
    assert tokens(ctx.fit_batches) > tokens(ctx.batches)  # the methods still read the 50%
    stats = ctx.compensation_stats()
    assert stats[0].n_fit + stats[0].n_held == tokens(ctx.fit_batches)
    assert glue_sweep.Context(runs["sst2"], fraction=0.5, cache=cache).fit_batches is not None
    first_out = glue_sweep.Context(runs["sst2"], fraction=0.5, fit_fraction=1.0, skip_first=True, cache=cache)
    fewer = first_out.compensation_stats()[0]  # every sentence's [CLS] left out of the fit and the held-out
    assert fewer.n_fit + fewer.n_held == tokens(ctx.fit_batches) - sum(len(b["input_ids"]) for b in ctx.fit_batches)
    assert first_out.setting == ctx.setting + "-skipfirst"  # its cells are cached apart
    for allocation in ("uniform", "global"):  # the same cache: the global cell must not reuse the uniform choice
        table = glue_sweep.sweep([runs["sst2"]], ["wanda"], [0.5], trials=1, cache=cache, progress=False,
                                 fraction=0.5, fit_fraction=1.0, compensation="least-squares", allocation=allocation)
    assert set(zip(table.allocation, table.compensation, table.fit_fraction)) == {("global", "least-squares", 1.0)}
    chosen = {p.parent.name: [len(k) for k in json.loads(p.read_text())["choice"]]
              for p in cache.glob("sweeps/**/choices/wanda*/*.json") if "fit1" in str(p)}
    assert chosen["wanda@global"] == layer_counts(ctx, "wanda", "global", 0.5) != chosen["wanda"]
    with pytest.raises(ValueError, match="allocation redundancy reads a similarity map"):
        glue_sweep.sweep([runs["sst2"]], ["wanda"], [0.5], cache=cache, allocation="redundancy")


def test_a_sweep_with_compensation_keeps_its_cells_apart_and_refuses_undefined_ones(runs):
    runs, cache = runs
    own = glue_sweep.sweep([runs["sst2"]], ["wanda", "flap"], [0.5], trials=1, cache=cache, progress=False,
                           fraction=1.0)
    assert set(zip(own.method, own.compensation, own.allocation)) == {("wanda", "none", "uniform"),
                                                                      ("flap", "bias", "global")}
    refit = glue_sweep.sweep([runs["sst2"]], ["wanda", "flap"], [0.5], trials=1, cache=cache, progress=False,
                             fraction=1.0, compensation="least-squares")
    assert set(refit.compensation) == {"least-squares"}
    assert (own.encoder_flops.values == refit.encoder_flops.values).all()  # the same keep-sets, other weights
    with pytest.raises(ValueError, match="refits its kept weights itself"):
        glue_sweep.sweep([runs["sst2"]], ["mask-tuning"], [0.5], cache=cache, compensation="bias")


def test_compensation_table_lays_out_each_mode_beside_none_and_its_change():
    rows = [{"task": "mrpc", "method": m, "allocation": a, "compensation": c, "ffn_flops": lv, "metric": "f1",
             "value": v + t, "trial": t}
            for m, a, base in (("wanda", "uniform", 70.0), ("flap", "global", 60.0))
            for c, gain in (("none", 0.0), ("least-squares", 5.0)) for lv in (0.4, 0.8) for t in (0, 1)
            for v in [base + gain + 10 * (lv == 0.8)]]
    table = pd.DataFrame(rows)
    dense = pd.DataFrame([{"task": "mrpc", "metric": "f1", "value": 88.0}])
    t = glue_sweep.compensation_table(table, dense, level=0.4)
    assert list(t.index) == ["dense", "wanda (uniform)", "flap (global)"]
    swapped = glue_sweep.compensation_table(pd.concat([table[table.method == "flap"], table[table.method == "wanda"]]),
                                            dense, level=0.4)
    assert list(swapped.index) == list(t.index)  # uniform first, then by the registry
    assert t.loc["dense", ("mrpc f1", "none")] == 88.0 and np.isnan(t.loc["dense", ("mrpc f1", "least-squares")])
    assert t.loc["flap (global)", ("mrpc f1", "least-squares")] == 65.5  # mean of the two trials at 0.4
    change = glue_sweep.compensation_table(table, dense, level=0.4, change=True)
    assert list(change.columns) == [("mrpc f1", "least-squares")] and (change.values == 5.0).all()
    first_out = table[table.compensation == "least-squares"].assign(skip_first=True, value=lambda d: d.value + 1)
    both = glue_sweep.compensation_table(pd.concat([first_out, table.assign(skip_first=False)]), dense, level=0.4,
                                         change=True)
    assert list(both.columns) == [("mrpc f1", "least-squares"), ("mrpc f1", "least-squares, [CLS] out")]
    assert (both.xs("least-squares, [CLS] out", axis=1, level=1).values == 6.0).all()
    with pytest.raises(ValueError, match="no level within 0.01 of 0.2"):
        glue_sweep.compensation_table(table, dense, level=0.2)
    with pytest.raises(ValueError, match="compares with compensation none"):
        glue_sweep.compensation_table(table[table.compensation != "none"], dense, change=True)


def test_published_reads_one_table_or_a_group_split_by_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(glue_sweep, "results_dir", lambda: tmp_path)
    for mode in ("none", "bias"):
        pd.DataFrame({"compensation": [mode], "value": [1.0]}).to_csv(tmp_path / f"comp-{mode}.csv", index=False)
    assert list(glue_sweep.published("comp-*").compensation) == ["bias", "none"]
    assert list(glue_sweep.published("comp-none").compensation) == ["none"]
    for missing in ("other-*", "other"):
        with pytest.raises(FileNotFoundError, match="make results"):
            glue_sweep.published(missing)


def test_the_redundancy_check_reads_each_methods_own_keep_sets(runs):
    from minilib.experiments import redundancy

    runs, cache = runs
    ctx = glue_sweep.Context(runs["sst2"], cache=cache, fraction=1.0, mds_seeds=2)
    table = redundancy.keep_set_check(ctx, ["random", "mi-mds"], [0.25, 0.5])
    layers = ctx.mi_map.n_layers
    assert len(table) == 2 * 2 * layers and set(table.method) == {"random", "mi-mds"}
    live = ctx.mi_map.alive.sum(1)
    for (method, removed), t in table.groupby(["method", "removed_fraction"]):
        keep = glue_sweep.METHODS[method].select(ctx, layer_counts(ctx, method, "uniform", 1 - removed), 0)
        assert list(t.kept) == [np.isin(k, np.flatnonzero(a)).sum() for k, a in zip(keep, ctx.mi_map.alive)]
        assert (t.kept + t.removed == live).all()
    summary = redundancy.summarize(table)
    assert len(summary) == 4 and (summary.layers == layers).all()
    assert summary.best_match_ratio.notna().all()
    with pytest.raises(ValueError, match="removed fractions must be in"):
        redundancy.keep_set_check(ctx, ["random"], [1.0])


def test_mds_fidelity_of_every_layer_of_a_context(runs):
    from minilib.experiments import redundancy

    runs, cache = runs
    ctx = glue_sweep.Context(runs["stsb"], cache=cache, fraction=1.0, mds_seeds=2)
    fid = redundancy.fidelity(ctx, dims=(2, 8))
    assert len(fid) == 2 * ctx.mi_map.n_layers and list(fid.neurons) == [int(a.sum()) for a in ctx.mi_map.alive
                                                                          for _ in range(2)]
    assert (fid.groupby("layer")["mass"].diff().dropna() > 0).all() and fid.pearson.between(-1, 1).all()
