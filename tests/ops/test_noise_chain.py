"""dependency_noise: statistics, lambda targets, the paper's trajectory, backends, edge values, bad input."""

import math

import pytest
import torch

import zs2_kernels
from zs2_kernels.ops.noise import reference
from zs2_kernels.seeds import video_seeds

BACKENDS = ["torch", "triton"]


def measured_kl(noise):
    """The paper's KL statistic between adjacent frames, measured on the output tensor, [B, F-1]."""
    flat = noise.double().flatten(2)
    return reference.kl_statistic(flat[:, 1:], flat[:, :-1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("noise_lambda", [0.001, 0.01, 0.1, 1.0])
def test_exact_search_hits_lambda(backend, noise_lambda):
    noise, stats = zs2_kernels.dependency_noise((2, 4, 4, 32, 32), noise_lambda, seed=3, return_stats=True,
                                                backend=backend)
    assert (measured_kl(noise) - noise_lambda).abs().max() < 1e-4
    assert (stats["achieved_kl"] - noise_lambda).abs().max() < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_are_standard_normal_and_correlation_is_sqrt_alpha(backend):
    noise, stats = zs2_kernels.dependency_noise((2, 6, 4, 64, 64), 0.1, seed=11, return_stats=True,
                                                backend=backend)
    per_frame = noise.flatten(2)
    assert per_frame.mean(-1).abs().max() < 0.03
    assert (per_frame.std(-1) - 1).abs().max() < 0.03
    pearson = torch.stack([torch.corrcoef(per_frame[b, f:f + 2])[0, 1] for b in range(2) for f in range(5)])
    torch.testing.assert_close(stats["correlation"].flatten().float(), pearson, rtol=0, atol=2e-3)
    assert (stats["correlation"] - stats["alpha"].sqrt()).abs().max() < 0.03


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("search", ["paper", "exact"])
def test_reproduces_literal_chain_on_same_candidates(backend, search):
    """With a generator the candidates are known: the whole chain equals the paper's literal search."""
    shape, count = (3, 5, 2, 9, 11), 10
    noise, stats = zs2_kernels.dependency_noise(shape, 0.1, search=search, generator=torch.Generator().manual_seed(5),
                                                return_stats=True, backend=backend)
    gen = torch.Generator().manual_seed(5)
    first = torch.randn(3, 198, generator=gen)
    candidates = [torch.randn(count, 3, 198, generator=gen) for _ in range(4)]
    lit_noise, lit_alpha, lit_kl, lit_index = reference.dependency_noise_literal(first, candidates, 0.1, search, 15)
    assert stats["candidate_index"].tolist() == lit_index.tolist()
    torch.testing.assert_close(stats["alpha"], lit_alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(noise.flatten(2).double(), lit_noise, rtol=0, atol=1e-5)


def test_paper_mode_default_lambda_is_not_a_still_video():
    """The published search at its own lambda = 0.01 on SD-sized latents stops at alpha = 0.98 (its float32 steps
    reach 1.0000001, which is rejected), so frames stay distinct; the old clamped version gave alpha = 1."""
    noise, stats = zs2_kernels.dependency_noise((2, 4, 4, 64, 64), 0.01, search="paper", seed=0, return_stats=True)
    torch.testing.assert_close(stats["alpha"], torch.full_like(stats["alpha"], 0.98), rtol=0, atol=1e-6)
    assert not torch.equal(noise[:, 0], noise[:, 1])
    assert (stats["correlation"] - 0.98**0.5).abs().max() < 0.01


@pytest.mark.parametrize("backend", BACKENDS)
def test_lambda_zero_gives_identical_frames(backend):
    noise, stats = zs2_kernels.dependency_noise((2, 5, 3, 7), 0.0, seed=1, return_stats=True, backend=backend)
    assert torch.equal(noise, noise[:, :1].expand_as(noise))
    assert stats["alpha"].eq(1).all() and stats["achieved_kl"].eq(0).all()


@pytest.mark.filterwarnings("ignore:noise_lambda=1000000.0 was out of reach")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("search", ["paper", "exact"])
def test_huge_lambda_gives_independent_frames(backend, search):
    noise, stats = zs2_kernels.dependency_noise((2, 4, 4, 32, 32), 1e6, search=search, seed=2, return_stats=True,
                                                backend=backend)
    assert torch.isfinite(noise).all()
    assert stats["alpha"].eq(0).all()
    assert stats["correlation"].abs().max() < 0.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_and_one_element(backend):
    noise, stats = zs2_kernels.dependency_noise((3, 1, 4, 8), seed=0, return_stats=True, backend=backend)
    assert noise.shape == (3, 1, 4, 8) and stats["alpha"].shape == (3, 0)
    noise, stats = zs2_kernels.dependency_noise((2, 4), 0.1, seed=0, return_stats=True, backend=backend)
    assert noise.shape == (2, 4) and torch.isfinite(noise).all() and torch.isfinite(stats["correlation"]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_output_dtype(dtype):
    noise = zs2_kernels.dependency_noise((1, 3, 4, 8, 8), 0.1, seed=0, dtype=dtype)
    assert noise.dtype == dtype and torch.isfinite(noise.float()).all()


def test_backends_agree_on_the_same_generator():
    kwargs = dict(shape=(2, 4, 4, 16, 16), noise_lambda=0.05, return_stats=True)
    a, sa = zs2_kernels.dependency_noise(**kwargs, generator=torch.Generator().manual_seed(9), backend="torch")
    b, sb = zs2_kernels.dependency_noise(**kwargs, generator=torch.Generator().manual_seed(9), backend="triton")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert sa["backend"] == "torch" and sb["backend"] == "triton"


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_noise_different_seed_different_noise(backend):
    a = zs2_kernels.dependency_noise((1, 3, 4, 8, 8), 0.1, seed=4, backend=backend)
    b = zs2_kernels.dependency_noise((1, 3, 4, 8, 8), 0.1, seed=4, backend=backend)
    c = zs2_kernels.dependency_noise((1, 3, 4, 8, 8), 0.1, seed=5, backend=backend)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_larger_lambda_lowers_correlation():
    corr = [zs2_kernels.dependency_noise((2, 4, 4, 32, 32), lam, seed=0, return_stats=True)[1]["correlation"].mean()
            for lam in (0.001, 0.01, 0.1, 1.0)]
    assert corr[0] > corr[1] > corr[2] > corr[3]


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(noise_lambda=-0.1), ValueError, "noise_lambda"),
        (dict(noise_lambda=float("nan")), ValueError, "noise_lambda"),
        (dict(noise_lambda=float("inf")), ValueError, "noise_lambda"),
        (dict(noise_lambda="big"), TypeError, "noise_lambda"),
        (dict(shape=(2, 0, 4)), ValueError, "shape"),
        (dict(shape=(2,)), ValueError, "shape"),
        (dict(shape=(2, 3.0, 4)), TypeError, "shape"),
        (dict(shape=()), ValueError, "shape"),
        (dict(search="fast"), ValueError, "search"),
        (dict(random_candidates=0), ValueError, "random_candidates"),
        (dict(line_steps=-1), ValueError, "line_steps"),
        (dict(dtype=torch.int32), TypeError, "dtype"),
        (dict(seed=1, generator=torch.Generator()), ValueError, "generator"),
        (dict(seed=-3), ValueError, "seed"),
        (dict(generator="cpu"), TypeError, "generator"),
        (dict(backend="triton", device="cpu", search="warp"), ValueError, "search"),
    ],
)
def test_bad_input(kwargs, error, name):
    kwargs.setdefault("shape", (2, 3, 4))
    with pytest.raises(error, match=name):
        zs2_kernels.dependency_noise(**kwargs)


@pytest.mark.parametrize("search", ["exact", "paper"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_video_does_not_depend_on_the_batch(backend, search):
    """Video v's noise depends only on (seed, v): alone, or with any number of videos beside it."""
    shape = (4, 5, 4, 8, 8)
    batch = zs2_kernels.dependency_noise(shape, 0.05, search=search, seed=11, backend=backend)
    for size in (1, 2, 3):
        smaller = zs2_kernels.dependency_noise((size, *shape[1:]), 0.05, search=search, seed=11, backend=backend)
        assert torch.equal(smaller, batch[:size])
    assert not torch.equal(batch[0], batch[1])  # distinct videos get distinct streams


def test_video_seeds_are_independent_of_neighbouring_seeds():
    # seed + v would make seed 0's second video equal to seed 1's first.
    assert video_seeds(0, 2)[1] != video_seeds(1, 1)[0]
    assert video_seeds(5, 3) == video_seeds(5, 4)[:3]
    assert all(0 <= s < 2**63 for s in video_seeds(2**40, 8))


def test_generator_list_gives_one_stream_per_video():
    def generators(n):
        return [torch.Generator().manual_seed(100 + v) for v in range(n)]

    pair = zs2_kernels.dependency_noise((2, 4, 3, 8), 0.1, generator=generators(2), backend="torch")
    alone = zs2_kernels.dependency_noise((1, 4, 3, 8), 0.1, generator=generators(1), backend="torch")
    assert torch.equal(pair[:1], alone)
    with pytest.raises(ValueError, match="one generator per video"):
        zs2_kernels.dependency_noise((2, 4, 3, 8), 0.1, generator=generators(3))


def test_numpy_scalars_are_accepted_like_python_numbers():
    import numpy as np
    want = zs2_kernels.dependency_noise((1, 3, 4, 8, 8), 0.1, seed=1, random_candidates=4)
    got = zs2_kernels.dependency_noise((np.int64(1), 3, 4, 8, 8), np.float32(0.1), seed=np.int64(1),
                                       random_candidates=np.int64(4))
    assert torch.equal(got, want.to(got.dtype)) or torch.allclose(got, want)
    x = torch.randn(2, 3, 4)
    assert torch.equal(zs2_kernels.momentum_update(x, np.float64(0.5)), zs2_kernels.momentum_update(x, 0.5))
    with pytest.raises(TypeError, match="seed"):
        zs2_kernels.dependency_noise((1, 2, 4), seed=np.bool_(True))


def test_dtype_names_and_devices_checked_like_sample_video():
    assert zs2_kernels.dependency_noise((1, 2, 4), seed=0, dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="device"):
        zs2_kernels.dependency_noise((1, 2, 4), seed=0, device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            zs2_kernels.dependency_noise((1, 2, 4), seed=0, device="cuda")


@pytest.mark.parametrize("backend", BACKENDS)
def test_given_first_frame_starts_the_literal_chain(backend):
    """first= (image-to-video: the image's inverted noise) is frame 0, and frames 1.. are the literal search from
    it on the same candidates as without it (frame 0's draw is still consumed)."""
    shape, count = (2, 4, 3, 5, 7), 10
    first = 1.5 * torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(1)) + 0.2  # not N(0, I)
    noise, stats = zs2_kernels.dependency_noise(shape, 0.05, generator=torch.Generator().manual_seed(5),
                                                first=first.half(), return_stats=True, backend=backend)
    gen = torch.Generator().manual_seed(5)
    torch.randn(2, 105, generator=gen)  # frame 0's draw, replaced by first
    candidates = [torch.randn(count, 2, 105, generator=gen) for _ in range(3)]
    lit_noise, lit_alpha, _, lit_index = reference.dependency_noise_literal(first.half().float().flatten(1),
                                                                            candidates, 0.05, "exact", 15)
    assert torch.equal(noise[:, 0], first.half().float())
    assert stats["candidate_index"].tolist() == lit_index.tolist()
    torch.testing.assert_close(stats["alpha"], lit_alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(noise.flatten(2).double(), lit_noise, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_chain_from_a_given_first_frame(backend):
    """With a seed the given frame replaces frame 0 only: the chain still hits lambda, and with lambda = 0 every frame
    is the given one."""
    first = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    noise, stats = zs2_kernels.dependency_noise((2, 5, 4, 8, 8), 0.01, seed=3, first=first, return_stats=True,
                                                backend=backend)
    assert torch.equal(noise[:, 0], first)
    assert (measured_kl(noise) - 0.01).abs().max() < 1e-4
    still = zs2_kernels.dependency_noise((2, 3, 4, 8, 8), 0.0, seed=3, first=first, backend=backend)
    assert torch.equal(still, first.unsqueeze(1).expand_as(still))


@pytest.mark.parametrize("first, error, match", [
    (torch.zeros(2, 4), ValueError, r"first must be one frame per video, shape \(2, 3\)"),
    (torch.zeros(3, 3), ValueError, "one frame per video"),
    (torch.full((2, 3), float("nan")), ValueError, "first must be finite"),
    (torch.zeros(2, 3, dtype=torch.int64), TypeError, "first must have dtype"),
    ([[0.0] * 3] * 2, TypeError, "first must be a torch.Tensor"),
    (torch.zeros(2, 3, device="meta"), ValueError, "first is on the meta device"),  # was Tensor.item()'s error
])
def test_bad_first_frame_is_refused_naming_it(first, error, match):
    with pytest.raises(error, match=match):
        zs2_kernels.dependency_noise((2, 4, 3), 0.1, seed=0, first=first)


def test_a_chain_that_cannot_fit_is_refused_before_any_work(monkeypatch):
    """The public op checks its own allocation: (1, 10**6, 4, 64, 64), 65 GB, ran silently for minutes."""
    from zs2_kernels.ops import free_memory

    monkeypatch.setattr(free_memory, "available_memory", lambda device: 2**20)
    with pytest.raises(MemoryError, match=r"dependency_noise of shape \(1, 100, 4, 64, 64\) needs about 0.01 GiB "
                                          r"but cpu has 0.00 GiB free; lower the videos \(B\) or frames \(F\)"):
        zs2_kernels.dependency_noise((1, 100, 4, 64, 64), seed=0)
    assert zs2_kernels.dependency_noise((1, 3, 4, 8, 8), seed=0).shape == (1, 3, 4, 8, 8)


@pytest.mark.parametrize("shape, videos, frames", [((4, 8, 8), 1000, 33), ((4, 64, 64), 40, 49)],
                         ids=["embedded-4x8x8", "sd-4x64x64"])
def test_the_default_chain_is_standard_normal_at_every_frame(shape, videos, frames):
    """DESIGN.md §1.1: the exact search's fresh noise has no component along exp(previous frame), so its choices
    cannot bias a frame: per-frame mean, variance and skew over many draws stay those of N(0, I) (the search that
    kept the candidate as drawn reached variance 1.28 and mean 0.13 by frame 16 on 4x8x8 latents, 1.044 at frame
    32 on 4x64x64), while every adjacent statistic is lambda."""
    noise, stats = zs2_kernels.dependency_noise((videos, frames, *shape), 0.01, seed=0, backend="torch",
                                                return_stats=True)
    per_frame = noise.flatten(2).double().transpose(0, 1).flatten(1)  # [F, videos * D]
    mean, variance = per_frame.mean(-1), per_frame.var(-1)
    skew = ((per_frame - mean[:, None]) ** 3).mean(-1) / variance**1.5
    assert mean.abs().max() < 0.02, mean
    assert (variance - 1).abs().max() < 0.03, variance
    assert skew.abs().max() < 0.05, skew
    assert (stats["achieved_kl"] - 0.01).abs().max() < 1e-9
    assert (measured_kl(noise) - 0.01).abs().max() < 1e-4


def test_an_unreachable_lambda_is_said_not_silently_missed(recwarn):
    """The attack found lambda = 50 silently ending at KL 1.6-3 (frames are independent there): the exact search
    warns, naming lambda and how many frame pairs missed it (also on 4-element frames, where a frame whose A is
    below lambda cannot reach it); a reachable lambda does not."""
    with pytest.warns(UserWarning, match=r"noise_lambda=50.0 was out of reach for 5 of 5 frame pairs"):
        zs2_kernels.dependency_noise((1, 6, 4, 8, 8), 50.0, seed=0)
    with pytest.warns(UserWarning, match=r"noise_lambda=0.01 was out of reach for 2 of 10 frame pairs"):
        zs2_kernels.dependency_noise((2, 6, 4, 1, 1), 0.01, seed=0)
    recwarn.clear()
    zs2_kernels.dependency_noise((2, 6, 4, 8, 8), 0.01, seed=0)
    zs2_kernels.dependency_noise((2, 6, 4, 8, 8), 0.0, seed=0)
    assert not [w for w in recwarn if "out of reach" in str(w.message)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_anchor_zero_is_the_unanchored_chain_bit_for_bit(backend):
    plain = zs2_kernels.dependency_noise((2, 9, 4, 8, 8), 0.1, seed=5, backend=backend)
    assert torch.equal(zs2_kernels.dependency_noise((2, 9, 4, 8, 8), 0.1, seed=5, backend=backend, noise_anchor=0.0),
                       plain)


@pytest.mark.parametrize("shape, videos, frames, noise_lambda", [((4, 8, 8), 300, 64, 0.1),
                                                                  ((4, 64, 64), 12, 40, 0.1)],
                         ids=["embedded-4x8x8", "sd-4x64x64"])
@pytest.mark.parametrize("anchor", [0.3, 0.7])
def test_the_anchored_chain_keeps_its_floor_lambda_and_unit_variance(shape, videos, frames, noise_lambda, anchor):
    """DESIGN.md §1.1, the anchored chain: every frame's correlation with frame 0 stays at least the anchor (in
    expectation: the fresh part adds ~1/sqrt(D) of noise per video), each adjacent statistic is lambda exactly
    and every frame stays N(0, I); unanchored, the correlation at the last frame is far below the floor."""
    noise, stats = zs2_kernels.dependency_noise((videos, frames, *shape), noise_lambda, seed=1, backend="torch",
                                                return_stats=True, noise_anchor=anchor)
    plain = zs2_kernels.dependency_noise((videos, frames, *shape), noise_lambda, seed=1, backend="torch",
                                         return_stats=True)[1]
    assert plain["correlation_first"][:, -1].mean() < anchor - 0.2  # the floor binds: without it frames wander
    to_first = stats["correlation_first"]
    assert to_first.mean(0).min() > anchor - 0.01, to_first.mean(0)
    assert to_first.min() > anchor - 6 / math.prod(shape) ** 0.5
    assert (stats["achieved_kl"] - noise_lambda).abs().max() < 1e-9
    per_frame = noise.flatten(2).double().transpose(0, 1).flatten(1)
    assert (per_frame.var(-1) - 1).abs().max() < 0.03 and per_frame.mean(-1).abs().max() < 0.02


def test_the_anchor_ties_frames_to_a_given_first_frame():
    """Image-to-video's chain starts at the inverted x_T (not N(0, I)): the floor is on the correlation with it."""
    first = 0.85 * torch.randn(50, 4, 8, 8, generator=torch.Generator().manual_seed(3)) + 0.15
    _, stats = zs2_kernels.dependency_noise((50, 48, 4, 8, 8), 0.1, seed=2, backend="torch", return_stats=True,
                                            noise_anchor=0.6, first=first)
    assert stats["correlation_first"].mean(0).min() > 0.59


def test_the_floor_wins_where_lambda_cannot_be_met_under_it():
    """A floor near 1 under a large lambda: the frames keep the floor, and the statistic's miss is said."""
    with pytest.warns(UserWarning, match="out of reach"):
        noise, stats = zs2_kernels.dependency_noise((20, 12, 4, 8, 8), 1.0, seed=0, backend="torch",
                                                    return_stats=True, noise_anchor=0.95)
    assert stats["correlation_first"].mean(0).min() > 0.94
    assert noise.flatten(2).double().var(dim=(0, 2)).sub(1).abs().max() < 0.05


def test_the_anchored_chain_is_the_same_on_every_backend_and_batch_independent():
    generator = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    torch_chain = zs2_kernels.dependency_noise((2, 10, 3, 50), 0.3, generator=generator(), backend="torch",
                                               noise_anchor=0.7)
    triton_chain = zs2_kernels.dependency_noise((2, 10, 3, 50), 0.3, generator=generator(), backend="triton",
                                                noise_anchor=0.7)
    torch.testing.assert_close(triton_chain, torch_chain, rtol=0, atol=1e-5)
    for backend in BACKENDS:  # Philox keys (Triton) or per-video generators: video 1 alone is video 1 of a batch
        batch = zs2_kernels.dependency_noise((3, 10, 3, 50), 0.3, seed=4, backend=backend, noise_anchor=0.7)
        alone = zs2_kernels.dependency_noise((2, 10, 3, 50), 0.3, seed=4, backend=backend, noise_anchor=0.7)
        assert torch.equal(batch[:2], alone), backend


@pytest.mark.parametrize("anchor, search, error, match", [
    (1.0, "exact", ValueError, r"noise_anchor must be in \[0, 1\)"), (-0.1, "exact", ValueError, "noise_anchor"),
    (float("nan"), "exact", ValueError, "noise_anchor"), ("0.5", "exact", TypeError, "noise_anchor"),
    (0.5, "paper", ValueError, "noise_anchor needs search='exact'")])
def test_bad_anchors_are_refused(anchor, search, error, match):
    with pytest.raises(error, match=match):
        zs2_kernels.dependency_noise((1, 3, 4), 0.1, seed=0, search=search, noise_anchor=anchor)


def test_the_documented_excess_variance_of_the_paper_chain():
    """DESIGN.md §1.1: the published search's choices depend on the previous frame, so its later frames are not
    N(0, I). Pins the documented size on small latents: if it changes, the docs' figures must change with it."""
    noise = zs2_kernels.dependency_noise((500, 17, 4, 8, 8), 0.01, search="paper", seed=0, backend="torch")
    noise = noise.flatten(2).double()
    variance, mean = noise.var(dim=(0, 2)), noise.mean(dim=(0, 2))
    assert abs(variance[0] - 1) < 0.03 and abs(mean[0]) < 0.02  # frame 0 is a plain draw
    assert 1.2 < variance[16] < 1.4 and 0.09 < mean[16] < 0.17
