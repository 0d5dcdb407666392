"""Dependency chains instead of independent noise inside diffusers code: the noise hooks both ``sample_video`` (a
stochastic scheduler's per-step noise) and ``video_mode`` (a pipeline's own initial noise too) use.

A hooked method runs with the ``randn_tensor`` of the module that defines it swapped for a function returning
dependency noise chains (:class:`NoiseSettings`), one draw stream after another; a scheduler whose per-step noise
does not come from ``randn_tensor`` (a Brownian tree) is refused, since independent per-frame noise at every step
would undo the dependency noise model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from .._checks import check_int, check_search
from ..ops.noise import dependency_noise
from ..ops.noise.api import check_anchor
from ..seeds import check_seeds, stream_seed, video_generators

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
    noise_anchor: float = 0.0
    chained: bool = True  # False: independent seeded frames (per-frame sampling's step noise, still reproducible)
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
        self.noise_anchor = check_anchor(self.noise_anchor, self.search)
        if self.seed is not None:
            self.seed = check_seeds(self.seed)

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
        if not self.chained:
            generators = source.get("generator") or video_generators(source["seed"], videos)
            if isinstance(generators, torch.Generator):
                generators = [generators] * videos
            frames = [torch.randn((self.num_frames, *latent), generator=g, device=g.device) for g in generators]
            return torch.stack(frames).to(device=device, dtype=dtype or torch.float32).reshape(batch, *latent)
        noise = dependency_noise((videos, self.num_frames, *latent), self.noise_lambda, search=self.search,
                                 noise_anchor=self.noise_anchor,
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


#: Schedulers that add fresh noise at every step by other means than randn_tensor (torchsde's Brownian tree):
#: their noise cannot be made a dependency chain, and independent per-frame noise would undo it.
UNCHAINABLE_SCHEDULERS = ("DPMSolverSDEScheduler", "CosineDPMSolverMultistepScheduler")


def draw_chains_in(owner, method: str, noise: NoiseSettings, stream) -> None:
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
    """Make the per-step noise of a stochastic ``scheduler`` dependency chains (streams 1, 2, ... of ``noise``; with
    ``noise.chained`` off, independent frames drawn from the same seeded streams); deterministic schedulers are left
    alone. Undo with :func:`unhook`."""
    if noise.chained:
        check_chainable(scheduler)
    if draws_step_noise(scheduler):
        draw_chains_in(scheduler, "step", noise, noise.next_stream)


def unhook(owner, method: str) -> None:
    """Remove a wrapper :func:`draw_chains_in` put on ``owner`` (the class's method shows through again)."""
    if owner is not None and method in vars(owner):
        delattr(owner, method)
