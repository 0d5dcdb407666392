"""Prompt travel: one video's prompt changes over its frames, ``prompt={0: "a cat", 47: "a dog"}``.

A video's prompt is a dict from keyframe index to text (key 0 required). Each keyframe's text is encoded once; frame
f between keyframes a < b gets the linear interpolation of their embeddings (weight (f - a)/(b - a) on b's), and
frames after the last keyframe keep its embedding. SDXL's pooled embeddings are interpolated the same way. The
conditioning is then per frame, looked up per frame range when the UNet runs in chunks.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptTravel:
    """One video's keyframes: ((frame, text), ...) in frame order, the first at frame 0."""

    keyframes: tuple[tuple[int, str], ...]

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.keyframes]

    def weights(self, num_frames: int) -> torch.Tensor:
        """[num_frames, keyframes] float32: each frame's interpolation weights over the keyframes (rows sum to 1)."""
        weights = torch.zeros(num_frames, len(self.keyframes))
        for k, (start, _) in enumerate(self.keyframes):
            stop = self.keyframes[k + 1][0] if k + 1 < len(self.keyframes) else num_frames
            for frame in range(start, min(stop, num_frames)):
                if k + 1 < len(self.keyframes):
                    share = (frame - start) / (stop - start)
                    weights[frame, k], weights[frame, k + 1] = 1 - share, share
                else:
                    weights[frame, k] = 1.0
        return weights


def check_travel(schedule: dict) -> PromptTravel:
    """A ``{frame: text}`` dict as a :class:`PromptTravel`; raises naming ``prompt``."""
    keyframes = []
    for frame, text in schedule.items():
        if isinstance(frame, bool) or not isinstance(frame, numbers.Integral) or frame < 0:
            raise TypeError(f"prompt keyframes must be ints >= 0 (frame indices), got {frame!r}")
        if not isinstance(text, str) or not text.strip():
            raise TypeError(f"prompt keyframe {frame} must map to a non-empty string, got {text!r}")
        keyframes.append((int(frame), text))
    if 0 not in dict(keyframes):
        raise ValueError(f"a prompt dict must have keyframe 0 (the first frame's prompt), got keys {sorted(schedule)}")
    return PromptTravel(tuple(sorted(keyframes)))


def check_keyframes(prompts, num_frames: int) -> None:
    """Every keyframe of every travelling prompt lies within the video's frames [0, num_frames)."""
    for prompt in prompts or []:
        if isinstance(prompt, PromptTravel) and prompt.keyframes[-1][0] >= num_frames:
            raise ValueError(f"prompt keyframe {prompt.keyframes[-1][0]} is outside the video's frames [0, "
                             f"{num_frames}): keyframes must be frame indices below num_frames")


def per_frame(prompts, keyframe_embeddings: list, num_frames: int) -> torch.Tensor:
    """[P, F, *embedding]: each prompt's keyframe embeddings ([K, *embedding], in ``keyframe_embeddings``)
    interpolated over its frames (a plain string: its one embedding on every frame)."""
    rows = []
    for prompt, keys in zip(prompts, keyframe_embeddings):
        travel = prompt if isinstance(prompt, PromptTravel) else PromptTravel(((0, prompt),))
        weights = travel.weights(num_frames).to(keys.device, torch.float32)
        rows.append(torch.einsum("fk,k...->f...", weights, keys.float()).to(keys.dtype))
    return torch.stack(rows)
