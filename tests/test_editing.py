"""Image-to-video and video-to-video: sample_video(image=...) against DDIM inversion by diffusers'
DDIMInverseScheduler and a ZS² pipeline call holding frame 0, sample_video(video=..., strength=...) against video_mode
around diffusers' Img2Img pipeline on the same noise, chunked against unchunked, and bad input refused naming it."""

import copy

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

import zs2_kernels
from zs2_kernels.sampling.editing import ddim_invert
from zs2_kernels.sampling.vae import vae_call

from tiny_pipelines import tiny_pipeline, tiny_variant

FRAMES = 3
SEED = 2
STEPS = 4
COMMON = dict(num_inference_steps=STEPS, guidance_scale=7.5, noise_lambda=0.01, momentum=0.7, seed=SEED,
              output_type="latent", progress=False)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline("sd15")


def pictures(count, seed=0):
    """[count, 3, 16, 16] in [0, 1] with some structure (the tiny VAE's native size)."""
    return torch.rand(count, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def encoded(pipe, images):
    """The latents the issue defines: latent_dist.mode() * scaling_factor, of images in [0, 1]."""
    with torch.no_grad():
        return pipe.vae.encode(images * 2 - 1).latent_dist.mode() * pipe.vae.config.scaling_factor


def text_embeds(pipe, prompt):
    with torch.no_grad():
        return pipe.encode_prompt([prompt], "cpu", 1, False)[0]


def inverted_by_diffusers(pipe, latents, prompt, prediction_type="epsilon"):
    """DDIM inversion with diffusers' DDIMInverseScheduler (from a clean sample, alpha 1), guidance-free: the
    samples after each step, most noisy first."""
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config, set_alpha_to_one=True,
                                               prediction_type=prediction_type)
    inverse.set_timesteps(STEPS)
    hidden, path = text_embeds(pipe, prompt).expand(len(latents), -1, -1), []
    with torch.no_grad():
        for t in inverse.timesteps:
            noise = pipe.unet(latents, t, encoder_hidden_states=hidden).sample
            latents = inverse.step(noise, t, latents).prev_sample
            path.append(latents)
    return path[::-1]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_inversion_equals_diffusers_inverse_scheduler(pipe, prediction_type):
    latents = encoded(pipe, pictures(2))
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type)
    scheduler.set_timesteps(STEPS)
    with torch.no_grad():
        ours = ddim_invert(pipe, scheduler, latents, text_embeds(pipe, "a cat").expand(2, -1, -1), None)
    theirs = inverted_by_diffusers(pipe, latents, "a cat", prediction_type)
    assert len(ours) == len(theirs) == STEPS
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)


def test_image_to_video_equals_a_pipeline_call_from_the_inverted_chain(pipe):
    """The whole video: diffusers' own pipeline in video_mode, from the dependency chain whose first noise is the
    inverted image (DDIMInverseScheduler), frame 0 put back on the inversion path after every step."""
    image = pictures(1, seed=3)
    latents = encoded(pipe, image)
    path = inverted_by_diffusers(pipe, latents, "a cat") + [latents]
    noise = zs2_kernels.dependency_noise((1, FRAMES, 4, 8, 8), 0.01, seed=SEED, first=path[0])

    def hold(pipeline, step, t, tensors):
        frames = tensors["latents"].clone()
        frames[0] = path[step + 1][0]
        return {"latents": frames}

    with zs2_kernels.video_mode(pipe, FRAMES, momentum=0.7, noise_lambda=0.01, seed=SEED), torch.no_grad():
        theirs = pipe(["a cat"] * FRAMES, latents=noise[0], num_inference_steps=STEPS, guidance_scale=7.5,
                      output_type="latent", callback_on_step_end=hold).images
    ours = zs2_kernels.sample_video(pipe, "a cat", image=image[0], num_frames=FRAMES, **COMMON)
    torch.testing.assert_close(ours.frames[0], theirs, rtol=1e-4, atol=1e-5)
    assert torch.equal(ours.frames[0, 0], latents[0])  # frame 0 is the image, exactly
    assert ours.stats["edit"] == "image" and ours.stats["steps_run"] == STEPS


@pytest.mark.parametrize("scheduler", ["euler", "dpm++", "euler-a"])
def test_frame_zero_is_the_image_with_other_schedulers(pipe, scheduler):
    images = pictures(2, seed=4)
    out = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], image=images, num_frames=FRAMES, scheduler=scheduler,
                                   **COMMON)
    torch.testing.assert_close(out.frames[:, 0], encoded(pipe, images), rtol=0, atol=0)
    assert torch.isfinite(out.frames).all()


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_video_to_video_equals_video_mode_with_the_img2img_pipeline(strength):
    """SDEdit from the encoded frames: diffusers' Img2Img pipeline (given the latents as its image) in video_mode
    adds the same chain noise at the strength's timestep and denoises with momentum attention."""
    img2img = tiny_variant("img2img")
    video = pictures(FRAMES, seed=5)
    with zs2_kernels.video_mode(img2img, FRAMES, momentum=0.7, noise_lambda=0.01, seed=SEED), torch.no_grad():
        theirs = img2img(["a cat"] * FRAMES, image=encoded(img2img, video), strength=strength,
                         num_inference_steps=STEPS, guidance_scale=7.5, output_type="latent").images
    ours = zs2_kernels.sample_video(img2img, "a cat", video=video, strength=strength, **COMMON)
    torch.testing.assert_close(ours.frames[0], theirs, rtol=1e-4, atol=1e-5)
    assert ours.stats["steps_run"] == int(STEPS * strength) and ours.stats["strength"] == strength


def test_chunked_equals_unchunked(pipe):
    images, video = pictures(2, seed=6), pictures(FRAMES, seed=7)
    for edit in (dict(image=images), dict(video=video, strength=0.75)):
        kwargs = dict(num_frames=FRAMES, **COMMON, **edit)
        whole = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], **kwargs).frames
        chunked = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], frame_chunk=2, **kwargs).frames
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_16_bit_grey_images_are_scaled_not_clipped(tmp_path):
    """PIL converts 16-bit greyscale to RGB by clipping at 255 (frame 0 came out 10 dB from the image)."""
    from PIL import Image

    from zs2_kernels.video_io import frames_tensor, read_video

    ramp = torch.linspace(0, 1, 32 * 32).reshape(32, 32)
    grey16 = Image.fromarray((ramp.numpy() * 65535).astype("uint16"))
    grey16.save(tmp_path / "grey16.png")
    torch.testing.assert_close(frames_tensor(grey16, "image")[0], ramp.expand(3, 32, 32), rtol=0, atol=2.5e-3)
    read = torch.from_numpy(read_video(tmp_path / "grey16.png", (32, 32), "image"))[0].movedim(-1, 0)
    torch.testing.assert_close(read, ramp.expand(3, 32, 32), rtol=0, atol=2.5e-3)


@pytest.mark.parametrize("value, match", [
    (torch.rand(32, 32).numpy(), r"arrays are channels last"), (torch.rand(3, 32, 32, device="meta"), "meta")])
def test_arrays_without_channels_and_meta_tensors_are_refused(value, match):
    from zs2_kernels.video_io import frames_tensor

    with pytest.raises(ValueError, match=match):
        frames_tensor(value, "image")


def test_one_frame_chunks_are_exact_in_bf16():
    """Encoded video latents can be laid out so that a one-frame slice looks channels-last; the UNet's bf16
    convolutions then take another kernel (0.11 off in the latents on the embedded model). Found by the
    new-user attack; the model input is made contiguous."""
    from zs2_kernels.evaluation.digits import load_digit_split

    split = load_digit_split()
    digit = split.test_images[split.test_labels == 7][0] * 0.5 + 0.5
    video = torch.stack([torch.roll(digit, shift, dims=-1) for shift in range(6)]).expand(6, 3, 32, 32)
    kwargs = dict(video=video, strength=1.0, dtype=torch.bfloat16, output_type="latent", num_inference_steps=4,
                  seed=0, progress=False, guidance_scale=4.0)
    embedded = zs2_kernels.load_pipeline(None, progress=False)
    for components in (True, False):
        switches = dict(dependency_noise=components, momentum_attention=components)
        whole = zs2_kernels.sample_video(embedded, "a seven", **kwargs, **switches).frames
        chunked = zs2_kernels.sample_video(embedded, "a seven", frame_chunk=1, **kwargs, **switches).frames
        assert torch.equal(chunked, whole)


def test_sdxl_image_to_video_keeps_the_image():
    """SDXL's added conditions (pooled text, time ids) go to the inversion's UNet calls too."""
    sdxl = tiny_pipeline("sdxl")
    images = pictures(2, seed=9)
    out = zs2_kernels.sample_video(sdxl, ["a cat", "a dog"], image=images, num_frames=2, **COMMON)
    torch.testing.assert_close(out.frames[:, 0], encoded(sdxl, images), rtol=0, atol=0)


def test_vae_call_redoes_an_overflowing_chunk_in_float32(pipe):
    vae, seen = copy.deepcopy(pipe.vae).to(torch.bfloat16), []

    def overflowing_in_bf16(x):
        seen.append(x.dtype)
        return torch.full((1,), float("inf")) if x.dtype == torch.bfloat16 else x.sum().view(1)

    assert vae_call(vae, overflowing_in_bf16, torch.ones(3), "encoding").dtype == torch.float32
    assert seen == [torch.bfloat16, torch.float32] and vae.dtype == torch.bfloat16
    with pytest.raises(FloatingPointError, match="VAE encoding produced NaN/inf"):
        vae_call(vae, lambda x: x / 0, torch.ones(3), "encoding")


def test_edit_inputs_in_other_forms(pipe):
    """Arrays (channels last, uint8 scaled) and PIL images are the same input as the tensor; grey becomes RGB."""
    from PIL import Image

    image = (pictures(1, seed=8)[0] * 255).round().to(torch.uint8)
    array = image.permute(1, 2, 0).numpy()
    want = zs2_kernels.sample_video(pipe, "a cat", image=image.float() / 255, num_frames=2, **COMMON).frames
    for given in (array, Image.fromarray(array), [Image.fromarray(array)]):
        got = zs2_kernels.sample_video(pipe, "a cat", image=given, num_frames=2, **COMMON).frames
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    grey = zs2_kernels.sample_video(pipe, "a cat", video=pictures(2)[:, :1], strength=0.5, **COMMON).frames
    rgb = zs2_kernels.sample_video(pipe, "a cat", video=pictures(2)[:, :1].expand(-1, 3, -1, -1), strength=0.5,
                                   **COMMON).frames
    assert torch.equal(grey, rgb)


def test_processors_restored_and_pipeline_unchanged(pipe):
    before = dict(pipe.unet.attn_processors)
    zs2_kernels.sample_video(pipe, "a cat", image=pictures(1)[0], num_frames=2, **COMMON)
    assert all(pipe.unet.attn_processors[name] is p for name, p in before.items())


def test_image_needs_a_model_predicting_noise_or_v(pipe):
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="sample")
    with pytest.raises(ValueError, match="prediction_type"):
        zs2_kernels.sample_video(pipe, "a cat", image=pictures(1)[0], num_frames=2, scheduler=scheduler, **COMMON)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(image=torch.rand(3, 15, 16)), ValueError, "image is 15x16 pixels: its sides must be multiples of the "
                                                    "model's downscale factor 2"),
    (dict(image=torch.rand(3, 16, 16), height=24, width=24), ValueError, "image is 16x16 pixels but the video is"),
    (dict(image=torch.rand(2, 16, 16)), ValueError, "image must be .* with C 1 or 3"),
    (dict(image=torch.rand(1, 1, 3, 16, 16)), ValueError, r"image must be \[C, H, W\] or \[V, C, H, W\]"),
    (dict(image=torch.rand(3, 16, 16) * 2), ValueError, r"image values must be floats in \[0, 1\]"),
    (dict(image=torch.full((3, 16, 16), float("nan"))), ValueError, r"image values"),
    (dict(image=torch.rand(3, 3, 16, 16)), ValueError, "image holds 3 images; give one for all videos or one per"),
    (dict(image="cat.png"), TypeError, "image must be a tensor, an array or PIL images"),
    (dict(image=[1, 2]), TypeError, "image as a list must hold PIL images"),
    (dict(video=torch.rand(4, 3, 16, 16), num_frames=3), ValueError, "video has 4 frames but num_frames is 3"),
    (dict(video=torch.rand(3, 16, 16)), ValueError, r"video must be \[F, C, H, W\] or \[V, F, C, H, W\]"),
    (dict(video=torch.rand(3, 4, 16, 16)), ValueError, "video must be .* with C 1 or 3"),
    (dict(video=torch.rand(3, 3, 16, 24), width=16), ValueError, "video is 16x24 pixels but the video is 16x16"),
    (dict(video=torch.rand(3, 3, 16, 16), strength=0.0), ValueError, r"strength must be in \(0, 1\]"),
    (dict(video=torch.rand(3, 3, 16, 16), strength=1.5), ValueError, "strength must be in"),
    (dict(video=torch.rand(3, 3, 16, 16), strength="high"), TypeError, "strength must be a real number"),
    (dict(video=torch.rand(3, 3, 16, 16), strength=0.1), ValueError, "strength 0.1 of num_inference_steps 4 runs no"),
    (dict(strength=0.5), ValueError, "strength needs video="),
    (dict(image=torch.rand(3, 16, 16), video=torch.rand(3, 3, 16, 16)), ValueError, "either image .* or video"),
    (dict(image=torch.rand(3, 16, 16), control_video=torch.rand(3, 3, 16, 16)), ValueError,
     "image cannot be combined with control_video"),
    (dict(video=torch.rand(3, 3, 16, 16), control_video=torch.rand(3, 3, 16, 16)), ValueError,
     "video cannot be combined with control_video"),
])
def test_bad_edit_input_is_refused_naming_it(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        zs2_kernels.sample_video(pipe, ["a cat", "a dog"], seed=0, progress=False, num_inference_steps=STEPS,
                                 **kwargs)
