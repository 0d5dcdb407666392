"""sample_video's scheduler choice and prompt embeddings, on tiny pipelines (offline)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

import zs2_kernels
from zs2_kernels.sampling import noise_hooks
from zs2_kernels.sampling.schedulers import SCHEDULERS

from tiny_pipelines import tiny_pipeline

FAST = dict(num_frames=4, num_inference_steps=3, progress=False, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline("sd15")


@pytest.fixture(scope="module")
def sdxl():
    return tiny_pipeline("sdxl")


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_samples_and_chunked_equals_unchunked(pipe, name):
    """All chunks of a step share one scheduler step (multistep solvers keep one history for the video)."""
    kwargs = dict(seed=0, scheduler=name, momentum=0.7, **FAST)
    whole = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], **kwargs)
    assert whole.stats["scheduler"] == SCHEDULERS[name][0] and torch.isfinite(whole.frames).all()
    chunked = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], frame_chunk=3, **kwargs).frames
    torch.testing.assert_close(chunked, whole.frames, rtol=1e-5, atol=1e-5)


def test_schedulers_give_different_videos(pipe):
    ddim = zs2_kernels.sample_video(pipe, "a cat", seed=0, **FAST).frames
    assert not torch.allclose(ddim, zs2_kernels.sample_video(pipe, "a cat", seed=0, scheduler="dpm++", **FAST).frames)


def test_ancestral_step_noise_is_chains_seeded_per_video(pipe, monkeypatch):
    """Euler ancestral's per-step noise is drawn as dependency chains (one draw per step), from the seed: the
    same seed gives the same video, and video 0 of a batch is the video sampled alone."""
    streams = []
    draw = noise_hooks.NoiseSettings.draw
    monkeypatch.setattr(noise_hooks.NoiseSettings, "draw",
                        lambda self, *a, **k: streams.append(k["stream"]) or draw(self, *a, **k))
    kwargs = dict(seed=4, scheduler="euler-a", **FAST)
    alone = zs2_kernels.sample_video(pipe, "a cat", **kwargs).frames
    assert streams == [1, 2, 3]  # one chain per step
    again = zs2_kernels.sample_video(pipe, "a cat", **kwargs).frames
    batch = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], **kwargs).frames
    assert torch.equal(alone, again)
    # Equal up to the UNet's batch-size rounding, amplified by Euler's sigma-scaled latents (max |latent| ~ 50).
    torch.testing.assert_close(batch[:1], alone, rtol=0, atol=1e-3)
    other = zs2_kernels.sample_video(pipe, "a cat", **{**kwargs, "seed": 5}).frames
    assert (alone - other).abs().max() > 0.1


def test_a_scheduler_instance_is_copied_not_stepped(pipe):
    given = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    out = zs2_kernels.sample_video(pipe, "a cat", seed=0, scheduler=given, **FAST)
    assert out.stats["scheduler"] == "EulerAncestralDiscreteScheduler"
    assert given.num_inference_steps is None and "step" not in vars(given)


def test_a_scheduler_whose_noise_cannot_be_chained_is_refused(pipe):
    brownian = type("DPMSolverSDEScheduler", (DDIMScheduler,), {}).from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="Brownian tree"):
        zs2_kernels.sample_video(pipe, "a cat", seed=0, scheduler=brownian, **FAST)
    # Without the dependency noise model there is no chain to undo: it runs.
    zs2_kernels.sample_video(pipe, "a cat", seed=0, scheduler=brownian, dependency_noise=False, **FAST)


def test_prompt_embeds_give_the_prompts_video(pipe):
    embeds, negative = pipe.encode_prompt(["a cat", "a dog"], "cpu", 1, True, ["a cow", "a cow"])
    with_text = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], negative_prompt="a cow", seed=0, **FAST).frames
    with_embeds = zs2_kernels.sample_video(pipe, prompt_embeds=embeds, negative_prompt_embeds=negative, seed=0,
                                           **FAST).frames
    assert torch.equal(with_embeds, with_text)
    mixed = zs2_kernels.sample_video(pipe, prompt_embeds=embeds, negative_prompt="a cow", seed=0, **FAST).frames
    assert torch.equal(mixed, with_text)


def test_sdxl_prompt_embeds_with_pooled(sdxl):
    embeds, negative, pooled, negative_pooled = sdxl.encode_prompt(prompt=["a cat"], device="cpu",
                                                                   num_images_per_prompt=1,
                                                                   do_classifier_free_guidance=True,
                                                                   negative_prompt=["a cow"])
    with_text = zs2_kernels.sample_video(sdxl, "a cat", negative_prompt="a cow", seed=0, **FAST).frames
    with_embeds = zs2_kernels.sample_video(sdxl, prompt_embeds=embeds, negative_prompt_embeds=negative,
                                           pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled,
                                           seed=0, **FAST).frames
    assert torch.equal(with_embeds, with_text)
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        zs2_kernels.sample_video(sdxl, prompt_embeds=embeds, seed=0, **FAST)


EMBEDS = torch.randn(2, 16, 32)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(prompt="a cat", prompt_embeds=EMBEDS), ValueError, "either prompt or prompt_embeds"),
    (dict(prompt_embeds=EMBEDS[0]), TypeError,
     r"prompt_embeds must be \[P, L, D\] \(one row per prompt\) or \[P, F, L, D\]"),
    (dict(prompt_embeds=EMBEDS.long()), TypeError, "prompt_embeds"),
    (dict(prompt_embeds=EMBEDS, negative_prompt_embeds=EMBEDS[:1]), ValueError, "negative_prompt_embeds"),
    (dict(prompt_embeds=EMBEDS, negative_prompt_embeds=EMBEDS, negative_prompt="x"), ValueError,
     "either negative_prompt or negative_prompt_embeds"),
    (dict(prompt_embeds=EMBEDS, pooled_prompt_embeds=torch.randn(2, 8)), ValueError, "SDXL"),
    (dict(prompt_embeds=EMBEDS, pooled_prompt_embeds=torch.randn(3, 8)), ValueError, "one row per prompt"),
    (dict(negative_prompt_embeds=EMBEDS), ValueError, "need prompt_embeds"),
    (dict(prompt_embeds=EMBEDS, generator=[torch.Generator()]), ValueError, "one generator per video"),
    (dict(scheduler="dpm"), ValueError, "scheduler must be one of"),
    (dict(scheduler=DDIMScheduler), TypeError, "scheduler must be one of"),
    # steps_offset 1: 1000 of 1000 steps reach timestep 1000 (diffusers raised IndexError after the work)
    (dict(num_inference_steps=1000), ValueError, r"num_inference_steps must be at most 999 .*got 1000"),
    (dict(num_inference_steps=150, scheduler=DDIMScheduler(num_train_timesteps=100)), ValueError,
     r"num_inference_steps must be at most 99 "),
    (dict(backend="bogus"), ValueError, "backend must be one of"),
])
def test_bad_embeddings_and_schedulers_are_refused_before_work(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        zs2_kernels.sample_video(pipe, **{**FAST, "seed": None, **kwargs})


def test_default_prompt_without_embeddings(pipe):
    out = zs2_kernels.sample_video(pipe, seed=0, **{**FAST, "output_type": "np"})
    assert out.frames.shape[0] == 1 and np.isfinite(out.frames).all()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(dependency_noise="no"), TypeError, "dependency_noise must be True or False"),
    (dict(momentum_attention=0), TypeError, "momentum_attention must be True or False"),
    (dict(progress="yes"), TypeError, "progress"),
    (dict(callback_on_step_end=3), TypeError, "callback_on_step_end must be callable"),
    (dict(callback_on_step_end=lambda p, i, t, d: {"latents": d["latents"][:, :1]}), ValueError, "keep the shape"),
    (dict(prompt=["a cat", 3]), TypeError, "prompt must contain strings"),
    (dict(prompt=None, prompt_embeds=torch.randn(1, 16, 10)), ValueError, "cross_attention_dim"),
    (dict(prompt=None, prompt_embeds=torch.randn(1, 16, 32, device="meta")), ValueError, "meta"),
])
def test_switches_callbacks_and_embeddings_are_checked(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        zs2_kernels.sample_video(pipe, **{"prompt": "a cat", "seed": 0, **FAST, **kwargs})


def test_a_bad_backend_in_the_environment_is_refused(pipe, monkeypatch):
    monkeypatch.setenv("ZS2_BACKEND", "bogus")
    with pytest.raises(ValueError, match="ZS2_BACKEND must be one of"):
        zs2_kernels.sample_video(pipe, seed=0, **FAST)


@pytest.mark.parametrize("call", ["sample_video", "sample"])
def test_warnings_point_at_the_callers_line(pipe, call):
    """The truncation warning named a line inside the sampler once the call went one frame deeper."""
    from zs2_kernels.sampling import SampleRequest, sample

    with pytest.warns(UserWarning, match="cut there") as caught:
        if call == "sample":
            sample(pipe, SampleRequest(prompt="seven " * 40, seed=0, **FAST))
        else:
            zs2_kernels.sample_video(pipe, "seven " * 40, seed=0, **FAST)
    assert [w.filename for w in caught if "cut there" in str(w.message)] == [__file__]


def test_sample_video_takes_exactly_the_requests_fields():
    """sample_video's keyword arguments are SampleRequest's fields with the same defaults: an argument added to one
    and not the other would be dropped or refused (DESIGN.md §5)."""
    import dataclasses
    import inspect

    from zs2_kernels.sampling import SampleRequest

    parameters = dict(inspect.signature(zs2_kernels.sample_video).parameters)
    del parameters["model"]
    fields = {f.name: f.default for f in dataclasses.fields(SampleRequest) if f.init}
    assert {name: p.default for name, p in parameters.items()} == fields


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a"])
def test_the_anchor_reaches_the_initial_and_step_noise_and_the_stats(pipe, scheduler):
    """noise_anchor through sample_video: the initial chain keeps its floor (stats["correlation_first"]), a stochastic
    scheduler's per-step chains are anchored too (the video differs from the unanchored one), 0 is the default."""
    common = dict(FAST, num_frames=10, noise_lambda=0.5, seed=0, scheduler=scheduler)
    anchored = zs2_kernels.sample_video(pipe, "a cat", **common, noise_anchor=0.6)
    plain = zs2_kernels.sample_video(pipe, "a cat", **common)
    assert anchored.stats["noise_anchor"] == 0.6 and plain.stats["noise_anchor"] == 0.0
    assert min(anchored.stats["correlation_first"][0]) > 0.55 > min(plain.stats["correlation_first"][0])
    assert max(abs(kl - 0.5) for kl in anchored.stats["achieved_kl"][0]) < 1e-9
    assert not torch.equal(anchored.frames, plain.frames)
    assert torch.equal(zs2_kernels.sample_video(pipe, "a cat", **common, noise_anchor=0.0).frames, plain.frames)


@pytest.mark.parametrize("name", ["prompt_embeds", "negative_prompt_embeds"])
def test_non_finite_prompt_embeddings_are_refused_before_any_step(pipe, name, monkeypatch):
    """The attack found NaN prompt_embeds refused only after every step ("latents became NaN/inf")."""
    embeds = torch.randn(1, 16, 64)
    given = {"prompt_embeds": embeds, "negative_prompt_embeds": torch.zeros_like(embeds)}
    given[name] = given[name].clone().index_fill_(1, torch.tensor([3]), float("nan"))
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: pytest.fail("the UNet ran"))
    with pytest.raises(ValueError, match=rf"{name} must be finite"):
        zs2_kernels.sample_video(pipe, **FAST, **given)


def test_a_callback_of_the_wrong_arity_and_a_request_that_is_not_one_are_refused_up_front(pipe, monkeypatch):
    """The attack found a raw TypeError from inside the loop (callback) and an AttributeError (sample(pipe, {}))."""
    from zs2_kernels.sampling import sample

    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: pytest.fail("the UNet ran"))
    with pytest.raises(TypeError, match=r"callback_on_step_end must take \(pipe, step, timestep, callback_kwargs\)"):
        zs2_kernels.sample_video(pipe, "a cat", **FAST, callback_on_step_end=lambda: None)
    with pytest.raises(TypeError, match="request must be a SampleRequest"):
        sample(pipe, {})


@pytest.mark.parametrize("backend", [3, "no-such-backend"])
def test_an_unknown_compile_backend_is_refused_up_front(pipe, backend, monkeypatch):
    """The attack found compile={"backend": 3} failing in torch's BackendCompilerFailed seconds into sampling."""
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: pytest.fail("the UNet ran"))
    with pytest.raises(ValueError, match="compile's backend must be a callable or one of"):
        zs2_kernels.sample_video(pipe, "a cat", **FAST, compile={"backend": backend})


def test_prompt_embeds_longer_than_the_text_encoder_name_the_fix(pipe, monkeypatch):
    """The attack found transformers' "Sequence length must be less than max_position_embeddings" (guidance on, no
    negative embeddings: diffusers encodes "" at prompt_embeds' length)."""
    limit = pipe.text_encoder.config.max_position_embeddings
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: pytest.fail("the UNet ran"))
    with pytest.raises(ValueError, match=rf"prompt_embeds has {limit + 4} tokens but the text encoder takes at most "
                                         rf"{limit}.*pass negative_prompt_embeds too"):
        zs2_kernels.sample_video(pipe, prompt_embeds=torch.randn(1, limit + 4, 32), guidance_scale=7.5, **FAST)
