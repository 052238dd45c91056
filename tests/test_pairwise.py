"""The all-pairs MI matrix: its exact, α = 2 and certified low-rank paths (minilib.estimator.pairwise),
the low-rank path both compiled (numba) and in torch."""

import pytest
import torch

from minilib.estimator.entropy import gram_matrix, mutual_information, renyi_entropy
from test_entropy import ALPHAS, _data
from minilib.estimator.pairwise import (
    DEFAULT_TOL,
    joint_error_bound,
    memory_bytes,
    pairwise_mutual_information,
    trace_budget,
)

KERNELS = ["numba", "torch"]  # the low-rank path's two implementations


def _layer(n=100, d=48, seed=0):
    """A layer-like sample: correlated, skewed columns, and widths from narrow (high rank) to wide."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, 8, generator=g, dtype=torch.float64) @ torch.randn(8, d, generator=g, dtype=torch.float64)
    X = torch.nn.functional.gelu(Z + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64))
    X = (X - X.mean(0)) / X.std(0)
    return X, torch.logspace(-0.7, 0.8, d, dtype=torch.float64)


def _reference(X, sig, alpha):
    grams = [gram_matrix(X[:, i], sig[i]) for i in range(X.shape[1])]
    D = len(grams)
    return torch.tensor([[renyi_entropy(grams[i], alpha).item() if i == j else
                          mutual_information(grams[i], grams[j], alpha).item() for j in range(D)] for i in range(D)],
                        dtype=torch.float64)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_every_path_equals_pairwise_calls(alpha, kernel):
    X = _data(n=30, d=7)
    sig = torch.tensor([0.3, 0.5, 0.8, 1.0, 2.0, 3.0, 5.0], dtype=torch.float64)
    ref = _reference(X, sig, alpha)
    exact = pairwise_mutual_information(X, sig, alpha, tol=None, max_chunk_mb=0.01, n_jobs=2)
    default = pairwise_mutual_information(X, sig, alpha, kernel=kernel)
    torch.testing.assert_close(exact, ref, atol=1e-9, rtol=0)
    assert (default - ref).abs().max().item() <= DEFAULT_TOL
    torch.testing.assert_close(default.diagonal(), ref.diagonal(), atol=1e-9, rtol=0)  # marginals are exact
    assert torch.equal(exact, exact.T) and torch.equal(default, default.T)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("alpha", [1.0, 1.01, 3.0])
@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-8])
def test_low_rank_path_stays_within_its_certified_bound(alpha, tol, kernel):
    X, sig = _layer()
    exact = pairwise_mutual_information(X, sig, alpha, tol=None)
    approx = pairwise_mutual_information(X, sig, alpha, tol=tol, kernel=kernel)
    err = (approx - exact).abs().max().item()
    assert err <= tol
    if tol >= 1e-6:
        assert err > 1e-12  # the approximation is really taken on these pairs, not the exact path


@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_pairwise_is_permutation_equivariant(alpha):
    X = _data(n=25, d=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    M = pairwise_mutual_information(X, 0.7, alpha, tol=None)
    Mp = pairwise_mutual_information(X[:, perm], 0.7, alpha, tol=None)
    torch.testing.assert_close(Mp, M[perm][:, perm], atol=1e-10, rtol=0)
    rows = torch.randperm(25, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pairwise_mutual_information(X[rows], 0.7, alpha, tol=None), M, atol=1e-9, rtol=0)


@pytest.mark.parametrize("tol, kernel", [(None, "torch"), (DEFAULT_TOL, "torch"), (DEFAULT_TOL, "numba")])
def test_parallel_equals_serial_bit_for_bit_and_chunking_moves_only_round_off(tol, kernel):
    X, sig = _layer(d=150)  # several blocks of variables (torch) or calls of rows (numba)
    ref = pairwise_mutual_information(X, sig, 1.01, tol=tol, n_jobs=1, kernel=kernel)
    assert torch.equal(ref, pairwise_mutual_information(X, sig, 1.01, tol=tol, n_jobs=2, kernel=kernel))
    assert torch.equal(ref, pairwise_mutual_information(X, sig, 1.01, tol=tol, n_jobs=2, kernel=kernel))  # run to run
    # chunk sizes change the batch shapes of vectorised kernels, hence the last bits, never more
    for mb in (0.02, 64.0):
        torch.testing.assert_close(pairwise_mutual_information(X, sig, 1.01, tol=tol, n_jobs=2, max_chunk_mb=mb,
                                                               kernel=kernel), ref, atol=1e-12, rtol=0)


def test_the_compiled_kernel_and_the_torch_path_agree_within_their_bounds_and_auto_picks_one(monkeypatch):
    from minilib.estimator import _kernel, pairwise

    X, sig = _layer(d=60)
    exact = pairwise_mutual_information(X, sig, 1.01, tol=None)
    compiled = pairwise_mutual_information(X, sig, 1.01, kernel="numba")
    reference = pairwise_mutual_information(X, sig, 1.01, kernel="torch")
    assert (compiled - reference).abs().max().item() <= 2 * DEFAULT_TOL  # each within DEFAULT_TOL of exact
    assert (compiled != reference).any()  # the kernel took the pairs of high-rank marginals
    assert (compiled - exact).abs().max().item() <= DEFAULT_TOL
    assert torch.equal(pairwise_mutual_information(X, sig, 1.01), compiled)  # auto: compiled on the CPU
    monkeypatch.setattr(_kernel, "AVAILABLE", False)  # numba absent: auto falls back to the torch path
    assert pairwise.resolve_kernel("auto") == "torch"
    assert torch.equal(pairwise_mutual_information(X, sig, 1.01), reference)
    with pytest.raises(ValueError, match="kernel='numba' runs on the CPU with numba installed"):
        pairwise_mutual_information(X, sig, 1.01, kernel="numba")
    with pytest.raises(ValueError, match="unknown kernel 'fast'"):
        pairwise_mutual_information(X, sig, 1.01, kernel="fast")


def test_alpha_two_row_blocks_do_not_change_the_result():
    X, sig = _layer(d=40)
    a = pairwise_mutual_information(X, sig, 2.0)
    torch.testing.assert_close(a, _reference(X, sig, 2.0), atol=1e-10, rtol=0)
    from minilib.estimator import pairwise

    torch.testing.assert_close(pairwise._alpha2(X, sig, rows=7), a, atol=1e-12, rtol=0)


def _entropy(P, alpha):
    return renyi_entropy(P, alpha).item()


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 1.5, 3.0])
@pytest.mark.parametrize("eps", [1e-9, 1e-6, 1e-3, 0.05])
@pytest.mark.parametrize("where", ["null space", "random", "top direction"])
def test_joint_error_bound_holds_for_a_dropped_psd_part(alpha, eps, where):
    """The inequality behind the low-rank path: drop a PSD part of relative trace ε, the entropy moves ≤ bound."""
    g = torch.Generator().manual_seed(0)
    n, r = 30, 12
    B = torch.randn(n, r, generator=g, dtype=torch.float64) * torch.logspace(0, -4, r, dtype=torch.float64)
    kept = B @ B.T  # rank-deficient, fast-decaying spectrum like a joint RBF kernel
    if where == "null space":  # the worst case for entropy: the mass lands on zero eigenvalues
        Q = torch.linalg.qr(torch.cat([B, torch.randn(n, n - r, generator=g, dtype=torch.float64)], 1))[0][:, r:]
        V = Q @ torch.randn(n - r, n - r, generator=g, dtype=torch.float64)
    elif where == "random":
        V = torch.randn(n, n, generator=g, dtype=torch.float64)
    else:
        V = torch.linalg.eigh(kept)[1][:, -1:]
    drop = V @ V.T
    drop *= eps / (1 - eps) * kept.trace() / drop.trace()  # tr(drop) = ε tr(kept + drop)
    change = abs(_entropy(kept + drop, alpha) - _entropy(kept, alpha))
    assert change <= joint_error_bound(eps, alpha, n) * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.01, 3.0])
@pytest.mark.parametrize("tol", [1e-8, 1e-6, 1e-3])
def test_trace_budget_inverts_the_bound(alpha, tol):
    eps = trace_budget(tol, alpha, 100)
    assert joint_error_bound(eps, alpha, 100) <= tol < joint_error_bound(eps * 1.001, alpha, 100)


def test_memory_formula_fits_a_24_gb_machine_up_to_llama_7b():
    assert memory_bytes(11008, 100, 1.01, n_jobs=2, kernel="torch") < 8 * 2**30  # worst case: every rank capped
    assert memory_bytes(11008, 100, 1.01, n_jobs=16, kernel="numba") < 9 * 2**30
    assert memory_bytes(11008, 100, 1.01, tol=None, n_jobs=2) < 2 * 2**30
    assert memory_bytes(11008, 100, 2.0) < 2 * 2**30
    assert memory_bytes(1536, 100, rank=8, kernel="torch") < memory_bytes(1536, 100, kernel="torch")


def test_bad_tolerance_is_one_clear_error():
    with pytest.raises(ValueError, match="tol"):
        pairwise_mutual_information(_data(), 1.0, 1.01, tol=0.0)
    with pytest.raises(ValueError, match="tol=1e-300"):
        pairwise_mutual_information(_data(), 1.0, 1.01, tol=1e-300)


def _minilm_tokens(n=100, neurons=64):
    from transformers import AutoTokenizer, BertModel

    from minilib.data import glue
    from minilib.models.hooks import capture_activations
    from minilib.models.bert import minilm_dir

    try:
        folder = minilm_dir(required=True)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    model, tok = BertModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    train = glue.load_split("sst2", "train", "tests/fixtures/glue")
    batch = tok(list(train["text_a"]), padding=True, return_tensors="pt")
    acts = capture_activations(model, [dict(batch)], "tokens")
    X = acts[0][:n]
    live = X.std(0) > 1e-6 * X.std(0).median()
    return X[:, live][:, :neurons].double()


def test_low_rank_path_on_real_minilm_activations():
    from minilib.estimator.kernel_width import NeuronKernelWidth, normalize

    X = _minilm_tokens()
    widths = NeuronKernelWidth().fit([X]).sigma_
    Z = normalize(X)
    exact = pairwise_mutual_information(Z, widths, 1.01, tol=None)
    compiled, reference = (pairwise_mutual_information(Z, widths, 1.01, kernel=k) for k in KERNELS)
    assert (compiled - exact).abs().max().item() <= DEFAULT_TOL
    assert (reference - exact).abs().max().item() <= DEFAULT_TOL
    assert (compiled - reference).abs().max().item() <= 2 * DEFAULT_TOL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("tol", [None, DEFAULT_TOL])
@pytest.mark.parametrize("alpha", [1.01, 2.0])
def test_cuda_equals_cpu(alpha, tol):
    X, sig = _layer(d=96)
    cpu = pairwise_mutual_information(X, sig, alpha, tol=tol)
    gpu = pairwise_mutual_information(X.cuda(), sig.cuda(), alpha, tol=tol)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-9, rtol=0)


def test_rank_cap_and_exact_fallback_on_very_narrow_kernels():
    """Narrow widths make every kernel nearly the identity: the pairs fall back to the exact path."""
    from minilib.estimator import pairwise

    X, _ = _layer(n=100, d=12)
    sig = torch.full((12,), 1e-3, dtype=torch.float64)
    spectra = pairwise._spectra(X, sig, 1.01, trace_budget(DEFAULT_TOL, 1.01, 100), chunk=8)
    assert (spectra.rank == pairwise._MAX_RANK).all()  # every factor is capped: no pair can be certified low rank
    exact = pairwise_mutual_information(X, sig, 1.01, tol=None)
    torch.testing.assert_close(pairwise_mutual_information(X, sig, 1.01, kernel="torch"), exact, atol=1e-12, rtol=0)
    # the compiled kernel gives these full-rank joints up at N/2 columns: the exact path computes them
    torch.testing.assert_close(pairwise_mutual_information(X, sig, 1.01, kernel="numba"), exact, atol=1e-12, rtol=0)


@pytest.mark.parametrize("alpha", [1.01, 3.0])
def test_each_compiled_kernel_is_certified_and_gives_up_only_where_it_must(alpha):
    """Both kernels against the exact joint entropies; NaN (the exact path's pairs) only past their limits."""
    from minilib.estimator import _kernel, pairwise
    from minilib.estimator.entropy import entropy_from_spectrum

    X, sig = _layer(d=64)
    n, eps = X.shape[0], trace_budget(DEFAULT_TOL, alpha, X.shape[0])
    sp = pairwise._spectra(X, sig, alpha, eps, chunk=8)
    B = sp.B.numpy()
    i, j = torch.triu_indices(64, 64, 1)
    exact = entropy_from_spectrum(torch.linalg.eigvalsh(sp.B[i] * sp.B[j]), alpha)
    full = torch.from_numpy(_kernel.hadamard_entropies(B, i.numpy(), j.numpy(), alpha, eps, cap=n))
    assert not full.isnan().any() and (full - exact).abs().max().item() <= DEFAULT_TOL
    capped = torch.from_numpy(_kernel.hadamard_entropies(B, i.numpy(), j.numpy(), alpha, eps, cap=3))
    assert capped.isnan().any() and torch.equal(capped[~capped.isnan()], full[~capped.isnan()])
    assert torch.isnan(torch.from_numpy(_kernel.hadamard_entropies(B, i.numpy(), j.numpy(), alpha, 1e-300, cap=n))).all()
    # the factor of MᵀM on every GEMM block pair: certified, and NaN only where the marginals' cut took the budget
    X, sig = _layer(d=130)
    sp = pairwise._spectra(X, torch.logspace(0.4, 0.8, 130, dtype=torch.float64), alpha, eps, chunk=8)  # low ranks
    work = pairwise._Work(sp, pairwise._blocks(sp.rank, 130), alpha, eps, 2**21, "numba")
    gemm = list(work.W)
    assert len(gemm) >= 2
    for a in gemm:
        for b in gemm[gemm.index(a):]:
            I, J = work.blocks[a], work.blocks[b]
            pi, pj = (torch.triu_indices(len(I), len(I), 1) if a == b else
                      torch.cartesian_prod(torch.arange(len(I)), torch.arange(len(J))).T)
            Q, table, base = work._gram_entries(a, b, pi, pj)
            got = torch.from_numpy(_kernel.gram_entropies(Q.numpy(), table.view(work.R[a] * work.R[b], -1).numpy(),
                                                          base.numpy(), n, alpha, eps))
            want = entropy_from_spectrum(torch.linalg.eigvalsh(sp.B[I[pi]] * sp.B[J[pj]]), alpha)
            ok = ~got.isnan()
            assert ok.float().mean() > 0.9 and (got[ok] - want[ok]).abs().max().item() <= DEFAULT_TOL
