"""``search="paper"`` against a port of the published pseudocode (tests/paper_pseudocode.py), run per video in
float32 on the same candidates: the same trials wherever float32 rounding cannot decide a comparison, the same
final alpha (the best evaluated one), and never NaN where the published code returns NaN frames."""

import math

import pytest
import torch

import zs2_kernels
from zs2_kernels.ops.noise import reference, search_frame_op

from paper_pseudocode import paper_search

LAMBDAS = [0.001, 0.01, 0.1, 1.0]
SHAPES = [(4, 8, 8), (4, 64, 64)]  # the embedded model's latents; SD1.5's at 512²
CANDIDATES, LINE_STEPS = 10, 15


def rounding_bound(error: float, bound: float) -> float:
    """How far apart two errors must be for float32 full-tensor means and our float64 sums of float32 partial
    sums to order them alike: 1e-5 absolute plus 1e-4 relative (float32 means over 16k terms round at ~1e-6)."""
    return 1e-5 + 1e-4 * max(abs(error), abs(bound))


def first_decided_by_rounding(result) -> int:
    """Index of the first line-stage comparison of the port within the rounding bound (len(trials) if none).

    Up to it the trials must be the same; later ones may differ (at lambda = 1 from about the eighth trial,
    where steps are below 1e-6, so the final alpha still agrees to 1e-6).
    """
    for position, (_, err, bound, _) in enumerate(result.trials):
        if not math.isnan(err) and abs(err - bound) <= rounding_bound(err, bound):
            return position
    return len(result.trials)


def frames(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    previous = torch.randn((1, *shape), generator=generator)
    candidates = torch.randn((CANDIDATES, 1, *shape), generator=generator)
    return previous, candidates


def random_stage_is_clear(previous, candidates, noise_lambda) -> bool:
    errors = sorted((reference.kl_statistic(c.flatten(1).double(), previous.flatten(1).double()) - noise_lambda)
                    .abs().item() for c in candidates)
    return errors[1] - errors[0] > rounding_bound(errors[0], errors[1])


def ours(previous, candidates, noise_lambda, backend):
    index, coefficients, kl = search_frame_op(previous.flatten(1), candidates.flatten(2), CANDIDATES, None, 1,
                                               noise_lambda, "paper", LINE_STEPS, backend)
    assert coefficients[0, 2] == 0  # the paper's step has no exp(p) term
    return index.item(), coefficients[0, 0].square().item(), kl.item()


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("noise_lambda", LAMBDAS)
@pytest.mark.parametrize("shape", SHAPES, ids=["4x8x8", "4x64x64"])
def test_same_choice_and_alpha_as_the_published_search(shape, noise_lambda, backend):
    compared = 0
    for seed in range(6):
        previous, candidates = frames(shape, seed)
        published = paper_search(previous, candidates, noise_lambda, LINE_STEPS)
        index, alpha, kl = ours(previous, candidates, noise_lambda, backend)
        assert 0 <= alpha <= 1 and math.isfinite(kl)
        if not random_stage_is_clear(previous, candidates, noise_lambda):
            continue
        compared += 1
        assert index == published.index
        assert alpha == pytest.approx(published.best_alpha, abs=1e-6)
    assert compared >= 4, f"only {compared} of 6 random stages were clear of rounding: the test compares too little"


@pytest.mark.parametrize("noise_lambda", LAMBDAS + [10.0])
def test_reference_takes_the_published_trials(noise_lambda):
    """The reference's line stage evaluates the published trial alphas (float32 trajectory), in order, up to
    the first comparison that float32 rounding decides."""
    for seed in range(4):
        previous, candidates = frames((4, 16, 16), seed)
        published = paper_search(previous, candidates, noise_lambda, LINE_STEPS)
        if not random_stage_is_clear(previous, candidates, noise_lambda):
            continue
        a_sum, c_sum, _ = reference.kl_sums(previous.flatten(1).double(), candidates.flatten(2).double())
        c_best = c_sum[:, published.index]
        evaluated = []

        def error(alpha):
            evaluated.append(alpha.item())
            return (reference.kl_of_composition(a_sum, c_best, alpha.sqrt()) - noise_lambda).abs()

        best = reference.paper_line_stage(error, (a_sum - c_best - noise_lambda).abs(), LINE_STEPS)
        same = first_decided_by_rounding(published) + 1
        assert evaluated[:same] == [min(max(alpha, 0.0), 1.0) for alpha, *_ in published.trials][:same]
        assert best.item() == pytest.approx(published.best_alpha, abs=1e-6)


def test_published_float32_facts():
    """What the published code does in float32 on SD-sized latents (recorded in docs): at lambda 0.01 ten
    accepted steps reach 1.0000001, whose error is NaN, so the search refines below 1 and returns ~0.98;
    above reach (lambda 10) rejections drive alpha negative and the returned frame is NaN. Ours: never NaN."""
    previous, candidates = frames((4, 64, 64), 0)
    small = paper_search(previous, candidates, 0.01, LINE_STEPS)
    overshoot = [alpha for alpha, err, _, _ in small.trials if alpha > 1]
    assert overshoot and all(math.isnan(err) for alpha, err, _, _ in small.trials if alpha > 1)
    assert overshoot[0] == pytest.approx(1.0000001, abs=1e-7)
    assert 0.95 < small.returned_alpha < 1 and torch.isfinite(small.frame).all()

    huge = paper_search(previous, candidates, 10.0, LINE_STEPS)
    assert huge.returned_alpha < 0 and torch.isnan(huge.frame).all()
    noise = zs2_kernels.dependency_noise((2, 6, 4, 64, 64), 10.0, search="paper", seed=0, backend="torch")
    assert torch.isfinite(noise).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_paper_chain_never_nan_at_any_lambda(backend):
    for noise_lambda in (0.0, 0.001, 0.01, 1.0, 10.0, 1e6):
        noise, stats = zs2_kernels.dependency_noise((2, 5, 4, 8, 8), noise_lambda, search="paper", seed=1,
                                                    return_stats=True, backend=backend)
        assert torch.isfinite(noise).all() and torch.isfinite(stats["achieved_kl"]).all()
        assert ((stats["alpha"] >= 0) & (stats["alpha"] <= 1)).all()
