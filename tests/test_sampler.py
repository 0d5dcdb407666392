"""sample_video end to end on tiny pipelines saved with save_pretrained and loaded back (offline)."""

import numpy as np
import pytest
import torch

import zs2_kernels
from zs2_kernels.sampling.sampler import _initial_latents

from helpers import DTYPE_IDS, DTYPES
from tiny_pipelines import tiny_pipeline

FAST = dict(num_frames=4, num_inference_steps=2, progress=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd15")
    tiny_pipeline("sd15").save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def pipe(model_dir):
    return zs2_kernels.load_pipeline(model_dir)


def test_load_pipeline_round_trip_offline(model_dir, pipe):
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert not list(model_dir.rglob("*.bin")), "weights must be saved as safetensors"
    original = tiny_pipeline("sd15")
    for name, tensor in original.unet.state_dict().items():
        torch.testing.assert_close(pipe.unet.state_dict()[name], tensor)


def test_load_sdxl_pipeline_and_sample(tmp_path):
    tiny_pipeline("sdxl").save_pretrained(tmp_path, safe_serialization=True)
    pipe = zs2_kernels.load_pipeline(tmp_path)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    out = zs2_kernels.sample_video(pipe, "a cat", seed=0, **FAST)
    assert out.frames.shape == (1, 4, 16, 16, 3) and np.isfinite(out.frames).all()


@pytest.mark.parametrize("output_type", ["np", "pt", "pil", "latent"])
def test_output_types(pipe, output_type):
    out = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], seed=0, output_type=output_type, **FAST)
    if output_type == "np":
        assert out.frames.shape == (2, 4, 16, 16, 3) and out.frames.dtype == np.float32
        assert 0 <= out.frames.min() and out.frames.max() <= 1
    elif output_type == "pt":
        assert out.frames.shape == (2, 4, 3, 16, 16)
    elif output_type == "pil":
        assert len(out.frames) == 2 and len(out.frames[0]) == 4 and out.frames[0][0].size == (16, 16)
    else:
        assert out.frames.shape == (2, 4, 4, 8, 8)
    stats = out.stats
    assert np.asarray(stats["achieved_kl"]).shape == (2, 3)
    assert abs(np.asarray(stats["achieved_kl"]) - 0.01).max() < 1e-4
    assert stats["backend"] == "torch" and set(stats["timings"]) >= {"encode_prompt", "denoise", "decode", "total"}


def test_same_seed_same_video_and_prompts_are_independent(pipe):
    first = zs2_kernels.sample_video(pipe, ["a cat", "a cat"], seed=3, **FAST).frames
    again = zs2_kernels.sample_video(pipe, ["a cat", "a cat"], seed=3, **FAST).frames
    other = zs2_kernels.sample_video(pipe, ["a cat", "a cat"], seed=4, **FAST).frames
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.allclose(first[0], first[1])  # same prompt, two videos: different noise chains


def test_generator_gives_same_video_as_itself(pipe):
    a = zs2_kernels.sample_video(pipe, "a cat", generator=torch.Generator().manual_seed(1), **FAST).frames
    b = zs2_kernels.sample_video(pipe, "a cat", generator=torch.Generator().manual_seed(1), **FAST).frames
    np.testing.assert_array_equal(a, b)


def test_generator_list_makes_each_video_independent_of_its_batch(pipe):
    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    pair = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], generator=gens(5, 6), **FAST).frames
    alone = zs2_kernels.sample_video(pipe, "a dog", generator=gens(6), **FAST).frames
    np.testing.assert_allclose(pair[1], alone[0], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="one generator per video"):
        zs2_kernels.sample_video(pipe, ["a cat", "a dog"], generator=gens(1), **FAST)


@pytest.mark.parametrize("dependency_noise", [True, False])
def test_seeded_video_is_the_same_alone_and_in_a_batch(pipe, dependency_noise):
    """With seed, video v depends only on (seed, v): a user who samples one video, then a batch that starts
    with it, gets it back."""
    alone = zs2_kernels.sample_video(pipe, "a cat", seed=8, dependency_noise=dependency_noise, **FAST)
    batch = zs2_kernels.sample_video(pipe, ["a cat", "a dog", "a cow"], seed=8, dependency_noise=dependency_noise,
                                     **FAST)
    np.testing.assert_allclose(batch.frames[0], alone.frames[0], rtol=0, atol=1e-5)
    if dependency_noise:
        assert batch.stats["alpha"][0] == alone.stats["alpha"][0]


def test_videos_per_prompt(pipe):
    out = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], num_videos_per_prompt=2, seed=0, **FAST)
    assert out.frames.shape[0] == 4
    assert not np.allclose(out.frames[0], out.frames[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_chunked_equals_unchunked(pipe, backend, dtype):
    """Bit for bit in every dtype: the momentum state carried between chunks is the unrounded float32 one."""
    model = pipe if dtype == torch.float32 else tiny_pipeline("sd15").to(dtype=dtype)
    kwargs = dict(num_frames=5, num_inference_steps=2, seed=0, progress=False, momentum=0.7, backend=backend,
                  output_type="latent")
    whole = zs2_kernels.sample_video(model, ["a cat", "a dog"], **kwargs).frames
    for frame_chunk in (1, 2):
        chunked = zs2_kernels.sample_video(model, ["a cat", "a dog"], frame_chunk=frame_chunk, **kwargs).frames
        assert torch.equal(chunked, whole), (frame_chunk, (chunked - whole).abs().max().item())


def test_compiled_unet_samples_the_eager_zs2_video():
    """A torch.compile'd UNet (the usual diffusers speed-up) still gets temporal momentum attention, chunked too."""
    eager, compiled = tiny_pipeline("sd15"), tiny_pipeline("sd15")
    compiled.unet = torch.compile(compiled.unet, backend="eager", dynamic=False)  # static shapes: traces faster
    for frame_chunk in (None, 2):
        kwargs = dict(seed=0, output_type="latent", frame_chunk=frame_chunk, **FAST)
        want = zs2_kernels.sample_video(eager, "a cat", **kwargs).frames
        got = zs2_kernels.sample_video(compiled, "a cat", **kwargs).frames
        plain = zs2_kernels.sample_video(eager, "a cat", momentum_attention=False, **kwargs).frames
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(got, plain, rtol=1e-4, atol=1e-4)


def test_momentum_changes_the_video_and_components_switch_off(pipe):
    base = dict(seed=0, output_type="latent", **FAST)
    full = zs2_kernels.sample_video(pipe, "a cat", **base).frames
    no_tma = zs2_kernels.sample_video(pipe, "a cat", momentum_attention=False, **base)
    no_dnm = zs2_kernels.sample_video(pipe, "a cat", dependency_noise=False, **base)
    assert not torch.allclose(full, no_tma.frames) and not torch.allclose(full, no_dnm.frames)
    assert "achieved_kl" not in no_dnm.stats and no_tma.stats["momentum"] is None


def test_128_frames_in_chunks(pipe):
    out = zs2_kernels.sample_video(pipe, "a cat", num_frames=128, frame_chunk=32, num_inference_steps=1, seed=0,
                                   progress=False, decode_chunk_size=32)
    assert out.frames.shape == (1, 128, 16, 16, 3) and np.isfinite(out.frames).all()


@pytest.mark.parametrize("guidance_scale", [0.0, 1.0])
def test_no_guidance_works(pipe, guidance_scale):
    out = zs2_kernels.sample_video(pipe, "a cat", guidance_scale=guidance_scale, seed=0, **FAST)
    assert out.frames.shape == (1, 4, 16, 16, 3)


def test_processors_restored_after_success_and_error(pipe):
    before = dict(pipe.unet.attn_processors)

    def boom(*args):
        assert zs2_kernels.is_installed(pipe.unet)
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        zs2_kernels.sample_video(pipe, "a cat", callback_on_step_end=boom, seed=0, **FAST)
    assert dict(pipe.unet.attn_processors) == before
    zs2_kernels.sample_video(pipe, "a cat", seed=0, **FAST)
    assert dict(pipe.unet.attn_processors) == before and not zs2_kernels.is_installed(pipe.unet)


def test_callback_can_replace_latents(pipe):
    seen = []

    def zero_latents(pipeline, step, timestep, tensors):
        seen.append(step)
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = zs2_kernels.sample_video(pipe, "a cat", callback_on_step_end=zero_latents, seed=0, output_type="latent",
                                   **FAST)
    assert seen == [0, 1] and out.frames.abs().max() == 0


def test_nan_latents_raise_instead_of_returning_black_frames(pipe):
    def poison(pipeline, step, timestep, tensors):
        return {"latents": torch.full_like(tensors["latents"], float("nan"))}

    # The advice names the scheduler and steps too: the attack's UniPC at 999 steps diverged whatever the guidance.
    with pytest.raises(FloatingPointError, match="NaN.*another scheduler .* or a smaller guidance_scale"):
        zs2_kernels.sample_video(pipe, "a cat", callback_on_step_end=poison, seed=0, **FAST)
    assert not zs2_kernels.is_installed(pipe.unet)


def test_dependency_noise_raises_adjacent_similarity_and_lambda_lowers_it():
    def adjacent_similarity(latents):
        flat = latents.flatten(2)
        return torch.nn.functional.cosine_similarity(flat[:, 1:], flat[:, :-1], dim=-1).mean().item()

    shape = (2, 6, 4, 8, 8)
    common = dict(search="exact", generator=None, seed=0, device="cpu", backend="torch")
    iid, _ = _initial_latents(shape, use_dependency_noise=False, noise_lambda=0.01, **common)
    correlated = [adjacent_similarity(_initial_latents(shape, use_dependency_noise=True, noise_lambda=lam,
                                                       **common)[0]) for lam in (0.01, 0.1, 1.0)]
    assert correlated[0] > correlated[1] > correlated[2] > adjacent_similarity(iid)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(prompt=""), ValueError, "prompt"),
        (dict(prompt=3), TypeError, "prompt"),
        (dict(prompt=[]), TypeError, "prompt"),
        (dict(num_frames=0), ValueError, "num_frames"),
        (dict(height=17), ValueError, "height"),
        (dict(width=31, height=16), ValueError, "width"),
        (dict(num_inference_steps=0), ValueError, "num_inference_steps"),
        (dict(guidance_scale=-1), ValueError, "guidance_scale"),
        (dict(noise_lambda=-0.5), ValueError, "noise_lambda"),
        (dict(momentum=1.2), ValueError, "momentum"),
        (dict(frame_chunk=0), ValueError, "frame_chunk"),
        (dict(output_type="gif"), ValueError, "output_type"),
        (dict(search="fast"), ValueError, "search"),
        (dict(negative_prompt=["a", "b", "c"]), ValueError, "negative_prompt"),
        (dict(prompt=["a", "b"], negative_prompt=["x"]), ValueError, "negative_prompt"),
        (dict(negative_prompt=3), TypeError, "negative_prompt"),
        (dict(seed=1, generator=torch.Generator()), ValueError, "seed"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=2**63), ValueError, "seed"),
        (dict(seed=2**70), ValueError, "seed"),
        (dict(seed=1.0), TypeError, "seed"),
        (dict(guidance_scale=float("inf")), ValueError, "guidance_scale"),
        (dict(guidance_scale=1e30), ValueError, "guidance_scale"),
        (dict(dtype="float64"), ValueError, "dtype"),
        (dict(dtype=torch.float64), TypeError, "dtype"),
        (dict(device="tpu"), ValueError, "device"),
        (dict(device="meta"), ValueError, "device"),
        (dict(device="cuda:7"), ValueError, "device"),
        pytest.param(dict(device="cuda"), ValueError, "device",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="refused only without CUDA")),
    ],
)
def test_bad_input(pipe, kwargs, error, name):
    params = dict(prompt="a cat", num_frames=2, num_inference_steps=1, progress=False)
    params.update(kwargs)
    with pytest.raises(error, match=name):
        zs2_kernels.sample_video(pipe, **params)


def test_missing_model_paths_say_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zs2_kernels.load_pipeline(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        zs2_kernels.load_pipeline(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zs2_kernels.sample_video("./no/such/model", "a cat", progress=False)


def test_progress_bar_is_the_pipelines_own(pipe, capsys):
    """The denoising bar is diffusers' (so set_progress_bar_config works); progress=False shows none."""
    fast = {**FAST, "progress": True}
    try:
        pipe.set_progress_bar_config(disable=False)
        zs2_kernels.sample_video(pipe, "a cat", seed=0, **fast)
        assert "100%" in capsys.readouterr().err
        pipe.set_progress_bar_config(disable=True)
        zs2_kernels.sample_video(pipe, "a cat", seed=0, **fast)
        assert "100%" not in capsys.readouterr().err
        pipe.set_progress_bar_config(disable=False)
        zs2_kernels.sample_video(pipe, "a cat", seed=0, **FAST)
        assert "100%" not in capsys.readouterr().err
    finally:
        pipe.set_progress_bar_config(disable=False)


def test_negative_prompt_string_or_one_per_prompt_changes_the_result(pipe):
    """A string applies to every prompt (same as a list repeating it); either changes the video."""
    kwargs = dict(seed=0, guidance_scale=4.0, output_type="latent", **FAST)
    plain = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], **kwargs).frames
    string = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], negative_prompt="blurry", **kwargs).frames
    listed = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], negative_prompt=["blurry", "blurry"], **kwargs).frames
    per_prompt = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], negative_prompt=["blurry", "a cow"], **kwargs)
    torch.testing.assert_close(string, listed, rtol=0, atol=0)
    assert (string - plain).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-3
    torch.testing.assert_close(per_prompt.frames[0], string[0], rtol=0, atol=0)
    assert (per_prompt.frames[1] - string[1]).abs().max() > 1e-3


def test_seeds_use_all_63_bits(pipe):
    """seed=0 and seed=2**32 (equal in their low 32 bits) give different videos; 2**63 - 1 is accepted."""
    kwargs = dict(output_type="latent", **FAST)
    low = zs2_kernels.sample_video(pipe, "a cat", seed=0, **kwargs).frames
    high = zs2_kernels.sample_video(pipe, "a cat", seed=2**32, **kwargs).frames
    assert (low - high).abs().max() > 1e-3
    zs2_kernels.sample_video(pipe, "a cat", seed=2**63 - 1, dependency_noise=False, **kwargs)
    with pytest.raises(ValueError, match="seed"):
        zs2_kernels.dependency_noise((1, 2, 4), seed=2**63)


@pytest.mark.parametrize("name", ["bfloat16", "bf16"])
def test_dtype_names_are_accepted_and_the_callers_pipeline_is_given_back_unchanged(model_dir, name):
    """dtype="bfloat16" runs in bfloat16; the float32 pipeline passed in comes back bit for bit, also after an
    error mid-run (a cast down and back up would round its weights)."""
    pipe = zs2_kernels.load_pipeline(model_dir)
    before = {key: value.clone() for key, value in pipe.unet.state_dict().items()}
    out = zs2_kernels.sample_video(pipe, "a cat", seed=0, dtype=name, **FAST)
    assert out.stats["dtype"] == "bfloat16"

    def boom(*args):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        zs2_kernels.sample_video(pipe, "a cat", seed=0, dtype=name, callback_on_step_end=boom, **FAST)
    assert all(module.dtype == torch.float32 for module in (pipe.unet, pipe.vae, pipe.text_encoder))
    for key, value in pipe.unet.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
