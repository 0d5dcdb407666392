"""video_mode on diffusers' own pipelines (tiny, from config): equal to Text2Video-Zero's documented recipe at
mu = 1 and to the plain pipeline at mu = 0 on the same initial noise; the noise drawn inside is the dependency
chain; everything restored afterwards."""

import pytest
import torch
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
    CrossFrameAttnProcessor2_0,
)

import zs2_kernels
from zs2_kernels.seeds import stream_seed

from tiny_pipelines import tiny_pipeline, tiny_variant

FRAMES = 3
SEED = 5
PROMPT = "a digit"


def control_frames(videos=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(videos * FRAMES, 3, 16, 16, generator=gen)


def call(pipe, kind, videos=1, **extra):
    """One pipeline call of ``videos`` videos (FRAMES images each), 2 DDIM steps, latents out."""
    args = dict(prompt=[PROMPT] * (videos * FRAMES), num_inference_steps=2, output_type="latent", **extra)
    if "controlnet" in kind:
        image = control_frames(videos)
        args["image"] = [image, image] if kind == "multi-controlnet" else image
    if kind in ("pix2pix", "img2img", "sdxl-img2img"):
        args["image"] = control_frames(videos, seed=1)
    if kind in ("img2img", "sdxl-img2img"):
        args["strength"] = 0.75
    with torch.no_grad():
        return pipe(**args).images


def make(kind):
    return tiny_pipeline(kind) if kind in ("sd15", "sdxl") else tiny_variant(kind)


def attention_models(pipe):
    models = [pipe.unet]
    controlnet = getattr(pipe, "controlnet", None)
    if controlnet is not None:
        models += list(getattr(controlnet, "nets", [controlnet]))
    return models


@pytest.fixture
def recipe():
    """Text2Video-Zero's recipe: CrossFrameAttnProcessor2_0 on every attention layer; undone afterwards."""
    saved = []

    def install(model, batch_size):
        saved.append((model, dict(model.attn_processors)))
        model.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=batch_size))

    yield install
    for model, processors in reversed(saved):
        model.set_attn_processor(processors)


TEXT_TO_VIDEO = ["sd15", "sdxl", "controlnet", "multi-controlnet", "sdxl-controlnet", "pix2pix"]


@pytest.mark.parametrize("kind", TEXT_TO_VIDEO)
def test_momentum_one_equals_text2video_zero_recipe(kind, recipe):
    pipe = make(kind)
    copies = 3 if kind == "pix2pix" else 2  # Instruct-Pix2Pix runs three guidance copies
    with zs2_kernels.video_mode(pipe, FRAMES, momentum=1.0, seed=SEED):
        ours = call(pipe, kind)
    latents = zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED)
    for model in attention_models(pipe):
        recipe(model, copies)
    theirs = call(pipe, kind, latents=latents)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["sd15", "controlnet", "pix2pix"])
def test_momentum_zero_equals_the_plain_pipeline(kind):
    pipe = make(kind)
    with zs2_kernels.video_mode(pipe, FRAMES, momentum=0.0, seed=SEED):
        ours = call(pipe, kind)
    plain = call(pipe, kind, latents=zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED))
    torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-5)


def test_guess_mode_where_the_recipe_breaks(recipe):
    """In guess mode the ControlNet sees only the conditional copy (a batch of FRAMES): the recipe's
    batch_size=2 on it splits one video into two. Ours takes frames, not copies: it equals the recipe
    corrected to batch_size=1 on the ControlNet, and not the recipe as documented."""
    pipe = make("controlnet")
    with zs2_kernels.video_mode(pipe, FRAMES, momentum=1.0, seed=SEED):
        ours = call(pipe, "controlnet", guess_mode=True)
    latents = zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED)
    recipe(pipe.unet, 2)
    recipe(pipe.controlnet, 1)
    torch.testing.assert_close(ours, call(pipe, "controlnet", latents=latents, guess_mode=True), rtol=1e-4,
                               atol=1e-5)
    recipe(pipe.controlnet, 2)
    assert not torch.allclose(ours, call(pipe, "controlnet", latents=latents, guess_mode=True), atol=1e-4)


def test_two_videos_are_two_chains(recipe):
    pipe = make("sd15")
    with zs2_kernels.video_mode(pipe, FRAMES, momentum=1.0, seed=SEED):
        ours = call(pipe, "sd15", videos=2)
    latents = zs2_kernels.initial_latents(pipe, FRAMES, num_videos=2, seed=SEED)
    first = zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED)
    assert torch.equal(latents[:FRAMES], first)  # video 0 does not depend on the batch
    recipe(pipe.unet, 4)  # the recipe's "batch size": guidance copies x videos
    torch.testing.assert_close(ours, call(pipe, "sd15", videos=2, latents=latents), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["img2img", "sdxl-img2img"])
def test_image_to_image_noise_is_the_chain(kind, monkeypatch):
    """Img2Img pipelines take no latents=: the noise they add to the encoded images is drawn inside their
    prepare_latents, and in video_mode it is the dependency chain."""
    pipe = make(kind)
    added = []
    add_noise = pipe.scheduler.add_noise
    monkeypatch.setattr(pipe.scheduler, "add_noise", lambda x, noise, t: added.append(noise) or add_noise(x, noise, t))
    with zs2_kernels.video_mode(pipe, FRAMES, seed=SEED, noise_lambda=0.01):
        call(pipe, kind)
    assert torch.equal(added[0], zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED))


def test_the_anchor_reaches_video_mode_and_initial_latents(monkeypatch):
    """noise_anchor is one setting of the chain wherever it is drawn: video_mode's pipeline noise equals
    initial_latents' with the same anchor, and differs from the unanchored chain."""
    pipe = make("img2img")
    added = []
    add_noise = pipe.scheduler.add_noise
    monkeypatch.setattr(pipe.scheduler, "add_noise", lambda x, noise, t: added.append(noise) or add_noise(x, noise, t))
    with zs2_kernels.video_mode(pipe, FRAMES, seed=SEED, noise_lambda=0.5, noise_anchor=0.6):
        call(pipe, "img2img")
    anchored = zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED, noise_lambda=0.5, noise_anchor=0.6)
    assert torch.equal(added[0], anchored)
    assert not torch.equal(anchored, zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED, noise_lambda=0.5))
    with pytest.raises(ValueError, match=r"noise_anchor must be in \[0, 1\)"):
        zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED, noise_anchor=1.0)


def test_generator_of_the_call_seeds_the_chain():
    pipe = make("sd15")
    with zs2_kernels.video_mode(pipe, FRAMES, momentum=0.5):
        one = call(pipe, "sd15", generator=torch.Generator().manual_seed(1))
        again = call(pipe, "sd15", generator=[torch.Generator().manual_seed(1) for _ in range(FRAMES)])
        other = call(pipe, "sd15", generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(one, again)  # diffusers' per-image list: each video takes its first frame's
    assert not torch.allclose(one, other)


def test_a_call_generator_inside_a_seeded_video_mode_is_refused():
    """The attack found the call's generator silently ignored under video_mode(seed=...): two generators gave one
    video. Refused, naming both."""
    pipe = make("sd15")
    with zs2_kernels.video_mode(pipe, FRAMES, seed=SEED):
        with pytest.raises(ValueError, match=r"video_mode\(seed=\.\.\.\) and the pipeline call's generator="):
            call(pipe, "sd15", generator=torch.Generator().manual_seed(1))


def test_everything_restored_also_after_an_error():
    pipe = make("controlnet")
    before = [dict(model.attn_processors) for model in attention_models(pipe)]
    with pytest.raises(RuntimeError, match="inside"):
        with zs2_kernels.video_mode(pipe, FRAMES, seed=SEED):
            assert all(zs2_kernels.is_installed(model) for model in attention_models(pipe))
            assert "prepare_latents" in vars(pipe)
            raise RuntimeError("inside")
    assert "prepare_latents" not in vars(pipe)
    for model, processors in zip(attention_models(pipe), before):
        assert all(model.attn_processors[name] is processor for name, processor in processors.items())


def test_compiled_unet(recipe):
    pipe = make("sd15")
    with zs2_kernels.video_mode(pipe, FRAMES, momentum=0.7, seed=SEED):
        eager = call(pipe, "sd15")
    pipe.unet = torch.compile(pipe.unet, backend="eager")
    with zs2_kernels.video_mode(pipe, FRAMES, momentum=0.7, seed=SEED):
        compiled = call(pipe, "sd15")
    assert not zs2_kernels.is_installed(pipe.unet)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_batch_that_is_not_videos_of_num_frames_is_refused():
    pipe = make("sd15")
    with zs2_kernels.video_mode(pipe, 4, seed=SEED):
        with pytest.raises(ValueError, match="num_frames"):
            call(pipe, "sd15")  # 3 images for 4-frame videos


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(num_frames=0), ValueError, "num_frames"),
    (dict(num_frames=2.0), TypeError, "num_frames"),
    (dict(momentum=1.5), ValueError, "momentum"),
    (dict(noise_lambda=-1), ValueError, "noise_lambda"),
    (dict(search="fast"), ValueError, "search"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_bad_arguments_are_refused(kwargs, error, name):
    pipe = make("sd15")
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(error, match=name):
        with zs2_kernels.video_mode(pipe, **{"num_frames": FRAMES, **kwargs}):
            pass
    assert all(pipe.unet.attn_processors[n] is p for n, p in before.items())


def test_objects_that_are_not_pipelines_are_refused():
    with pytest.raises(TypeError, match="pipe.unet"):
        with zs2_kernels.video_mode(torch.nn.Linear(2, 2), FRAMES):
            pass


def test_nested_video_mode_is_refused():
    pipe = make("sd15")
    with zs2_kernels.video_mode(pipe, FRAMES):
        with pytest.raises(RuntimeError, match="already in video_mode"):
            with zs2_kernels.video_mode(pipe, FRAMES):
                pass
        assert zs2_kernels.is_installed(pipe.unet)  # the outer block is intact


def test_stochastic_scheduler_noise_is_a_chain_per_step(monkeypatch):
    """Euler ancestral adds fresh noise at every step: in video_mode each draw is a dependency chain of its own
    stream (seeded by (seed, step)), and the same seed gives the same video on every call."""
    from diffusers import EulerAncestralDiscreteScheduler

    from zs2_kernels.sampling import noise_hooks as module

    pipe = make("sd15")
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    drawn = []
    draw = module.NoiseSettings.draw
    monkeypatch.setattr(module.NoiseSettings, "draw",
                        lambda self, *a, **k: drawn.append((k["stream"], draw(self, *a, **k))) or drawn[-1][1])
    with zs2_kernels.video_mode(pipe, FRAMES, momentum=0.5, noise_lambda=0.001, seed=SEED):
        first = call(pipe, "sd15")
        again = call(pipe, "sd15")
    torch.testing.assert_close(first, again)
    streams = [stream for stream, _ in drawn]
    assert streams == [0, 1, 2, 0, 1, 2]  # initial noise, then one draw per step; a new call starts over
    for stream, noise in drawn[1:3]:
        expected = zs2_kernels.dependency_noise((1, FRAMES, *noise.shape[1:]), 0.001,
                                                seed=stream_seed(SEED, stream)).reshape(noise.shape)
        assert torch.equal(noise, expected)
        assert torch.nn.functional.cosine_similarity(noise[0].flatten(), noise[1].flatten(), dim=0) > 0.9
    assert not torch.equal(drawn[1][1], drawn[2][1])
    assert "step" not in vars(pipe.scheduler)


def test_scheduler_whose_noise_cannot_be_chained_is_refused():
    from diffusers import DDIMScheduler

    pipe = make("sd15")
    pipe.scheduler = type("DPMSolverSDEScheduler", (DDIMScheduler,), {}).from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="Brownian tree"):
        with zs2_kernels.video_mode(pipe, FRAMES):
            pass
    assert not zs2_kernels.is_installed(pipe.unet) and "prepare_latents" not in vars(pipe)


def test_img2img_with_a_seed_is_the_same_on_every_call():
    """The VAE posterior sample inside Img2Img's prepare_latents is seeded too: torch's global RNG does not leak in."""
    pipe = make("img2img")
    with zs2_kernels.video_mode(pipe, FRAMES, seed=SEED):
        torch.manual_seed(1)
        first = call(pipe, "img2img")
        torch.manual_seed(2)
        again = call(pipe, "img2img")
    assert torch.equal(first, again)


def test_nesting_on_pipelines_that_share_a_scheduler_is_refused_clearly():
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = make("sd15")
    other = StableDiffusionImg2ImgPipeline(**pipe.components)
    with zs2_kernels.video_mode(pipe, FRAMES):
        # they share the UNet too: its momentum attention is the first thing found taken
        with pytest.raises(RuntimeError, match="momentum attention is already installed on this UNet2DCondition"):
            with zs2_kernels.video_mode(other, FRAMES):
                pass
        own_unet = StableDiffusionImg2ImgPipeline(**{**pipe.components, "unet": make("sd15").unet})
        with pytest.raises(RuntimeError, match="already hooked by another video_mode"):
            with zs2_kernels.video_mode(own_unet, FRAMES):
                pass
        assert not zs2_kernels.is_installed(own_unet.unet)
        assert zs2_kernels.is_installed(pipe.unet) and "step" in vars(pipe.scheduler)  # the outer block intact
    assert "step" not in vars(pipe.scheduler) and not zs2_kernels.is_installed(pipe.unet)


def test_initial_latents_takes_dtype_names_and_refuses_seed_with_generator():
    pipe = make("sd15")
    assert zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED, dtype="fp16").dtype == torch.float16
    with pytest.raises(ValueError, match="either seed or generator"):
        zs2_kernels.initial_latents(pipe, FRAMES, seed=SEED, generator=torch.Generator())
    with pytest.raises(TypeError, match="momentum_attention must be True or False"):
        with zs2_kernels.video_mode(pipe, FRAMES, momentum_attention="off"):
            pass
