"""Guided video: sample_video(control_video=...) against video_mode + diffusers' ControlNet pipeline on the same
noise, chunked against unchunked, the embedded ControlNet by default, and bad input refused."""

import copy

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

import zs2_kernels

from tiny_pipelines import tiny_pipeline, tiny_variant

FRAMES = 3
SEED = 2
COMMON = dict(num_inference_steps=2, guidance_scale=7.5, noise_lambda=0.01, momentum=0.7)


def guide(videos=1, seed=0):
    return torch.rand(videos, FRAMES, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def pipe():
    return tiny_variant("controlnet")


def pipeline_video(pipe, images, **extra):
    """The same video through diffusers' own ControlNet pipeline in video_mode."""
    with zs2_kernels.video_mode(pipe, FRAMES, momentum=COMMON["momentum"], noise_lambda=COMMON["noise_lambda"],
                                seed=SEED):
        with torch.no_grad():
            return pipe(prompt=["a cat"] * FRAMES, image=images, num_inference_steps=COMMON["num_inference_steps"],
                        guidance_scale=COMMON["guidance_scale"], output_type="latent", **extra).images


def ours(pipe, control_video, controlnet, **extra):
    out = zs2_kernels.sample_video(pipe, "a cat", control_video=control_video, controlnet=controlnet, seed=SEED,
                                   output_type="latent", progress=False, **COMMON, **extra)
    return out.frames[0]


@pytest.fixture(scope="module")
def pooled():
    """A ControlNet pipeline whose ControlNet pools its conditions (as shuffle ControlNets do)."""
    pooled = tiny_variant("controlnet")
    pooled.controlnet.register_to_config(global_pool_conditions=True)
    return pooled


@pytest.mark.parametrize("guess_mode, pooling", [(False, False), (True, False), (False, True)])
def test_equals_video_mode_with_the_controlnet_pipeline(pipe, pooled, guess_mode, pooling):
    """Also with global_pool_conditions, where diffusers turns guess mode on by itself."""
    pipe = pooled if pooling else pipe
    video = guide()
    theirs = pipeline_video(pipe, video[0], guess_mode=guess_mode, controlnet_conditioning_scale=0.8,
                            control_guidance_end=0.6)
    mine = ours(pipe, video, pipe.controlnet, guess_mode=guess_mode, controlnet_conditioning_scale=0.8,
                control_guidance_end=0.6)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(mine, ours(pipe, guide(seed=1), pipe.controlnet), atol=1e-3)  # the guide matters


def test_multi_controlnet_equals_the_pipeline(pipe):
    second = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 16))
    with torch.no_grad():
        for conv in [*second.controlnet_down_blocks, second.controlnet_mid_block]:
            conv.weight.normal_(std=0.1)
    videos = [guide(seed=3), guide(seed=4)]
    multi = tiny_variant("controlnet")
    multi.controlnet = MultiControlNetModel([pipe.controlnet, second])
    theirs = pipeline_video(multi, [v[0] for v in videos], controlnet_conditioning_scale=[1.0, 0.5])
    mine = ours(pipe, videos, [pipe.controlnet, second], controlnet_conditioning_scale=[1.0, 0.5])
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_chunked_equals_unchunked_with_the_controlnet_state_carried(pipe):
    video = guide(videos=2, seed=5)
    kwargs = dict(control_video=video, controlnet=pipe.controlnet, seed=SEED, output_type="latent", progress=False,
                  **COMMON)
    whole = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], **kwargs).frames
    for chunk in (1, 2):
        chunked = zs2_kernels.sample_video(pipe, ["a cat", "a dog"], frame_chunk=chunk, **kwargs).frames
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_processors_restored_on_unet_and_controlnet(pipe):
    before = [dict(model.attn_processors) for model in (pipe.unet, pipe.controlnet)]
    ours(pipe, guide(), pipe.controlnet)
    for model, processors in zip((pipe.unet, pipe.controlnet), before):
        assert all(model.attn_processors[name] is p for name, p in processors.items())


def test_embedded_model_uses_its_controlnet_and_takes_the_guides_length():
    frames = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = zs2_kernels.sample_video(None, "a handwritten digit 3", control_video=zs2_kernels.embedded.digit_condition(
        frames), num_inference_steps=2, seed=0, progress=False)
    assert out.frames.shape == (1, 5, 32, 32, 3)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(control_video=torch.rand(1, 4, 3, 16, 16)), ValueError, "4 frames but num_frames is 3"),
    (dict(control_video=torch.rand(1, 3, 3, 24, 24), height=16, width=16), ValueError, "pass height/width"),
    (dict(control_video=torch.rand(1, 3, 2, 16, 16)), ValueError, "C 1 or 3"),
    (dict(control_video=torch.rand(1, 3, 3, 16, 16) * 3), ValueError, r"\[0, 1\]"),
    (dict(control_video=torch.rand(3, 3, 3, 16, 16)), ValueError, "one per video"),
    (dict(control_video="guide.mp4"), TypeError, "control_video must be"),
    (dict(control_video=torch.rand(1, 3, 3, 16, 16), control_guidance_start=0.8, control_guidance_end=0.2),
     ValueError, "control_guidance_start"),
    (dict(control_video=torch.rand(1, 3, 3, 16, 16), controlnet_conditioning_scale=[1.0, 2.0]), ValueError,
     "controlnet_conditioning_scale"),
    (dict(control_video=torch.rand(1, 3, 3, 16, 16), controlnet=3), TypeError, "controlnet must be"),
])
def test_bad_control_input_is_refused_naming_it(pipe, kwargs, error, match):
    kwargs.setdefault("controlnet", pipe.controlnet)
    with pytest.raises(error, match=match):
        zs2_kernels.sample_video(pipe, "a cat", num_frames=3, seed=0, progress=False, num_inference_steps=1, **kwargs)


def test_a_controlnet_that_does_not_fit_the_unet_is_refused(pipe):
    other = ControlNetModel.from_unet(tiny_pipeline("sdxl").unet, conditioning_embedding_out_channels=(8, 16))
    with pytest.raises(ValueError, match="does not fit the UNet: cross_attention_dim 64 vs the UNet's 32"):
        ours(pipe, guide(), other)


def test_other_models_need_a_controlnet():
    with pytest.raises(ValueError, match="needs controlnet="):
        ours(tiny_pipeline("sd15"), guide(), None)


def test_a_controlnet_pipeline_guides_with_its_own_controlnet(pipe):
    torch.testing.assert_close(ours(pipe, guide(), None), ours(pipe, guide(), pipe.controlnet), rtol=0, atol=0)


def test_the_same_controlnet_object_twice_is_refused(pipe):
    """MultiControlNetModel calls the one object once per use: its momentum state would mix between the uses."""
    with pytest.raises(ValueError, match="same ControlNetModel object twice"):
        ours(pipe, [guide(), guide(seed=1)], [pipe.controlnet, pipe.controlnet])


@pytest.mark.parametrize("name, value", [("controlnet", "/nonexistent"), ("controlnet_conditioning_scale", 0.5),
                                         ("guess_mode", True), ("control_guidance_start", 0.1),
                                         ("control_guidance_end", 0.9)])
def test_control_arguments_without_a_control_video_are_refused(pipe, name, value):
    with pytest.raises(ValueError, match=f"{name} needs? control_video"):
        zs2_kernels.sample_video(pipe, "a cat", num_frames=3, num_inference_steps=1, progress=False, **{name: value})


def test_a_controlnet_on_the_pipelines_device_and_dtype_is_cast_with_it(pipe):
    """Given apart from the pipeline, it is cast for the call like the pipeline and given back bit for bit."""
    net = copy.deepcopy(pipe.controlnet)
    before = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    mine = ours(pipe, guide(), net, dtype=torch.bfloat16)
    torch.testing.assert_close(mine, ours(pipe, guide(), pipe.controlnet, dtype=torch.bfloat16), rtol=0, atol=0)
    after = net.state_dict()
    assert all(after[name].dtype == torch.float32 and torch.equal(after[name], t) for name, t in before.items())


def test_a_compiled_controlnet_is_accepted(pipe):
    compiled = torch.compile(pipe.controlnet, backend="eager")
    torch.testing.assert_close(ours(pipe, guide(), compiled), ours(pipe, guide(), pipe.controlnet), rtol=0, atol=0)


def test_controlnets_that_do_not_fit_name_the_config_entry(pipe):
    one_channel = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 16),
                                            conditioning_channels=1)
    with pytest.raises(ValueError, match="conditioning_channels 1"):
        ours(pipe, guide(), one_channel)
    config = {key: value for key, value in pipe.controlnet.config.items() if not key.startswith("_")}
    with pytest.raises(ValueError, match="layers_per_block 2 vs the UNet's 1"):
        ours(pipe, guide(), ControlNetModel(**{**config, "layers_per_block": 2}))


@pytest.mark.parametrize("source, match", [("/nonexistent/controlnet", "no such folder"),
                                           ("./cn", "no such folder")])
def test_a_missing_controlnet_folder_is_named(pipe, source, match):
    with pytest.raises(FileNotFoundError, match=match):
        ours(pipe, guide(), source)


def pil_video(frames=FRAMES, size=16):
    from PIL import Image

    return [Image.new("RGB", (size, size), (10 * f, 0, 0)) for f in range(frames)]


@pytest.mark.parametrize("video, match", [
    (pil_video()[:2] + pil_video(1, 8), r"same size, got \(height, width\) \(8, 8\), \(16, 16\)"),
    ([pil_video(), pil_video(2)], "same number of frames"),
    (np.zeros((3, 16, 16, 2), np.float32), r"\(3, 16, 16, 2\)"),
])
def test_bad_control_videos_are_described_as_given(pipe, video, match):
    with pytest.raises(ValueError, match=match):
        zs2_kernels.sample_video(pipe, ["a cat", "a dog"], control_video=video, controlnet=pipe.controlnet,
                                 num_frames=3, num_inference_steps=1, progress=False)


def test_a_controlnet_folder_is_loaded_onto_the_unets_device():
    """A folder (or the embedded default) was loaded on the CPU and then refused beside a UNet elsewhere ("controlnet
    is on cpu ..., the UNet on cuda"); it goes to the UNet's device. The meta device stands in for a GPU here."""
    from zs2_kernels.embedded import controlnet_path
    from zs2_kernels.sampling.control import load_controlnets

    pipe = zs2_kernels.load_pipeline(None, progress=False)
    pipe.unet.to("meta")
    for controlnet in (None, str(controlnet_path())):
        net = load_controlnets(controlnet, pipe, 1)
        assert net.device == torch.device("meta") and net.dtype == pipe.unet.dtype
