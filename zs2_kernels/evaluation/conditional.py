"""Inputs and metrics of the conditional modes on the embedded model: guided video (the embedded ControlNet),
image-to-video and video-to-video, all from held-out digits (the test split: never seen by the model, its ControlNet
or the classifier).

A unit of the study (prompt digit d, seed s) takes the s-th held-out image of its digit as the guide's and the
image-to-video's source; video-to-video edits a moving held-out image of digit (d + EDIT_OFFSET) mod 10 towards the
prompt's digit d, so the prompt metrics measure edit success. The metrics are the quality gates' (tests/evaluation):

* ``guide_fidelity``: per-frame correlation of the output's edge map with the guide's, averaged over frames;
* ``image_distance``: digit-classifier feature distance of frames 1.. to the image (lower: closer to the image);
  ``frame0_psnr``: frame 0 against the image, in dB;
* ``input_psnr``: the edit against its input video (dB; high: the edit kept the input); ``motion_correlation``: the
  correlation of the frame-to-frame shifts of the content's centre of mass with the input's (the edit keeps the
  input's motion; a still video scores 0).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..embedded import digit_condition
from .digits import load_digit_split

MODES = ("text", "guided", "image", "video")
#: Video-to-video edits a held-out digit into the digit this far on (mod 10).
EDIT_OFFSET = 5
#: Guides: shifted up to this fraction of the side and turned up to this many degrees, start pose to end pose.
GUIDE_SHIFT, GUIDE_DEGREES = 0.15, 25.0


@functools.lru_cache(maxsize=1)
def _digit_split():
    """The digits' fixed split, loaded once (every unit of the study draws its inputs from it)."""
    return load_digit_split()


def held_out_images(digit: int) -> torch.Tensor:
    """Every held-out image of ``digit``: [N, 1, 32, 32] in [0, 1] (35 to 37 per digit)."""
    split = _digit_split()
    return split.test_images[split.test_labels == digit] * 0.5 + 0.5


def max_seeds() -> int:
    """The most seeds the study can pair with distinct held-out images: the fewest any digit has."""
    return min(len(held_out_images(digit)) for digit in range(10))


def moving_guides(images: torch.Tensor, frames: int, generator: torch.Generator) -> torch.Tensor:
    """[V * frames, 1, H, W] in [0, 1]: each image [V, 1, H, W] shifted (up to 15 % of the side) and rotated (up to
    25 degrees) from a random start pose to a random end pose, linearly over the frames."""
    videos = len(images)
    start, end = (torch.rand(2, videos, 3, generator=generator) * 2 - 1).unbind(0)
    t = torch.linspace(0, 1, frames).view(1, frames, 1)
    pose = (start.unsqueeze(1) * (1 - t) + end.unsqueeze(1) * t).reshape(-1, 3)  # [V * frames, 3]
    angle, shift = pose[:, 0] * math.radians(GUIDE_DEGREES), pose[:, 1:] * 2 * GUIDE_SHIFT  # the grid spans 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, -shift[:, 0]], 1), torch.stack([sin, cos, -shift[:, 1]], 1)], 1)
    stacked = images.repeat_interleave(frames, dim=0)
    grid = F.affine_grid(theta, list(stacked.shape), align_corners=False)
    return F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def moving_videos(images: torch.Tensor, frames: int) -> torch.Tensor:
    """[V, frames, 3, H, W]: each image [V, 1, H, W] shifted along x by 0.3·sin(2πt) and along y by 0.15·sin(4πt + 1)
    (grid units, the side spans 2), t = f / frames: motion that changes direction, so its shifts have variance."""
    t = torch.arange(frames) / frames
    theta = torch.zeros(frames, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = -0.3 * torch.sin(2 * math.pi * t), -0.15 * torch.sin(4 * math.pi * t + 1)
    grid = F.affine_grid(theta, [frames, 1, *images.shape[-2:]], align_corners=False)
    return torch.stack([F.grid_sample(image.expand(frames, -1, -1, -1), grid, align_corners=False)
                        for image in images]).expand(-1, -1, 3, -1, -1)


def edge_correlation(frames: torch.Tensor, guides: torch.Tensor) -> torch.Tensor:
    """Per-frame Pearson correlation of the edge maps of ``frames`` and ``guides`` ([N, C, H, W] in [0, 1])."""
    a, b = (digit_condition(x)[:, 0].flatten(1) for x in (frames, guides))
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)


def flicker(videos: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of consecutive frames, per video [V, F, C, H, W] in [0, 1]."""
    return (videos[:, 1:] - videos[:, :-1]).abs().mean(dim=(1, 2, 3, 4))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per video [V, ...] in [0, 1], in dB."""
    return 10 * torch.log10(1 / (a - b).square().flatten(1).mean(1).clamp_min(1e-12))


def shifts(videos: torch.Tensor) -> torch.Tensor:
    """[V, 2 (F - 1)]: the frame-to-frame shift (x, then y) of each frame's intensity centre of mass, in pixels."""
    grey = videos.mean(2)
    weights = grey / grey.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
    side = torch.arange(grey.shape[-1], dtype=grey.dtype)
    centre = torch.stack([(weights.sum(-2) * side).sum(-1), (weights.sum(-1) * side).sum(-1)], dim=-1)
    return (centre[:, 1:] - centre[:, :-1]).transpose(1, 2).flatten(1)


def motion_correlation(output: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Per video, Pearson correlation of the output's shift sequence with the input's (0 where one has none)."""
    a, b = shifts(output), shifts(given)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 1e-12, (a * b).sum(1) / norms.clamp_min(1e-12), torch.zeros_like(norms))


# --------------------------------------------------------------------------- one unit of the study
def unit_inputs(digit: int, seed: int, frames: int) -> dict:
    """A unit's inputs, the same for every configuration: its digit's ``seed``-th held-out image [1, 32, 32], that
    image as a moving guide [F, 1, 32, 32] (poses drawn from (digit, seed)), and the moving video [F, 3, 32, 32] of
    the ``seed``-th held-out image of digit (digit + EDIT_OFFSET) mod 10."""
    images = held_out_images(digit)
    if seed >= len(images):
        raise ValueError(f"--seeds must be at most {len(images)} for the conditional study (one held-out image of "
                         f"digit {digit} per seed), got {seed + 1}")
    image = images[seed]
    generator = torch.Generator().manual_seed(1000 * digit + seed)
    source = held_out_images((digit + EDIT_OFFSET) % 10)[seed]
    return {"image": image, "guide": moving_guides(image[None], frames, generator),
            "video": moving_videos(source[None], frames)[0]}


def sampler_arguments(mode: str, inputs: list[dict], strength: float | None) -> dict:
    """``sample_video`` arguments of one batch of units in ``mode`` (their inputs stacked, one per video)."""
    if mode == "guided":
        return {"control_video": torch.stack([digit_condition(i["guide"]) for i in inputs])}
    if mode == "image":
        return {"image": torch.stack([i["image"] for i in inputs])}
    if mode == "video":
        return {"video": torch.stack([i["video"] for i in inputs]), "strength": strength}
    return {}


def unit_metrics(mode: str, frames: torch.Tensor, inputs: dict, embed) -> dict:
    """A unit's conditional metrics: ``frames`` [F, 3, H, W] in [0, 1]; ``embed`` maps uint8 frames [N, 3, H, W]
    to the scorer's features. Plain text-to-video units (mode "text") get the guide and image metrics against
    their unit's inputs: the baselines of the guided and image-to-video rows."""
    values = {}
    if mode in ("text", "guided"):
        values["guide_fidelity"] = edge_correlation(frames, inputs["guide"]).mean().item()
    if mode in ("text", "image"):
        image = inputs["image"].expand(3, -1, -1)
        target = embed(_uint8(image[None]))
        later = embed(_uint8(frames[1:])) if len(frames) > 1 else target
        values["image_distance"] = (later - target).norm(dim=-1).mean().item()
    if mode == "image":
        values["frame0_psnr"] = psnr(frames[:1], image[None]).item()
    if mode == "video":
        values["input_psnr"] = psnr(frames[None], inputs["video"][None]).item()
        values["motion_correlation"] = motion_correlation(frames[None], inputs["video"][None]).item()
    return values


def _uint8(frames: torch.Tensor) -> torch.Tensor:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)
