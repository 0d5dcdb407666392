"""Image-to-video and video-to-video for ``sample_video``: the given frames enter a ZS² video through its noise.

* Image-to-video (``image=``): the image is encoded (z = mode of the VAE posterior, scaled), DDIM-inverted without
  guidance to the first sampling timestep, and that inverted noise x_T becomes the *first* noise of the dependency
  chain: every later frame's initial noise is correlated with it and inherits the image's structure. Frame 0 is held
  on the inversion trajectory at every step (the anchor momentum attention looks back to) and ends exactly at z.
* Video-to-video (``video=``, ``strength``): SDEdit. The encoded frames are noised to the strength's timestep with
  dependency-chain noise (correlated across frames, so the edit does not flicker) and denoised from there.

Why, and what was measured: zs2_kernels/DESIGN.md §1.3. The VAE calls are in ``vae.py``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from .._checks import check_number
from ..video_io import frames_tensor
from .vae import encode


@dataclass
class EditInput:
    """The checked ``image`` or ``video`` of a call (a :class:`~zs2_kernels.sampling.modes.Start`): frames float32
    [V or 1, F, 3, H, W] in [0, 1] (F = 1 for an image), and the strength (video-to-video only)."""

    kind: str
    frames: torch.Tensor
    strength: float | None = None

    def frame_count(self, num_frames: int | None) -> int | None:
        """A video's length (``num_frames``, if given, must match it); an image leaves ``num_frames`` as it is."""
        if self.kind == "image":
            return num_frames
        length = self.frames.shape[1]
        if num_frames is not None and num_frames != length:
            raise ValueError(f"video has {length} frames but num_frames is {num_frames}: leave num_frames out to "
                             "edit every frame, or pass that many frames")
        return length

    def size(self, factor: int) -> tuple[int, int]:
        """The frames' (height, width) as the video's, refused unless multiples of the VAE's downscale ``factor``."""
        height, width = self.frames.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(f"{self.kind} is {height}x{width} pixels: its sides must be multiples of the model's "
                             f"downscale factor {factor} (resize or crop it)")
        return height, width

    def describe(self) -> dict:
        return {"edit": self.kind, "strength": self.strength}

    def prepare(self, pipe, scheduler, conditioning, *, videos: int, height: int, width: int, chunk_size: int):
        """Encode (and for an image, invert) the given frames: an :class:`ImageStart` or :class:`VideoStart`."""
        return prepare_edit(pipe, scheduler, conditioning, self, videos=videos, height=height, width=width,
                            chunk_size=chunk_size)


def check_edit(image, video, strength, control_video, num_inference_steps) -> EditInput | None:
    """The image or video to start from, checked without a model (shape, channels, range, strength), or None."""
    if image is not None and video is not None:
        raise ValueError("pass either image (image-to-video) or video (video-to-video editing), not both")
    if strength is not None and video is None:
        raise ValueError("strength needs video= (it says how far the video is noised before it is denoised)")
    if image is None and video is None:
        return None
    name = "image" if image is not None else "video"
    if control_video is not None:
        raise ValueError(f"{name} cannot be combined with control_video yet: use video_mode around a ControlNet "
                         "Img2Img pipeline for that")
    frames = frames_tensor(image if image is not None else video, name)
    one, layout = (3, "[C, H, W] or [V, C, H, W]") if name == "image" else (4, "[F, C, H, W] or [V, F, C, H, W]")
    if frames.dim() not in (one, one + 1) or frames.shape[-3] not in (1, 3) or 0 in frames.shape:
        raise ValueError(f"{name} must be {layout} with C 1 or 3 (arrays and PIL: channels last), got shape "
                         f"{tuple(frames.shape)}")
    frames = frames.unsqueeze(0) if frames.dim() == one else frames
    frames = frames.unsqueeze(1) if name == "image" else frames
    if not frames.is_floating_point() or not torch.isfinite(frames).all() or frames.min() < 0 or frames.max() > 1:
        raise ValueError(f"{name} values must be floats in [0, 1] (uint8 arrays and PIL images are scaled by 1/255; "
                         "divide a uint8 tensor by 255)")
    strength = check_strength(strength, num_inference_steps) if name == "video" else None
    return EditInput(name, frames.expand(-1, -1, 3, -1, -1).float(), strength)


def check_strength(strength, num_inference_steps) -> float:
    """Video-to-video's strength in (0, 1] (None: 0.8, diffusers' Img2Img default), refused where it would run no
    step: int(num_inference_steps · strength) = 0 (steps that are not an int >= 1 are refused by their own check)."""
    given = 0.8 if strength is None else strength
    try:
        strength = check_number("strength", given, 0.0, 1.0)
    except ValueError:
        raise ValueError(f"strength must be in (0, 1], got {given!r}") from None
    if strength == 0:
        raise ValueError("strength must be in (0, 1]: 0 would return the video unchanged")
    steps = num_inference_steps
    countable = isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps >= 1
    if countable and int(steps * strength) == 0:
        raise ValueError(f"strength {strength} of num_inference_steps {steps} runs no step (int(steps · strength) = "
                         f"0): raise strength or num_inference_steps")
    return strength


def noise_levels(scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sampling timestep, (alpha_bar, scale): a latent of the scheduler at that step is
    scale · (sqrt(alpha_bar) · x0 + sqrt(1 - alpha_bar) · eps). Read from the scheduler's own ``add_noise`` as
    x0 and eps coefficients (s, n): alpha_bar = s² / (s² + n²), scale = sqrt(s² + n²) (1 for DDIM-style schedulers,
    sqrt(1 + sigma²) for sigma-based ones such as Euler), so any diffusers scheduler is read the same way."""
    steps = scheduler.timesteps
    one, zero = torch.ones(len(steps), device=steps.device), torch.zeros(len(steps), device=steps.device)
    s, n = (scheduler.add_noise(a, b, steps).double().cpu() for a, b in ((one, zero), (zero, one)))
    return s.square() / (s.square() + n.square()), (s.square() + n.square()).sqrt()


def _epsilon(prediction, sample, alpha, prediction_type: str):
    """The noise a UNet output stands for, at a sample taken to be at noise level ``alpha`` (diffusers' DDIM rule).
    A model predicting the clean sample cannot say which noise a clean sample (alpha = 1) carries: refused."""
    if prediction_type == "epsilon":
        return prediction
    if prediction_type == "v_prediction":
        return alpha ** 0.5 * prediction + (1 - alpha) ** 0.5 * sample
    raise ValueError(f"image needs a model predicting epsilon or v (prediction_type), got {prediction_type!r}")


def ddim_invert(pipe, scheduler, latents: torch.Tensor, hidden, extra) -> list[torch.Tensor]:
    """DDIM inversion of clean latents [V, c, h, w] along the sampling timesteps, without guidance.

    Returns x_k [V, c, h, w] float32 for every sampling timestep t_k (sampling order: x_0 is the most noisy), each
    as sqrt(a_k)·x0 + sqrt(1 - a_k)·eps (unit variance, scheduler scale not applied). From the clean latents (a = 1),
    each step predicts eps at the current sample with the next timestep and moves along the deterministic DDIM path:
    x' = sqrt(a')·(x - sqrt(1 - a)·eps) / sqrt(a) + sqrt(1 - a')·eps — diffusers' ``DDIMInverseScheduler``.
    Guidance-free because classifier-free guidance makes the inversion drift (Mokady et al., Null-text Inversion).
    """
    alphas, _ = noise_levels(scheduler)
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    sample, alpha, path = latents.float(), 1.0, []
    for k in reversed(range(len(scheduler.timesteps))):
        output = pipe.unet(sample.to(pipe.unet.dtype), scheduler.timesteps[k], encoder_hidden_states=hidden,
                           added_cond_kwargs=extra).sample.float()
        eps = _epsilon(output, sample, alpha, prediction_type)
        clean = (sample - (1 - alpha) ** 0.5 * eps) / alpha ** 0.5
        alpha = float(alphas[k])
        sample = alpha ** 0.5 * clean + (1 - alpha) ** 0.5 * eps
        path.append(sample)
    return path[::-1]


@dataclass
class ImageStart:
    """Image-to-video: frame 0's latents at every step (``held[k]`` before step k, ``held[-1]`` = z: the image's
    latents), and the chain's first noise."""

    held: list
    first: torch.Tensor

    def begin(self, scheduler, noise: torch.Tensor, callback):
        """(initial latents, timesteps to run, step-end callback) from the chain ``noise`` [V, F, c, h, w]."""
        latents = torch.cat([self.held[0].unsqueeze(1), noise[:, 1:] * scheduler.init_noise_sigma], dim=1)

        def hold(pipe, step, t, tensors):
            moved = tensors["latents"]
            held = torch.cat([self.held[step + 1].unsqueeze(1).to(moved.dtype), moved[:, 1:]], dim=1)
            return {"latents": held} if callback is None else callback(pipe, step, t, {"latents": held})

        return latents, scheduler.timesteps, hold


@dataclass
class VideoStart:
    """Video-to-video (SDEdit): the encoded frames [V, F, c, h, w] and the strength (how many of the steps run)."""

    latents: torch.Tensor
    strength: float
    first = None

    def begin(self, scheduler, noise: torch.Tensor, callback):
        """(noised latents at the strength's timestep, the timesteps from there, ``callback``), as diffusers'
        Img2Img pipelines count them: int(steps · strength) steps are run."""
        steps = len(scheduler.timesteps) // scheduler.order
        begin = (steps - min(int(steps * self.strength), steps)) * scheduler.order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        timesteps = scheduler.timesteps[begin:]
        flat = noise.flatten(0, 1)
        noised = scheduler.add_noise(self.latents.flatten(0, 1).to(flat), flat, timesteps[:1].repeat(len(flat)))
        return noised.view(noise.shape), timesteps, callback


def prepare_edit(pipe, scheduler, conditioning, edit: EditInput, *, videos: int, height: int, width: int,
                 chunk_size: int):
    """Encode (and for an image, invert) the given frames: an :class:`ImageStart` or :class:`VideoStart`."""
    given_height, given_width = edit.frames.shape[-2:]
    if (given_height, given_width) != (height, width):
        raise ValueError(f"{edit.kind} is {given_height}x{given_width} pixels but the video is {height}x{width}: "
                         "resize it, or leave height/width out to take its size")
    if edit.frames.shape[0] not in (1, videos):
        given = f"{edit.frames.shape[0]} {'images' if edit.kind == 'image' else 'videos'}"
        raise ValueError(f"{edit.kind} holds {given}; give one for all videos or one per video ({videos})")
    if pipe.vae.config.in_channels != 3:
        raise ValueError(f"{edit.kind} needs a VAE taking RGB images, this one takes {pipe.vae.config.in_channels}")
    given, num_frames = edit.frames.shape[:2]
    latents = encode(pipe, edit.frames.flatten(0, 1), chunk_size).to(pipe._execution_device)
    latents = latents.view(given, num_frames, *latents.shape[1:]).expand(videos, -1, -1, -1, -1)  # encoded once
    if edit.kind == "video":
        return VideoStart(latents, edit.strength)
    hidden, extra = conditioning.for_frames(1)
    cond = slice(hidden.shape[0] - videos, None)  # the conditional half (all of it without guidance)
    path = ddim_invert(pipe, scheduler, latents[:, 0], hidden[cond],
                       None if extra is None else {k: v[cond] for k, v in extra.items()})
    _, scales = noise_levels(scheduler)
    held = [x * float(scale) for x, scale in zip(path, scales)] + [latents[:, 0]]
    return ImageStart(held, path[0])

