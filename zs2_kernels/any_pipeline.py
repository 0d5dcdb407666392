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
import threading
from dataclasses import dataclass, field

import torch

from ._checks import check_bool, check_dtype, check_int, check_number, check_search
from .attention import MomentumAttentionHandle, install_momentum_attention
from .ops.noise.chain import dependency_noise
from .seeds import check_seed, stream_seed

#: Swapping a module's ``randn_tensor`` is process-wide for that module: one hooked draw at a time.
_HOOK_LOCK = threading.RLock()


@dataclass
class NoiseSettings:
    """How the dependency chain is drawn (see :func:`zs2_kernels.dependency_noise`)."""

    num_frames: int
    noise_lambda: float = 0.01
    search: str = "exact"
    seed: int | None = None
    backend: str | None = None
    draws: int = field(default=0, init=False)  # noise draws since the pipeline call began

    def first_stream(self) -> int:
        """The initial noise's stream (0); a new pipeline call: its step noise starts over at stream 1."""
        self.draws = 0
        return 0

    def next_stream(self) -> int:
        """The stream of a scheduler's next per-step draw: 1, 2, ... within one pipeline call."""
        self.draws += 1
        return self.draws

    def __post_init__(self):
        check_int("num_frames", self.num_frames, 1)
        self.noise_lambda = check_search(self.noise_lambda, self.search)
        if self.seed is not None:
            self.seed = check_seed(self.seed)

    def draw(self, shape, generator=None, device=None, dtype=None, stream: int = 0) -> torch.Tensor:
        """Noise of ``shape`` = (videos · frames, *latent) with every video's frames one chain, or an error.

        ``stream`` 0 is the initial noise (seeded by ``seed`` itself, as :func:`initial_latents`); a
        stochastic scheduler's k-th draw uses stream k, seeded by (seed, k), independent of the others.
        """
        batch, *latent = shape
        if batch % self.num_frames:
            raise ValueError(f"the pipeline drew noise for {batch} images, not a multiple of num_frames "
                             f"({self.num_frames}): pass num_frames prompts per video, e.g. prompt=[p] * "
                             f"{self.num_frames}, and num_images_per_prompt=1")
        videos = batch // self.num_frames
        if self.seed is not None:
            source = {"seed": self.seed if stream == 0 else stream_seed(self.seed, stream)}
        else:
            source = {"generator": _per_video(generator, videos, self.num_frames)}
        noise = dependency_noise((videos, self.num_frames, *latent), self.noise_lambda, search=self.search,
                                 device=device, dtype=dtype or torch.float32, backend=self.backend, **source)
        return noise.reshape(batch, *latent)


def _per_video(generator, videos: int, num_frames: int):
    """The pipeline call's generator as dependency_noise takes it: one generator, or one per video.

    diffusers' per-image list (one per frame here) gives each video the generator of its first frame; a list of
    one per video is taken too (initial_latents), though diffusers' own calls refuse it.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    generators = list(generator)
    if len(generators) == videos * num_frames and num_frames > 1:
        return generators[::num_frames]
    if len(generators) != videos:
        raise ValueError(f"generator must be one torch.Generator, one per video ({videos}) or one per image "
                         f"({videos * num_frames}), got a list of {len(generators)}")
    return generators


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


#: Schedulers that add fresh noise at every step by other means than randn_tensor (torchsde's Brownian tree):
#: their noise cannot be made a dependency chain, and independent per-frame noise would undo it.
UNCHAINABLE_SCHEDULERS = ("DPMSolverSDEScheduler", "CosineDPMSolverMultistepScheduler")


def _draw_chains_in(owner, method: str, noise: NoiseSettings, stream) -> None:
    """Wrap ``owner.<method>`` (an instance attribute shadowing the class's) so that every ``randn_tensor``
    draw of the module defining it returns dependency chains; ``stream()`` gives each draw's stream index."""
    bound = getattr(owner, method)
    module_globals = bound.__func__.__globals__
    if "randn_tensor" not in module_globals:
        raise TypeError(f"{type(owner).__name__}.{method} does not draw its noise with diffusers' randn_tensor"
                        + ("; pass latents=zs2_kernels.initial_latents(...) instead" if method == "prepare_latents"
                           else ""))

    def chain_noise(shape, generator=None, device=None, dtype=None, layout=None):
        return noise.draw(shape, generator=generator, device=device, dtype=dtype, stream=stream())

    def with_chains(*args, **kwargs):
        with _HOOK_LOCK:
            original = module_globals["randn_tensor"]
            module_globals["randn_tensor"] = chain_noise
            try:
                return bound(*args, **kwargs)
            finally:
                module_globals["randn_tensor"] = original

    setattr(owner, method, with_chains)


def check_chainable(scheduler) -> None:
    """Raise ValueError for a scheduler whose per-step noise cannot be made a dependency chain."""
    if type(scheduler).__name__ in UNCHAINABLE_SCHEDULERS:
        raise ValueError(f"{type(scheduler).__name__} adds independent noise to every frame at every step (from "
                         "a Brownian tree, which cannot be made a dependency chain), undoing the dependency "
                         "noise model: use a deterministic scheduler (DDIM, DPM++ 2M, UniPC, Euler) or one that "
                         "draws with randn_tensor (Euler ancestral, DDPM, DDIM with eta > 0, SDE-DPM++)")


def draws_step_noise(scheduler) -> bool:
    """True when ``scheduler.step`` may draw fresh noise with diffusers' randn_tensor (ancestral, DDPM, eta > 0)."""
    return "randn_tensor" in scheduler.step.__func__.__globals__


def chain_step_noise(scheduler, noise: NoiseSettings) -> None:
    """Make the per-step noise of a stochastic ``scheduler`` dependency chains (streams 1, 2, ... of ``noise``);
    deterministic schedulers are left alone. Undo with :func:`unhook`."""
    check_chainable(scheduler)
    if draws_step_noise(scheduler):
        _draw_chains_in(scheduler, "step", noise, noise.next_stream)


def unhook(owner, method: str) -> None:
    """Remove a wrapper :func:`_draw_chains_in` put on ``owner`` (the class's method shows through again)."""
    if owner is not None and method in vars(owner):
        delattr(owner, method)


def _hook_noise(pipe, noise: NoiseSettings, hooked: list) -> None:
    """The pipeline's initial noise (stream 0) and its scheduler's per-step noise (streams 1, 2, ...) as chains;
    each (owner, method) wrapped is appended to ``hooked`` as soon as it is."""
    if not hasattr(getattr(pipe, "prepare_latents", None), "__func__"):
        raise TypeError(f"{type(pipe).__name__} has no prepare_latents method to draw the dependency noise in")
    check_chainable(pipe.scheduler)
    if "step" in vars(pipe.scheduler):
        raise RuntimeError("pipe.scheduler is already hooked by another video_mode (pipelines built from the same "
                           "components share it): leave that block first, or give this pipeline its own scheduler")
    _draw_chains_in(pipe, "prepare_latents", noise, noise.first_stream)
    hooked.append((pipe, "prepare_latents"))
    if noise.seed is not None:
        _seed_other_draws(pipe, noise.seed)
    chain_step_noise(pipe.scheduler, noise)
    hooked.append((pipe.scheduler, "step"))


def _seed_other_draws(pipe, seed: int) -> None:
    """With a seed, prepare_latents' other random draws (Img2Img's VAE posterior sample) use a generator seeded by
    it when the call gives none, so a seeded video is the same on every call, whatever torch's global RNG."""
    chained = pipe.prepare_latents
    signature = inspect.signature(type(pipe).prepare_latents)
    if "generator" not in signature.parameters:
        return

    def seeded(*args, **kwargs):
        bound = signature.bind(pipe, *args, **kwargs)
        if bound.arguments.get("generator") is None:
            bound.arguments["generator"] = torch.Generator().manual_seed(stream_seed(seed, 0))
        return chained(*bound.args[1:], **bound.kwargs)

    pipe.prepare_latents = seeded


@contextlib.contextmanager
def video_mode(pipe, num_frames: int, *, momentum: float = 0.98, noise_lambda: float = 0.01,
               search: str = "exact", seed: int | None = None, momentum_attention: bool = True,
               dependency_noise: bool = True, backend: str | None = None):
    """Make any diffusers pipeline sample ZS² videos inside a ``with`` block.

    ``pipe(prompt=[p] * num_frames, ...)`` then returns the frames of one video (of several, with the prompts
    of each video after one another). Everything is restored on exit, also on exceptions.

    Args:
        pipe: a diffusers pipeline with ``unet`` (and optionally ``controlnet``): StableDiffusion,
            ControlNet, Instruct-Pix2Pix, Img2Img and their SDXL variants, compiled modules too.
        num_frames: frames per video: the pipeline's batch must be videos x num_frames images.
        momentum: mu in [0, 1] of temporal momentum attention (0: per-frame, 1: cross-frame to frame 0).
        noise_lambda, search: the dependency noise model's KL target and search mode.
        seed: each video's noise depends only on (seed, its index); None: the pipeline call's
            ``generator`` (one, or diffusers' one per image: each video uses its first frame's), else torch's
            global RNG. With a seed, Img2Img's VAE sample is seeded too when the call passes no generator.
        momentum_attention / dependency_noise: switch either component off.
        backend: op backend (default: see :mod:`zs2_kernels.ops.backend`).

    Yields a :class:`VideoMode` (its ``handles``, its ``noise`` settings).
    """
    noise = NoiseSettings(num_frames, noise_lambda, search, seed, backend)
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
                    backend: str | None = None) -> torch.Tensor:
    """Dependency-chain initial noise for ``pipe(latents=...)``: [num_videos · num_frames, C, h, w].

    Unit-variance noise (the pipeline scales it by its scheduler's ``init_noise_sigma``), C the VAE's latent
    channels, h x w the latent size of ``height`` x ``width`` (default: the UNet's native size), in the UNet's
    dtype and on its device unless given.
    """
    noise = NoiseSettings(num_frames, noise_lambda, search, seed, backend)
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    videos = check_int("num_videos", num_videos, 1)
    factor = pipe.vae_scale_factor
    height = check_int("height", height if height is not None else pipe.unet.config.sample_size * factor, factor)
    width = check_int("width", width if width is not None else pipe.unet.config.sample_size * factor, factor)
    for name, value in (("height", height), ("width", width)):
        if value % factor:
            raise ValueError(f"{name} must be a multiple of the VAE factor {factor}, got {value}")
    shape = (videos * num_frames, pipe.vae.config.latent_channels, height // factor, width // factor)
    return noise.draw(shape, generator=generator, device=device or pipe.unet.device,
                      dtype=check_dtype(dtype) or pipe.unet.dtype)
