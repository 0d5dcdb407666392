"""seed=[...]: one seed per video, so a job's noise is fixed by its own seed whatever it is batched with."""

import pytest
import torch

import zs2_kernels
from zs2_kernels.seeds import check_seeds, stream_seed, video_seeds

from tiny_pipelines import tiny_pipeline

FAST = dict(num_frames=4, num_inference_steps=2, progress=False, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline("sd15")


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a"])
@pytest.mark.parametrize("dependency_noise", [True, False], ids=["chain", "independent"])
def test_each_video_is_what_its_seed_gives_alone(pipe, scheduler, dependency_noise):
    """Video v of seed=[a, b, c] is the video seed=that-seed makes alone, in any order and batch (initial noise and
    a stochastic scheduler's step noise alike, also without dependency noise, whose step noise came from the
    global RNG before: not reproducible); seed=[s] is seed=s."""
    common = dict(scheduler=scheduler, dependency_noise=dependency_noise, momentum_attention=False, **FAST)
    batch = zs2_kernels.sample_video(pipe, ["a cat", "a dog", "a cow"], seed=[7, 3, 7], **common).frames
    for video, (prompt, seed) in enumerate([("a cat", 7), ("a dog", 3), ("a cow", 7)]):
        alone = zs2_kernels.sample_video(pipe, prompt, seed=seed, **common).frames[0]
        listed = zs2_kernels.sample_video(pipe, prompt, seed=[seed], **common).frames[0]
        torch.testing.assert_close(batch[video], alone, rtol=1e-5, atol=1e-5)
        assert torch.equal(listed, alone)
    swapped = zs2_kernels.sample_video(pipe, ["a dog", "a cat"], seed=[3, 7], **common).frames
    torch.testing.assert_close(swapped[1], batch[0], rtol=1e-5, atol=1e-5)


def test_seed_lists_in_the_noise_api():
    """dependency_noise and the seed helpers: a list entry is its seed's only video; per-video step streams."""
    one = zs2_kernels.dependency_noise((1, 3, 8), 0.1, seed=5)
    two = zs2_kernels.dependency_noise((2, 3, 8), 0.1, seed=[9, 5])
    assert torch.equal(two[1], one[0]) and not torch.equal(two[0], one[0])
    assert video_seeds([5], 1) == video_seeds(5, 1)
    assert stream_seed([5, 9], 2) == [stream_seed(5, 2), stream_seed(9, 2)]
    assert check_seeds((1, 2), 2) == [1, 2]


@pytest.mark.parametrize("seed, error, match", [
    ([1, 2], ValueError, r"a seed list needs one seed per video \(3\), got 2"),
    ([], ValueError, "a seed list needs one seed per video"),
    ([1, -2, 3], ValueError, r"seed\[1\]: seed must be in \[0, 2\*\*63\)"),
    ([1, 2.5, 3], TypeError, r"seed\[1\]: seed must be an int"),
    ([1, True, 3], TypeError, r"seed\[1\]: seed must be an int"),
])
def test_bad_seed_lists_are_refused_before_any_work(pipe, seed, error, match):
    with pytest.raises(error, match=match):
        zs2_kernels.sample_video(pipe, ["a", "b", "c"], seed=seed, **FAST)


def test_video_mode_takes_one_int_seed(pipe):
    with pytest.raises(TypeError, match=r"video_mode takes one int seed .*sample_video\(seed=\[...\]\)"):
        with zs2_kernels.video_mode(pipe, 4, seed=[1, 2]):
            pass
