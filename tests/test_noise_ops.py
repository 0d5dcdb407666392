"""The dependency-noise ops (KL sums, search, compose): Triton kernels vs the reference, and the
identity-based reference vs the paper's literal full-tensor search."""

import pytest
import torch
from conftest import DTYPE_IDS, DTYPES

from zs2_kernels import ops, reference
from zs2_kernels.kernels import noise_search

LAMBDAS = [0.0, 0.001, 0.01, 0.1, 1.0, 10.0]


def make(batch, dim, candidates, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prev = torch.randn(batch, dim, generator=gen).to(dtype)
    cand = torch.randn(candidates, batch, dim, generator=gen).to(dtype)
    return prev, cand


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("dim", [1, 7, 1000, 4 * 64 * 64 + 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_kl_sums_triton_matches_reference(nan_poisoned_outputs, dtype, dim, batch):
    prev, cand = make(batch, dim, 10, dtype)
    a_sum, c_sum = ops.kl_sums(prev, cand, "triton")
    a_ref, c_ref = reference.kl_sums(prev.double(), cand.double())
    assert a_sum.dtype == torch.float32 and a_sum.shape == (batch,) and c_sum.shape == (batch, 10)
    torch.testing.assert_close(a_sum.double(), a_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_sum.double(), c_ref, rtol=1e-5, atol=1e-5)


def test_kl_sums_identity_equals_literal_kl():
    """A - C_r is the paper's kl_div statistic of candidate r (the identity the kernels rely on)."""
    prev, cand = make(2, 513, 4)
    a_sum, c_sum = reference.kl_sums(prev.double(), cand.double())
    literal = torch.stack([reference.kl_statistic(cand[r].double(), prev.double()) for r in range(4)], dim=1)
    torch.testing.assert_close(a_sum[:, None] - c_sum, literal)


@pytest.mark.parametrize("search", ["paper", "exact"])
@pytest.mark.parametrize("noise_lambda", LAMBDAS)
@pytest.mark.parametrize("dim", [7, 4 * 64 * 64 + 3])
def test_search_and_compose_triton_match_literal(nan_poisoned_outputs, search, noise_lambda, dim):
    prev, cand = make(3, dim, 10, seed=dim)
    index, alpha, kl = ops.search_frame(prev, cand, 10, 0, 1, noise_lambda, search, 15, "triton")
    frame = ops.compose(prev, cand, index, alpha, 10, 0, 1, "triton")
    lit_index, lit_alpha, lit_frame, lit_kl = reference.search_frame_literal(prev, cand, noise_lambda, search, 15)
    assert index.tolist() == lit_index.tolist()
    torch.testing.assert_close(alpha, lit_alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(kl, lit_kl, rtol=0, atol=1e-5)
    torch.testing.assert_close(frame.double(), lit_frame, rtol=0, atol=2e-6)
    assert ((alpha >= 0) & (alpha <= 1)).all()


@pytest.mark.parametrize("search", ["paper", "exact"])
@pytest.mark.parametrize("noise_lambda", LAMBDAS)
def test_search_from_sums_reproduces_literal_trajectory(search, noise_lambda):
    """The identity-based CPU search takes the same decisions as the paper's full-tensor search."""
    for seed in range(5):
        prev, cand = make(4, 300, 10, seed=seed)
        index, alpha, kl = reference.search_from_sums(*reference.kl_sums(prev.double(), cand.double()),
                                                      noise_lambda, search, 15)
        lit_index, lit_alpha, _, lit_kl = reference.search_frame_literal(prev, cand, noise_lambda, search, 15)
        assert index.tolist() == lit_index.tolist()
        torch.testing.assert_close(alpha, lit_alpha, rtol=0, atol=1e-9)
        torch.testing.assert_close(kl, lit_kl, rtol=0, atol=1e-9)


def test_paper_search_facts_from_design():
    """DESIGN.md §1.1: the paper's own lambda = 0.01 ends at alpha = 1 (a still video); 1.0 stays below it."""
    prev, cand = make(2, 16384, 10, seed=1)
    sums = reference.kl_sums(prev.double(), cand.double())
    _, alpha_small, kl_small = reference.search_from_sums(*sums, 0.01, "paper", 15)
    assert alpha_small.tolist() == [1.0, 1.0] and kl_small.abs().max() == 0
    _, alpha_big, kl_big = reference.search_from_sums(*sums, 1.0, "paper", 15)
    assert (alpha_big < 0.5).all() and (kl_big - 1.0).abs().max() < 0.1


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_compose_triton_matches_reference(nan_poisoned_outputs, dtype):
    prev, cand = make(3, 1003, 5, dtype)
    index = torch.tensor([4, 0, 2])
    alpha = torch.tensor([0.0, 0.37, 1.0], dtype=torch.float64)
    out = ops.compose(prev, cand, index, alpha, 5, 0, 1, "triton")
    expected = reference.compose(prev.float(), cand.float(), index, alpha)
    assert out.dtype == dtype
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(out[0].float(), cand[4, 0].float())  # alpha 0: the fresh candidate
    torch.testing.assert_close(out[2].float(), prev[2].float())  # alpha 1: the previous frame


@pytest.mark.parametrize("search", ["paper", "exact"])
def test_philox_fused_equals_materialised(nan_poisoned_outputs, search):
    """In-kernel Philox candidates are exactly the ones philox_normal materialises."""
    prev, _ = make(3, 2051, 1)
    seed, frame, count = 1234, 5, 10
    cand = noise_search.philox_normal(seed, frame, count, 3, 2051, device="cpu")
    index, alpha, kl = ops.search_frame(prev, None, count, seed, frame, 0.1, search, 15, "triton")
    ref_index, ref_alpha, ref_kl = reference.search_from_sums(*reference.kl_sums(prev, cand), 0.1, search, 15)
    assert index.tolist() == ref_index.tolist()
    torch.testing.assert_close(alpha, ref_alpha, rtol=0, atol=1e-6)
    out = ops.compose(prev, None, index, alpha, count, seed, frame, "triton")
    torch.testing.assert_close(out, reference.compose(prev, cand, index, alpha), rtol=1e-6, atol=1e-6)


def test_philox_streams_are_standard_normal_and_distinct():
    a = noise_search.philox_normal(7, 1, 4, 2, 5000, device="cpu")
    b = noise_search.philox_normal(7, 2, 4, 2, 5000, device="cpu")
    c = noise_search.philox_normal(8, 1, 4, 2, 5000, device="cpu")
    for x in (a, b, c):
        assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert not torch.equal(a, b) and not torch.equal(a, c)
    # Each (frame, candidate, batch) row is its own stream: rows are uncorrelated.
    assert abs(torch.corrcoef(a.reshape(8, -1)).fill_diagonal_(0).abs().max().item()) < 0.06
