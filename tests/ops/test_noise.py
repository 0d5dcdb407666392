"""The dependency-noise ops (KL sums, search, compose): Triton kernels vs the reference, and the
identity-based reference vs the paper's literal full-tensor search."""

import pytest
import torch

from zs2_kernels.ops.noise import compose_op, kl_sums_op, reference, search_frame_op
from zs2_kernels.ops.noise import triton as noise_search

from helpers import DTYPE_IDS, DTYPES

LAMBDAS = [0.0, 0.001, 0.01, 0.1, 1.0, 10.0]


def make(batch, dim, candidates, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prev = torch.randn(batch, dim, generator=gen).to(dtype)
    cand = torch.randn(candidates, batch, dim, generator=gen).to(dtype)
    return prev, cand


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("dim", [1, 7, 1000, 4 * 64 * 64 + 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_kl_sums_triton_matches_reference(dtype, dim, batch):
    prev, cand = make(batch, dim, 10, dtype)
    a_sum, c_sum, e_sum = kl_sums_op(prev, cand, "triton")
    a_ref, c_ref, e_ref = reference.kl_sums(prev.double(), cand.double())
    assert a_sum.dtype == e_sum.dtype == torch.float32 and a_sum.shape == e_sum.shape == (batch,)
    assert c_sum.shape == (batch, 10)
    torch.testing.assert_close(a_sum.double(), a_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_sum.double(), c_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e_sum.double(), e_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e_ref, prev.double().exp().square().mean(-1))  # E = mean exp(2p), from the math


def test_kl_sums_identity_equals_literal_kl():
    """A - C_r is the paper's kl_div statistic of candidate r (the identity the kernels rely on)."""
    prev, cand = make(2, 513, 4)
    a_sum, c_sum, _ = reference.kl_sums(prev.double(), cand.double())
    literal = torch.stack([reference.kl_statistic(cand[r].double(), prev.double()) for r in range(4)], dim=1)
    torch.testing.assert_close(a_sum[:, None] - c_sum, literal)


@pytest.mark.parametrize("search", ["paper", "exact"])
@pytest.mark.parametrize("noise_lambda", LAMBDAS)
@pytest.mark.parametrize("dim", [7, 4 * 64 * 64 + 3])
def test_search_and_compose_triton_match_literal(search, noise_lambda, dim):
    prev, cand = make(3, dim, 10, seed=dim)
    index, coefficients, kl = search_frame_op(prev, cand, 10, None, 1, noise_lambda, search, 15, "triton")
    frame = compose_op(prev, cand, index, coefficients, 10, None, 1, "triton")
    lit_index, lit_alpha, lit_frame, lit_kl = reference.search_frame_literal(prev, cand, noise_lambda, search, 15)
    assert index.tolist() == lit_index.tolist()
    torch.testing.assert_close(coefficients[:, 0].square(), lit_alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(kl, lit_kl, rtol=0, atol=1e-5)
    torch.testing.assert_close(frame.double(), lit_frame, rtol=0, atol=2e-6)
    assert ((coefficients[:, 0] >= 0) & (coefficients[:, 0] <= 1)).all()


@pytest.mark.parametrize("search", ["paper", "exact"])
@pytest.mark.parametrize("noise_lambda", LAMBDAS)
def test_search_from_sums_reproduces_literal_trajectory(search, noise_lambda):
    """The identity-based CPU search takes the same decisions as the paper's full-tensor search."""
    for seed in range(5):
        prev, cand = make(4, 300, 10, seed=seed)
        index, coefficients, kl = reference.search_from_sums(*reference.kl_sums(prev.double(), cand.double()),
                                                             noise_lambda, search, 15, 300)
        lit_index, lit_alpha, lit_frame, lit_kl = reference.search_frame_literal(prev, cand, noise_lambda, search,
                                                                                 15)
        assert index.tolist() == lit_index.tolist()
        torch.testing.assert_close(coefficients[:, 0].square(), lit_alpha, rtol=0, atol=1e-9)
        torch.testing.assert_close(kl, lit_kl, rtol=0, atol=1e-9)
        frame = reference.compose(prev.double(), cand.double(), index, coefficients)
        torch.testing.assert_close(frame, lit_frame, rtol=0, atol=1e-9)


@pytest.mark.parametrize("noise_lambda", [0.001, 0.01, 0.1, 1.0])
@pytest.mark.parametrize("dim", [2, 7, 300])
def test_exact_search_hits_lambda_with_fresh_noise_orthogonal_to_the_weights(noise_lambda, dim):
    """The unbiased step (DESIGN.md §1.1): keep = 1 - lambda/A, and what the frame gets of the candidate has no
    component along exp(p), the one direction the statistic sees, so the full-tensor statistic is lambda."""
    prev, cand = make(6, dim, 10, seed=dim)
    prev, cand = prev.double(), cand.double()
    index, coefficients, kl = reference.search_frame(prev, cand, noise_lambda, "exact", 15)
    a_sum = (prev.exp() * prev).mean(-1)
    reach = a_sum > noise_lambda  # else the projected step cannot reach lambda (its statistic is A at keep 0)
    assert reach.sum() >= 2
    torch.testing.assert_close(coefficients[reach, 0], 1 - noise_lambda / a_sum[reach])
    frame = reference.compose(prev, cand, index, coefficients)
    fresh_part = frame - coefficients[:, :1] * prev
    torch.testing.assert_close((fresh_part * prev.exp()).sum(-1)[reach], torch.zeros_like(a_sum[reach]), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(reference.kl_statistic(frame, prev)[reach], kl[reach], atol=1e-12, rtol=0)
    torch.testing.assert_close(kl[reach], torch.full_like(kl[reach], noise_lambda), atol=1e-12, rtol=0)


def test_paper_search_never_returns_alpha_one_above_zero_lambda():
    """The float32 trajectory rejects 1.0000001 (tests/ops/test_paper_search.py compares with the published code):
    lambda = 0.01 ends at the last accepted trial 0.98, lambda = 1.0 stays low and near its target."""
    prev, cand = make(2, 16384, 10, seed=1)
    sums = reference.kl_sums(prev.double(), cand.double())
    _, coefficients, kl_small = reference.search_from_sums(*sums, 0.01, "paper", 15, 16384)
    alpha_small = coefficients[:, 0].square()
    torch.testing.assert_close(alpha_small, torch.full_like(alpha_small, 0.98), rtol=0, atol=1e-6)
    assert (kl_small > 0.01).all()  # its steps cannot reach the target: the statistic stays above it
    _, coefficients, kl_big = reference.search_from_sums(*sums, 1.0, "paper", 15, 16384)
    assert (coefficients[:, 0].square() < 0.5).all() and (kl_big - 1.0).abs().max() < 0.1
    assert coefficients[:, 2].eq(0).all()  # the paper's step has no exp(p) term


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_compose_triton_matches_reference(dtype):
    prev, cand = make(4, 1003, 5, dtype)
    index = torch.tensor([4, 0, 2, 1])
    coefficients = torch.tensor([[0.0, 1.0, 0.0], [0.37, 0.8, 0.0], [1.0, 0.0, 0.0], [0.9, 0.45, 0.013]],
                                dtype=torch.float64)
    out = compose_op(prev, cand, index, coefficients, 5, None, 1, "triton")
    expected = reference.compose(prev.float(), cand.float(), index, coefficients)
    assert out.dtype == dtype
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(out[0].float(), cand[4, 0].float())  # (0, 1, 0): the fresh candidate
    torch.testing.assert_close(out[2].float(), prev[2].float())  # (1, 0, 0): the previous frame
    p = prev[3].double()  # the tilted row, from the formula
    truth = 0.9 * p + 0.45 * cand[1, 3].double() - 0.013 * p.exp()
    torch.testing.assert_close(out[3].double(), truth, rtol=tol, atol=tol)


@pytest.mark.parametrize("search", ["paper", "exact"])
def test_philox_fused_equals_materialised(search):
    """In-kernel Philox candidates are exactly the ones philox_normal materialises."""
    prev, _ = make(3, 2051, 1)
    seeds, frame, count = torch.tensor([1234, 7, 2**62 + 5]), 5, 10
    cand = noise_search.philox_normal(seeds, frame, count, 2051)
    index, coefficients, kl = search_frame_op(prev, None, count, seeds, frame, 0.1, search, 15, "triton")
    ref_index, ref_coefficients, ref_kl = reference.search_from_sums(*reference.kl_sums(prev, cand), 0.1, search, 15,
                                                                     2051)
    assert index.tolist() == ref_index.tolist()
    torch.testing.assert_close(coefficients, ref_coefficients, rtol=0, atol=1e-6)
    out = compose_op(prev, None, index, coefficients, count, seeds, frame, "triton")
    torch.testing.assert_close(out, reference.compose(prev, cand, index, coefficients), rtol=1e-6, atol=1e-6)


def test_philox_streams_are_standard_normal_and_distinct():
    a = noise_search.philox_normal(torch.tensor([7, 9]), 1, 4, 5000)
    b = noise_search.philox_normal(torch.tensor([7, 9]), 2, 4, 5000)
    c = noise_search.philox_normal(torch.tensor([8, 9]), 1, 4, 5000)
    for x in (a, b, c):
        assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert not torch.equal(a, b) and not torch.equal(a[:, 0], c[:, 0])
    assert torch.equal(a[:, 1], c[:, 1])  # video 1's key is the same in both: its stream is too
    # Each (frame, candidate, batch) row is its own stream: rows are uncorrelated.
    assert abs(torch.corrcoef(a.reshape(8, -1)).fill_diagonal_(0).abs().max().item()) < 0.06


def test_interpreter_argmin_lets_a_nan_displace_the_minimum_as_compiled():
    """What the search kernel guards against (conftest.reductions_compare_as_compiled): a NaN before the minimum
    resets argmin's running value, while tl.min (minnumf) skips it."""
    import triton
    import triton.language as tl

    @triton.jit
    def reduce(x_ptr, out_ptr, index_ptr):
        x = tl.load(x_ptr + tl.arange(0, 8))
        tl.store(out_ptr, tl.min(x, axis=0))
        tl.store(index_ptr, tl.argmin(x, axis=0, tie_break_left=True))

    out, index = torch.empty(1), torch.empty(1, dtype=torch.int32)
    reduce[(1,)](torch.tensor([3.0, 1.0, float("nan"), 2.0, 5.0, 6.0, 7.0, 8.0]), out, index)
    assert out.item() == 1.0 and index.item() == 3


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf·0 in the interpreter
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("poison", ["inf", "nan", "all-nan"])
def test_non_finite_previous_frame_never_picks_outside_the_candidates(backend, poison):
    prev, cand = make(3, 1000, 10)
    if poison == "all-nan":
        prev[1] = float("nan")
    else:
        prev[1, 5], prev[1, 700] = float("inf"), float(poison)
    index, coefficients, _ = search_frame_op(prev, cand, 10, None, 1, 0.1, "exact", 15, backend)
    assert ((index >= 0) & (index < 10)).all(), index
    clean = search_frame_op(prev[[0, 2]], cand[:, [0, 2]], 10, None, 1, 0.1, "exact", 15, backend)
    assert index[[0, 2]].tolist() == clean[0].tolist()  # the other videos are untouched
    frame = compose_op(prev, cand, index, coefficients, 10, None, 1, backend)
    assert torch.equal(frame[[0, 2]], compose_op(prev[[0, 2]], cand[:, [0, 2]], *clean[:2], 10, None, 1, backend))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_compose_clamps_the_index_from_raw_calls(backend):
    prev, cand = make(2, 1003, 4)
    fresh = torch.tensor([[0.0, 1.0, 0.0]] * 2, dtype=torch.float64)
    out = compose_op(prev, cand, torch.tensor([99, -5]), fresh, 4, None, 1, backend)
    torch.testing.assert_close(out[0], cand[3, 0])  # index R - 1
    torch.testing.assert_close(out[1], cand[0, 1])  # index 0


@pytest.mark.parametrize("count", [1, 10, 17, 64, 1000])
def test_search_kernel_any_candidate_count(count):
    """The search kernel loops over candidate columns in fixed-width chunks: any R, including the chunk edges."""
    prev, cand = make(2, 333, count, seed=count)
    for search in ("exact", "paper"):
        index, coefficients, kl = search_frame_op(prev, cand, count, None, 1, 0.05, search, 15, "triton")
        ref_index, ref_coefficients, ref_kl = reference.search_from_sums(*reference.kl_sums(prev, cand), 0.05, search,
                                                                         15, 333)
        assert index.tolist() == ref_index.tolist()
        torch.testing.assert_close(coefficients, ref_coefficients, rtol=0, atol=1e-6)
        torch.testing.assert_close(kl, ref_kl, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_strided_inputs_give_the_contiguous_result(backend):
    prev, cand = make(3, 2000, 6)
    strided_prev = torch.randn(3, 4000)[:, ::2]
    strided_prev.copy_(prev)
    strided_cand = cand.transpose(0, 1).contiguous().transpose(0, 1)  # [R, B, D] with B outermost in memory
    assert not strided_prev.is_contiguous() and not strided_cand.is_contiguous()
    for got, want in zip(search_frame_op(strided_prev, strided_cand, 6, None, 1, 0.1, "exact", 15, backend),
                         search_frame_op(prev, cand, 6, None, 1, 0.1, "exact", 15, backend)):
        assert torch.equal(got, want)
    index, coefficients, _ = search_frame_op(prev, cand, 6, None, 1, 0.1, "exact", 15, backend)
    assert torch.equal(compose_op(strided_prev, strided_cand, index, coefficients, 6, None, 1, backend),
                       compose_op(prev, cand, index, coefficients, 6, None, 1, backend))
    assert torch.equal(kl_sums_op(strided_prev, strided_cand, backend)[1], kl_sums_op(prev, cand, backend)[1])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p, c, i, a: torch.ops.zs2.kl_sums(p, c, "bogus"), ValueError, "backend"),
        (lambda p, c, i, a: torch.ops.zs2.kl_sums(p[0], c, "torch"), ValueError, "prev"),
        (lambda p, c, i, a: torch.ops.zs2.kl_sums(p, c[:, :1], "torch"), ValueError, "candidates"),
        (lambda p, c, i, a: torch.ops.zs2.kl_sums(p, c.half(), "torch"), TypeError, "candidates"),
        (lambda p, c, i, a: torch.ops.zs2.search_frame(p, c, 6, None, 1, 0.1, "exact", 15, "triton"), ValueError,
         "num_candidates"),
        (lambda p, c, i, a: torch.ops.zs2.search_frame(p, c, 4, None, 1, -0.1, "exact", 15, "torch"), ValueError,
         "noise_lambda"),
        (lambda p, c, i, a: torch.ops.zs2.search_frame(p, c, 4, None, 1, 0.1, "fast", 15, "torch"), ValueError,
         "search"),
        (lambda p, c, i, a: torch.ops.zs2.search_frame(p, c, 4, None, 1, 0.1, "paper", -1, "torch"), ValueError,
         "line_steps"),
        (lambda p, c, i, a: torch.ops.zs2.search_frame(p, None, 4, None, 1, 0.1, "exact", 15, "triton"), ValueError,
         "seeds"),
        (lambda p, c, i, a: torch.ops.zs2.search_frame(p, None, 4, torch.tensor([1, 2]), 1, 0.1, "exact", 15,
                                                       "torch"), ValueError, "triton"),
        (lambda p, c, i, a: torch.ops.zs2.compose(p, c, i[:1], a, 4, None, 1, "torch"), ValueError, "index"),
        (lambda p, c, i, a: torch.ops.zs2.compose(p, c, i, a.float(), 4, None, 1, "triton"), ValueError,
         "coefficients"),
        (lambda p, c, i, a: torch.ops.zs2.compose(p, c, i, a[:, :2], 4, None, 1, "torch"), ValueError,
         r"coefficients must be a torch.float64 tensor of shape \(2, 3\)"),
        (lambda p, c, i, a: torch.ops.zs2.compose(p, c, i, a, 4, None, -1, "torch"), ValueError, "frame"),
    ],
)
def test_raw_ops_validate_their_arguments(call, error, match):
    """Whoever calls them (torch.ops.zs2.*), the ops refuse what would read out of bounds or compute nonsense."""
    prev, cand = make(2, 50, 4)
    with pytest.raises(error, match=match):
        call(prev, cand, torch.tensor([0, 1]), torch.tensor([[0.5, 0.5, 0.0]] * 2, dtype=torch.float64))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_compose_with_tilt_zero_stays_finite_where_exp_overflows(backend):
    """The paper's step (tilt 0) on a previous frame beyond exp's float32 range: no inf·0 = NaN; a NaN coefficient
    from a raw call gives a NaN row for its video only."""
    prev, cand = make(3, 100, 3)
    prev[:, 7] = 100.0
    coefficients = torch.tensor([[0.6, 0.8, 0.0], [float("nan"), 0.5, 0.0], [0.6, 0.8, 0.0]], dtype=torch.float64)
    out = compose_op(prev, cand, torch.tensor([1, 2, 0]), coefficients, 3, None, 1, backend)
    assert out[[0, 2]].isfinite().all() and out[1].isnan().all()
    torch.testing.assert_close(out[0], (0.6 * prev[0].double() + 0.8 * cand[1, 0].double()).float())


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_inputs_that_require_grad_are_detached(backend):
    prev, cand = make(2, 100, 3)
    got = search_frame_op(prev.requires_grad_(), cand.requires_grad_(), 3, None, 1, 0.1, "exact", 15, backend)
    want = search_frame_op(prev.detach(), cand.detach(), 3, None, 1, 0.1, "exact", 15, backend)
    for g, w in zip(got, want):
        assert torch.equal(g, w) and not g.requires_grad
    out = compose_op(prev, cand, *want[:2], 3, None, 1, backend)
    assert not out.requires_grad and not any(t.requires_grad for t in kl_sums_op(prev, cand, backend))


def test_raw_calls_on_meta_tensors_validate_and_give_shapes():
    prev, cand = (t.to("meta") for t in make(2, 50, 4))
    with pytest.raises(ValueError, match="candidates"):
        torch.ops.zs2.kl_sums(prev, cand[:, :1], "torch")
    with pytest.raises(ValueError, match="noise_lambda"):
        torch.ops.zs2.search_frame(prev, cand, 4, None, 1, -0.1, "exact", 15, "torch")
    a_sum, c_sum, e_sum = torch.ops.zs2.kl_sums(prev, cand, "torch")
    assert a_sum.shape == e_sum.shape == (2,) and c_sum.shape == (2, 4) and c_sum.is_meta and e_sum.is_meta
    index, coefficients, kl = torch.ops.zs2.search_frame(prev, cand, 4, None, 1, 0.1, "exact", 15, "torch")
    assert coefficients.shape == (2, 3) and coefficients.dtype == torch.float64 and coefficients.is_meta


def test_ops_refuse_a_backend_that_cannot_run_on_the_device(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    prev, cand = make(2, 50, 4)
    with pytest.raises(RuntimeError, match="triton"):
        kl_sums_op(prev, cand, "triton")
    with pytest.raises(RuntimeError, match="cuda"):
        torch.ops.zs2.search_frame(prev, cand, 4, None, 1, 0.1, "exact", 15, "cuda")
    # the Philox candidates are Triton's: on CPU tensors without the interpreter Triton raised "0 active drivers"
    with pytest.raises(RuntimeError, match="backend='triton' cannot run: tensors are on cpu"):
        torch.ops.zs2.philox_normal(torch.zeros(2, dtype=torch.int64), 0, 1, 4)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("search", ["exact", "paper"])
def test_backends_agree_when_exp_of_the_previous_frame_overflows(search):
    """A previous frame beyond float32 exp's range (|p| > 88) has no finite statistic: every backend takes the same
    step (the exact search keeps the frame: A = inf), never a NaN coefficient."""
    prev, cand = make(3, 500, 8)
    prev[1, 3] = 100.0
    prev[2] *= 50
    got = search_frame_op(prev, cand, 8, None, 1, 0.1, search, 15, "triton")
    want = search_frame_op(prev, cand, 8, None, 1, 0.1, search, 15, "torch")
    assert got[0].tolist() == want[0].tolist()
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=1e-5, equal_nan=True)
    assert not want[1].isnan().any()
