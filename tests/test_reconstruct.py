"""Chapter 9's sweep on a tiny Llama: every variant runs, uncompensated cells match chapter 7's, cells resume."""

import numpy as np
import pytest
import torch

from minilib.experiments import lm_sweep, reconstruct
from minilib.experiments.reconstruct import Variant


@pytest.fixture
def bench(tiny_llama, tmp_path):
    g = torch.Generator().manual_seed(3)
    setup = lm_sweep.Setup(tiny_llama, torch.randint(0, 40, (2, 12), generator=g),
                           torch.randint(0, 40, (3, 12), generator=g), "tiny Llama", tmp_path)
    return reconstruct.Bench(setup, torch.randint(0, 40, (8, 16), generator=g))


def test_every_variant_runs_and_the_uncompensated_cells_are_chapter_7s(bench):
    variants = [Variant("wanda"), Variant("wanda", "least-squares"), Variant("flap", "bias", "global"),
                Variant("wanda", "least-squares", "global"),  # layers that keep every neuron: nothing to fit
                Variant("lsq-greedy", "least-squares"), Variant("random", "bias")]
    table = reconstruct.lm_table(bench, [0.1, 0.5], variants, progress=False)
    assert len(table) == 12 and (table.perplexity > 0).all() and table.dense_perplexity.nunique() == 1
    plain = table[(table.method == "wanda") & (table.compensation == "none")].set_index("ratio").perplexity
    kept = [lm_sweep.keep_ratio(lm_sweep.METHODS["wanda"].score(bench.state, 0), r) for r in (0.1, 0.5)]
    for r, keep in zip((0.1, 0.5), kept):
        assert plain[r] == pytest.approx(bench.setup.perplexity(lm_sweep.prune_mlp(bench.setup.model, keep)))
    flap = table[table.method == "flap"]
    assert (flap.kept_min <= flap.kept_max).all() and set(table.compensated_layers) <= set(range(4))
    assert table.heldout_error_ratio.between(0, 1).all()  # the guard never lets compensation raise the error
    again = reconstruct.lm_table(bench, [0.1, 0.5], variants, progress=False)  # from the cached cells
    assert np.array_equal(again.perplexity, table.perplexity)


def test_undefined_variants_are_refused_and_left_out_of_the_grid():
    with pytest.raises(ValueError, match="merge folds"):
        Variant("wanda", "merge")
    assert all(v.compensation != "merge" for v in reconstruct.VARIANTS)
    assert Variant("flap", "bias", "global") in reconstruct.VARIANTS


def test_the_choices_table_covers_both_fits_with_and_without_the_first_token(bench):
    table = reconstruct.choices_table(bench, 0.5, progress=False)
    assert len(table) == 4 * len(reconstruct.CHOICES)
    assert set(zip(table.fit, table.skip_first)) == {(f, s) for f in ("dense", "sequential") for s in (False, True)}
    grid = reconstruct.choices_grid(table)
    assert grid.shape == (len(reconstruct.CHOICES), 4) and (grid > 0).all().all()
