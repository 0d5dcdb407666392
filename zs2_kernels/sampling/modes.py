"""The two seams of the conditional modes: what steers each denoising step, and what the video starts from.

A mode is one module implementing one of these protocols; the sampler calls nothing else of it:

* :class:`Steering` — extra inputs of every UNet call beside the prompt. ``control.py`` (ControlNets) is one.
* :class:`Start` — the initial latents and the steps to run, instead of noise alone from the first timestep.
  ``editing.py`` (image-to-video, video-to-video) is one.

A request holds at most one of each, checked without a model when the request is built. When sampling, the sampler
asks each for the frame count and size its inputs imply, prepares it on the loaded pipeline once (loading nets,
encoding frames), and calls the prepared object per UNet call (steering) or once before denoising (start).
Adding a mode: zs2_kernels/DESIGN.md §5.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Steering(Protocol):
    """Checked inputs that steer every denoising step (made without a model)."""

    def frame_count(self, num_frames: int | None) -> int | None:
        """The video's frame count: ``num_frames`` if given (raising if the inputs hold another count), else the
        count the inputs hold, or None when they do not say."""

    def size(self) -> tuple[int, int] | None:
        """(height, width) in pixels the inputs imply, or None."""

    def moved_with_pipeline(self, pipe) -> list:
        """Modules that are moved and cast with a given pipeline for the call (and given back unchanged)."""

    def prepare(self, pipe, *, num_frames: int, videos: int, height: int, width: int) -> SteeringRun:
        """Load and check everything on the loaded pipeline: the object the denoising loop calls."""


class SteeringRun(Protocol):
    """A prepared steering: called once per UNet call."""

    #: The models it runs that get momentum attention (their states are carried across chunks like the UNet's).
    models: list

    def compile(self, options: dict) -> None:
        """Run its models through ``torch.compile`` with these options from now on."""

    def unet_arguments(self, model_input: torch.Tensor, t, step: int, steps: int, hidden: torch.Tensor, extra,
                       frames: slice, halves: int) -> dict:
        """Extra keyword arguments of this UNet call on frames ``frames`` of every video (``halves`` 2 with
        classifier-free guidance: the batch is laid out (guidance half, video, frame))."""


class Start(Protocol):
    """Checked inputs the video starts from (made without a model)."""

    def frame_count(self, num_frames: int | None) -> int | None:
        """As :meth:`Steering.frame_count`."""

    def size(self, factor: int) -> tuple[int, int] | None:
        """(height, width) in pixels the inputs imply, refused unless multiples of the VAE's ``factor``."""

    def describe(self) -> dict:
        """What the result's stats record about this start (its kind and settings)."""

    def prepare(self, pipe, scheduler, conditioning, *, videos: int, height: int, width: int,
                chunk_size: int) -> StartRun:
        """Encode (invert, ...) the inputs on the loaded pipeline with the call's scheduler and prompts."""


class StartRun(Protocol):
    """A prepared start."""

    #: The noise chain's first frame per video [V, c, h, w], or None (a drawn one).
    first: torch.Tensor | None

    def begin(self, scheduler, noise: torch.Tensor, callback):
        """(initial latents [V, F, c, h, w], timesteps to run, step-end callback) from the noise chain [V, F, c, h,
        w] (unit variance) and the user's callback (or None)."""
