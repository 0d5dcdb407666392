"""ZS² for any diffusers pipeline: ``video_mode`` turns a pipeline's image batch into videos for a ``with`` block.

Inside the block, every self-attention layer of ``pipe.unet`` and of ``pipe.controlnet`` (one ControlNet or a
``MultiControlNetModel``) runs temporal momentum attention, and the pipeline's own initial-noise draw is the
dependency noise chain. The pipeline's batch must be laid out as the UNet sees it in ZS²: guidance copies
outermost, then videos, then frames, i.e. ``prompt=[p] * num_frames`` (videos one after the other).

The noise hook wraps the pipeline's ``prepare_latents`` and, while it runs, swaps the ``randn_tensor`` of
the module that defines it: the only noise drawn there is the initial noise (text-to-image pipelines) or the
noise added to the encoded image (image-to-image pipelines, which take no ``latents=``). A user who passes
``latents=`` keeps them (make them with :func:`initial_latents`). A stochastic scheduler's per-step noise
(Euler ancestral, DDPM, DDIM with eta > 0, SDE-DPM++) is hooked the same way in its ``step``: fresh
independent noise on every frame at every step would undo the dependency noise model.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field

import torch

from ._checks import check_bool, check_dtype, check_int, check_number
from .attention import MomentumAttentionHandle, install_momentum_attention
from .sampling.conditioning import check_negative_prompts, check_prompts, encode_conditioning
from .sampling.noise_hooks import NoiseSettings, chain_step_noise, check_chainable, draw_chains_in, unhook
from .sampling.prompt_travel import check_keyframes
from .sampling.shapes import frame_latent_shape, pipeline_resolution
from .seeds import stream_seed


@dataclass
class VideoMode:
    """What :func:`video_mode` installed: attention handles per model, and the noise settings."""

    pipe: object
    noise: NoiseSettings
    handles: list[MomentumAttentionHandle] = field(default_factory=list)
    hooked: list = field(default_factory=list)  # (owner, method) wrapped by this block, undone on restore

    def restore(self) -> None:
        """Restore the original processors (newest first) and remove the noise hook."""
        for handle in reversed(self.handles):
            handle.restore()  # warns about layers whose processor was replaced meanwhile
        self.handles.clear()
        while self.hooked:
            unhook(*self.hooked.pop())


def _models_with_attention(pipe) -> list:
    """``pipe.unet`` and the ControlNet(s) of ``pipe.controlnet`` (a MultiControlNetModel's nets each)."""
    if not isinstance(getattr(pipe, "unet", None), torch.nn.Module):
        raise TypeError(f"pipe must be a diffusers pipeline with a UNet (pipe.unet), got {type(pipe).__name__}")
    models = [pipe.unet]
    controlnet = getattr(pipe, "controlnet", None)
    if controlnet is not None:
        nets = getattr(controlnet, "nets", None)
        models += list(nets) if isinstance(nets, torch.nn.ModuleList) else [controlnet]
    return models


def _hook_noise(pipe, noise: NoiseSettings, hooked: list) -> None:
    """The pipeline's initial noise (stream 0) and its scheduler's per-step noise (streams 1, 2, ...) as chains;
    each (owner, method) wrapped is appended to ``hooked`` as soon as it is."""
    if not hasattr(getattr(pipe, "prepare_latents", None), "__func__"):
        raise TypeError(f"{type(pipe).__name__} has no prepare_latents method to draw the dependency noise in")
    check_chainable(pipe.scheduler)
    if "step" in vars(pipe.scheduler):
        raise RuntimeError("pipe.scheduler is already hooked by another video_mode (pipelines built from the same "
                           "components share it): leave that block first, or give this pipeline its own scheduler")
    draw_chains_in(pipe, "prepare_latents", noise, noise.first_stream)
    hooked.append((pipe, "prepare_latents"))
    if noise.seed is not None:
        _seed_other_draws(pipe, noise.seed)
    chain_step_noise(pipe.scheduler, noise)
    hooked.append((pipe.scheduler, "step"))


def _seed_other_draws(pipe, seed: int) -> None:
    """With a seed, prepare_latents' other random draws (Img2Img's VAE posterior sample) use a generator seeded by
    it, so a seeded video is the same on every call, whatever torch's global RNG. A call that passes its own
    generator is refused: the seed would silently override it."""
    chained = pipe.prepare_latents
    signature = inspect.signature(type(pipe).prepare_latents)
    if "generator" not in signature.parameters:
        return

    def seeded(*args, **kwargs):
        bound = signature.bind(pipe, *args, **kwargs)
        if bound.arguments.get("generator") is not None:
            raise ValueError("video_mode(seed=...) and the pipeline call's generator= both choose the noise: pass "
                             "one of them (with seed, each video's noise depends only on the seed and its index)")
        bound.arguments["generator"] = torch.Generator().manual_seed(stream_seed(seed, 0))
        return chained(*bound.args[1:], **bound.kwargs)

    pipe.prepare_latents = seeded


@contextlib.contextmanager
def video_mode(pipe, num_frames: int, *, momentum: float = 0.98, noise_lambda: float = 0.01,
               search: str = "exact", seed: int | None = None, momentum_attention: bool = True,
               dependency_noise: bool = True, backend: str | None = None, noise_anchor: float = 0.0):
    """Make any diffusers pipeline sample ZS² videos inside a ``with`` block.

    ``pipe(prompt=[p] * num_frames, ...)`` then returns the frames of one video (of several, with the prompts
    of each video after one another). Everything is restored on exit, also on exceptions.

    Args:
        pipe: a diffusers pipeline with ``unet`` (and optionally ``controlnet``): StableDiffusion,
            ControlNet, Instruct-Pix2Pix, Img2Img and their SDXL variants, compiled modules too.
        num_frames: frames per video: the pipeline's batch must be videos x num_frames images.
        momentum: mu in [0, 1] of temporal momentum attention (0: per-frame, 1: cross-frame to frame 0).
        noise_lambda, search: the dependency noise model's KL target and search mode.
        noise_anchor: a in [0, 1): each frame's noise keeps a correlation of at least a with frame 0's (see
            :func:`zs2_kernels.dependency_noise`; 0: unanchored).
        seed: each video's noise depends only on (seed, its index); None: the pipeline call's
            ``generator`` (one, or diffusers' one per image: each video uses its first frame's), else torch's
            global RNG. With a seed, Img2Img's VAE sample is seeded too when the call passes no generator.
        momentum_attention / dependency_noise: switch either component off.
        backend: op backend (default: see :mod:`zs2_kernels.ops.backend`).

    Yields a :class:`VideoMode` (its ``handles``, its ``noise`` settings).
    """
    if isinstance(seed, (list, tuple)):
        raise TypeError("video_mode takes one int seed (its videos are the pipeline call's batch); one seed per "
                        "video: zs2_kernels.sample_video(seed=[...])")
    noise = NoiseSettings(num_frames, noise_lambda, search, seed, backend, noise_anchor)
    momentum = check_number("momentum", momentum, 0.0, 1.0)
    momentum_attention = check_bool("momentum_attention", momentum_attention)
    dependency_noise = check_bool("dependency_noise", dependency_noise)
    models = _models_with_attention(pipe)
    if "prepare_latents" in vars(pipe):
        raise RuntimeError("pipe is already in video_mode (or its prepare_latents is patched): nest no further")
    mode = VideoMode(pipe, noise)
    try:
        if momentum_attention:
            for model in models:
                mode.handles.append(install_momentum_attention(model, momentum, num_frames, backend=backend))
        if dependency_noise:
            _hook_noise(pipe, noise, mode.hooked)
        yield mode
    finally:
        mode.restore()


def initial_latents(pipe, num_frames: int, *, num_videos: int = 1, height: int | None = None,
                    width: int | None = None, noise_lambda: float = 0.01, search: str = "exact",
                    seed: int | None = None, generator=None, device=None, dtype=None,
                    backend: str | None = None, noise_anchor: float = 0.0) -> torch.Tensor:
    """Dependency-chain initial noise for ``pipe(latents=...)``: [num_videos · num_frames, C, h, w].

    Unit-variance noise (the pipeline scales it by its scheduler's ``init_noise_sigma``), C the VAE's latent
    channels, h x w the latent size of ``height`` x ``width`` (default: the UNet's native size), in the UNet's
    dtype and on its device unless given. ``noise_anchor`` as in :func:`zs2_kernels.dependency_noise`. In float32
    it is also ``sample_video``'s ``latents=``: given back with the same ``seed`` it gives the ``seed`` video.
    """
    noise = NoiseSettings(num_frames, noise_lambda, search, seed, backend, noise_anchor)
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    videos = check_int("num_videos", num_videos, 1)
    height, width = pipeline_resolution(pipe, height, width)
    shape = (videos * num_frames, *frame_latent_shape(pipe, height, width))
    return noise.draw(shape, generator=generator, device=device or pipe.unet.device,
                      dtype=check_dtype(dtype) or pipe.unet.dtype)


@torch.no_grad()
def prompt_travel_embeddings(pipe, prompt: dict, num_frames: int, *, negative_prompt: str | None = None,
                             height: int | None = None, width: int | None = None) -> dict:
    """Per-frame prompt embeddings for prompt travel through a diffusers pipeline in :func:`video_mode`.

    ``prompt`` is a ``{frame: text}`` dict (key 0 required, keys below ``num_frames``), as ``sample_video`` takes
    it: each keyframe's text is encoded once and frames between keyframes get the linear blend of their
    embeddings. Returns the pipeline call's keyword arguments, one row per frame: ``prompt_embeds`` and
    ``negative_prompt_embeds`` [num_frames, L, D] (and SDXL's ``pooled_prompt_embeds`` /
    ``negative_pooled_prompt_embeds`` [num_frames, D']); pass them with no ``prompt``::

        with zs2_kernels.video_mode(pipe, 48, seed=0):
            frames = pipe(**zs2_kernels.prompt_travel_embeddings(pipe, {0: "a cat", 47: "a dog"}, 48)).images
    """
    if not isinstance(prompt, dict):
        raise TypeError(f"prompt must be a {{frame: text}} dict, got {type(prompt).__name__}")
    prompts = check_prompts(prompt)
    num_frames = check_int("num_frames", num_frames, 1)
    check_keyframes(prompts, num_frames)
    height, width = pipeline_resolution(pipe, height, width)
    conditioning = encode_conditioning(pipe, prompts, check_negative_prompts(negative_prompt, 1), 1, True, height,
                                       width, num_frames=num_frames)
    negative, positive = conditioning.embeds
    arguments = {"prompt_embeds": positive, "negative_prompt_embeds": negative}
    if conditioning.added is not None:
        pooled_negative, pooled = conditioning.added["text_embeds"]
        arguments.update(pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=pooled_negative)
    return arguments
