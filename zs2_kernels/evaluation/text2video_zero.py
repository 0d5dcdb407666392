"""Text2Video-Zero, the paper's baseline: diffusers' ``TextToVideoZeroPipeline`` (its SDXL variant for SDXL models)
built from a pipeline's own components, with its schedule fitted to the step count.

Its defaults: DDIM, t0 = 44 and t1 = 47 of 50 steps (the latents of frame 0 are noised back from t0 to t1 and warped
by a global motion field), motion of 12 units of its 512-wide flow grid per frame: diffusers normalises the flow by
that grid, so the content moves 12/512 = 2.3% of the frame's width per frame whatever the latent size.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_STEPS, DEFAULT_T0, DEFAULT_T1 = 50, 44, 47
#: Its default motion_field_strength_x/_y: units of the 512-wide flow grid per frame.
DEFAULT_MOTION = 12.0


def schedule(steps: int) -> dict:
    """t0 < t1 < steps at the fractions of the schedule its defaults take (44 and 47 of 50)."""
    if steps < 2:
        raise ValueError(f"Text2Video-Zero needs at least 2 steps (t0 < t1 < steps), got {steps}")
    t1 = min(round(DEFAULT_T1 * steps / DEFAULT_STEPS), steps - 1)
    t0 = max(min(round(DEFAULT_T0 * steps / DEFAULT_STEPS), t1 - 1), 0)
    return {"t0": t0, "t1": t1}


def text2video_zero_pipeline(pipe):
    """diffusers' Text2Video-Zero on ``pipe``'s modules (shared, not copied), with a DDIM scheduler and no progress
    bars. Its constructor installs its cross-frame attention processors on the shared UNet."""
    from diffusers import DDIMScheduler, TextToVideoZeroPipeline, TextToVideoZeroSDXLPipeline

    shared = dict(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                  scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
    if getattr(pipe, "text_encoder_2", None) is not None:
        t2vz = TextToVideoZeroSDXLPipeline(**shared, text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2)
    else:
        t2vz = TextToVideoZeroPipeline(**shared, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    t2vz.set_progress_bar_config(disable=True)
    return t2vz


def chunk_frame_ids(frames: int, chunk: int | None) -> list[list[int]]:
    """The ``frame_ids`` of each Text2Video-Zero call: one call of every frame, or diffusers' long-video recipe.

    The recipe (diffusers docs, "Text2Video-Zero", long videos): ``chunk_ids = np.arange(0, frames, chunk - 1)``,
    each call generating ``[0] + range(start, end)`` and keeping all but its first frame (frame 0 again).
    """
    if chunk is None or chunk >= frames:
        return [list(range(frames))]
    if chunk < 2:
        raise ValueError(f"the Text2Video-Zero chunk recipe needs chunks of at least 2 frames, got {chunk}")
    starts = list(range(0, frames, chunk - 1))
    ends = starts[1:] + [frames]
    return [[0, *range(start, end)] for start, end in zip(starts, ends)]


def sample(t2vz, prompt: str, *, frames: int, height: int, width: int, steps: int, guidance: float, seed: int,
           chunk: int | None = None, output_type: str = "np", **settings):
    """One video: float32 [F, H, W, 3] in [0, 1] (``output_type="np"``) or latents [F, c, h, w] (``"latent"``).

    Unchunked, or by the chunk recipe (every call seeded with ``seed`` again, as the recipe does). ``settings``
    override the defaults: the schedule fitted to ``steps`` and the default motion of 12/512 of the frame."""
    settings = {**schedule(steps), "motion_field_strength_x": DEFAULT_MOTION,
                "motion_field_strength_y": DEFAULT_MOTION, **settings}
    calls = chunk_frame_ids(frames, chunk)
    parts = []
    with torch.no_grad():
        for frame_ids in calls:
            result = t2vz(prompt, video_length=len(frame_ids), height=height, width=width, num_inference_steps=steps,
                          guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
                          output_type=output_type, frame_ids=None if len(calls) == 1 else frame_ids, **settings)
            images = result.images
            parts.append(images if len(calls) == 1 else images[1:])
    video = torch.cat(parts) if output_type == "latent" else np.concatenate(
        [np.asarray(part, dtype=np.float32) for part in parts])
    if video.shape[0] != frames:
        raise RuntimeError(f"the Text2Video-Zero recipe made {video.shape[0]} frames instead of {frames}")
    return video
