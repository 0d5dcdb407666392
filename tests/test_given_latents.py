"""sample_video(latents=...): the caller's initial noise, as diffusers pipelines take it, in every mode."""

import numpy as np
import pytest
import torch

import zs2_kernels

from tiny_pipelines import tiny_pipeline

FAST = dict(num_inference_steps=2, progress=False, output_type="latent")
FRAMES = 5


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline("sd15")


def noise(pipe, videos=1, seed=3, **kwargs):
    return zs2_kernels.initial_latents(pipe, FRAMES, num_videos=videos, seed=seed, dtype=torch.float32, **kwargs)


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a"])
def test_initial_latents_given_back_give_the_seeded_video(pipe, scheduler):
    """Both layouts ([V·F, c, h, w] and [V, F, c, h, w]), two videos, a deterministic and a stochastic scheduler
    (whose step noise still comes from ``seed``): the same video as drawing the noise from ``seed``."""
    common = dict(num_frames=FRAMES, seed=3, scheduler=scheduler, **FAST)
    drawn = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], **common)
    given = noise(pipe, videos=2)
    flat = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], latents=given, **common)
    stacked = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], latents=given.view(2, FRAMES, *given.shape[1:]),
                                       **common)
    torch.testing.assert_close(flat.frames, drawn.frames, rtol=0, atol=0)
    torch.testing.assert_close(stacked.frames, drawn.frames, rtol=0, atol=0)
    # The statistics of the given noise: its correlations equal the drawn chain's; no search ran.
    assert flat.stats["initial_noise"] == "given" and drawn.stats["initial_noise"] == "dependency"
    np.testing.assert_allclose(flat.stats["correlation"], drawn.stats["correlation"], rtol=1e-6)
    np.testing.assert_allclose(flat.stats["correlation_first"], drawn.stats["correlation_first"], rtol=1e-6)
    assert "alpha" not in flat.stats and "achieved_kl" not in flat.stats


def test_given_latents_are_used_and_not_changed(pipe):
    """Other noise gives another video; the caller's tensor is left as it was; fp16 latents are upcast as they
    are (the video of their rounded values)."""
    given = noise(pipe)
    kept = given.clone()
    common = dict(num_frames=FRAMES, **FAST)
    video = zs2_kernels.sample_video(pipe, "a cat", latents=given, **common).frames
    assert torch.equal(given, kept)
    other = zs2_kernels.sample_video(pipe, "a cat", latents=noise(pipe, seed=4), **common).frames
    assert not torch.allclose(video, other)
    half = zs2_kernels.sample_video(pipe, "a cat", latents=given.half(), **common).frames
    rounded = zs2_kernels.sample_video(pipe, "a cat", latents=given.half().float(), **common).frames
    torch.testing.assert_close(half, rounded, rtol=0, atol=0)
    # Without dependency noise (per-frame sampling) given latents are used just the same.
    off = zs2_kernels.sample_video(pipe, "a cat", latents=given, dependency_noise=False, momentum_attention=False,
                                   **common)
    assert off.stats["initial_noise"] == "given" and "noise_lambda" not in off.stats


def test_video_to_video_adds_the_given_noise(pipe):
    """With video= the latents are the noise added at the start timestep: the seeded edit's noise gives it back."""
    video = torch.rand(FRAMES, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    common = dict(video=video, strength=0.5, seed=3, **FAST)
    drawn = zs2_kernels.sample_video(pipe, "a cat", **common).frames
    given = zs2_kernels.sample_video(pipe, "a cat", latents=noise(pipe), **common).frames
    torch.testing.assert_close(given, drawn, rtol=0, atol=0)


def test_image_to_video_keeps_frame_zero_the_images_noise(pipe):
    """With image= frame 0 is the image's inverted noise whatever latents[0] holds, and frames 1.. are the given
    frames as they are."""
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    common = dict(image=image, num_frames=FRAMES, **FAST)
    given = noise(pipe)
    base = zs2_kernels.sample_video(pipe, "a cat", latents=given, **common)
    other_first = given.clone()
    other_first[0] = torch.randn(other_first[0].shape, generator=torch.Generator().manual_seed(9))
    same = zs2_kernels.sample_video(pipe, "a cat", latents=other_first, **common).frames
    torch.testing.assert_close(same, base.frames, rtol=0, atol=0)
    other_last = given.clone()
    other_last[-1] = -other_last[-1]
    changed = zs2_kernels.sample_video(pipe, "a cat", latents=other_last, **common).frames
    assert not torch.allclose(changed[0, -1], base.frames[0, -1])
    assert base.stats["initial_noise"] == "given" and len(base.stats["correlation_first"][0]) == FRAMES - 1


@pytest.mark.parametrize("latents, error, match", [
    ([[0.0]], TypeError, "latents must be a torch.Tensor"),
    (torch.zeros(FRAMES, 4, 8, 8, dtype=torch.int64), TypeError, "latents must have dtype float32"),
    (torch.zeros(4, 8, 8), ValueError, r"latents must be \[videos · frames, c, h, w\]"),
    (torch.full((FRAMES, 4, 8, 8), float("nan")), ValueError, "latents must be finite"),
    (torch.zeros(FRAMES + 1, 4, 8, 8), ValueError, r"latents must have shape \(5, 4, 8, 8\) or \(1, 5, 4, 8, 8\) "
                                                   r"\(1 videos x num_frames=5"),
    (torch.zeros(FRAMES, 3, 8, 8), ValueError, "the model's 4 latent channels at 8 x 8"),
])
def test_bad_latents_are_refused_naming_the_expected_shape(pipe, latents, error, match):
    with pytest.raises(error, match=match):
        zs2_kernels.sample_video(pipe, "a cat", num_frames=FRAMES, latents=latents, **FAST)
