"""How much memory a sampling run needs, from the model's configs and the run's shapes, before any allocation.

Long videos fail late and slowly when they do not fit (the UNet batch is every frame of every video, twice
with guidance); the estimate lets ``sample_video`` and ``zs2-sample`` refuse them up front. The constants
were measured on the embedded model and the tests' tiny pipelines (peak resident memory over frame counts,
CPU, float32): a UNet sample peaks at about 36 feature maps of its largest attention level (the
transformer's GEGLU feed-forward, norms, projections, momentum state) plus the skip connections it keeps.
``tests/test_memory.py`` checks the estimate against measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops.free_memory import GIB, available_memory

#: Live feature maps of one UNet sample at its largest level with attention, and at one without.
ATTENTION_MAPS, RESNET_MAPS = 36, 8
#: Live full-resolution feature maps of one image in the VAE decoder.
DECODER_MAPS = 8
#: float32 copies of a frame's latents alive while denoising (noise chain, latents, noise prediction, scheduler
#: step) and of its image while decoding (decoder output, concatenation, post-processing copies, numpy array).
LATENT_COPIES, IMAGE_COPIES = 6, 6


@dataclass
class MemoryEstimate:
    """Bytes a run needs. Its phases do not overlap: denoising holds the UNet batch (``chunk_frames`` frames
    per video at ``unet_per_frame`` bytes each) and the latents; decoding the images and the VAE's work;
    writing the output buffers. ``total`` (weights plus the largest phase) is what must be free."""

    unet_per_frame: int
    chunk_frames: int
    latents: int
    images: int
    decode: int
    weights: int = 0
    output: int = 0
    videos: int = 1
    frames: int = 1
    decode_per_frame: int = 0  # the decoder's activations for one frame (decode holds a chunk of them)

    @property
    def unet(self) -> int:
        return self.unet_per_frame * self.chunk_frames

    def phases(self) -> dict:
        return {"denoising": self.unet + self.latents, "decoding": self.images + self.decode, "writing": self.output}

    @property
    def total(self) -> int:
        return self.weights + max(self.phases().values())

    def describe(self) -> str:
        parts = {**self.phases(), "weights": self.weights}
        return ", ".join(f"{name} {size / GIB:.2f}" for name, size in parts.items() if size)


def _unet_sample_elements(unet_config: dict, latent_height: int, latent_width: int) -> int:
    """Elements alive at the peak of one sample's UNet forward: skip connections plus the largest level's work."""
    channels = unet_config["block_out_channels"]
    per_block = unet_config.get("layers_per_block", 2)
    per_block = max(per_block) if isinstance(per_block, (list, tuple)) else per_block
    maps = [c * -(-latent_height // 2**i) * -(-latent_width // 2**i) for i, c in enumerate(channels)]
    skips = maps[0] + sum(m * per_block for m in maps) + sum(maps[1:])
    work = [m * (ATTENTION_MAPS if "CrossAttn" in kind else RESNET_MAPS)
            for m, kind in zip(maps, unet_config["down_block_types"])]
    return skips + max(work)


def estimate_memory(unet_config: dict, vae_config: dict, *, videos: int, frames: int, height: int, width: int,
                    chunk: int | None = None, guidance: bool = True, dtype: torch.dtype = torch.float32,
                    decode_chunk_size: int = 8, weights: int = 0, output_per_frame: int = 0,
                    decodes: bool = True) -> MemoryEstimate:
    """Peak bytes of ``sample_video`` for these shapes (and ``weights`` and output buffers, if given).

    ``height``/``width`` are in pixels; ``chunk`` is ``frame_chunk``; ``output_per_frame`` is the bytes a
    writer holds per frame (the command line's upscaled uint8 frames); ``decodes``: False for latent output (no
    images, no decoder).
    """
    factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    latent_h, latent_w = height // factor, width // factor
    element = torch.finfo(dtype).bits // 8
    chunk_frames = min(chunk or frames, frames)
    total_frames = videos * frames
    latent = unet_config.get("in_channels", 4) * latent_h * latent_w
    image = 3 * height * width
    decoder = vae_config["block_out_channels"][0] * height * width * DECODER_MAPS
    return MemoryEstimate(
        unet_per_frame=(2 if guidance else 1) * videos * _unet_sample_elements(unet_config, latent_h, latent_w)
        * element, chunk_frames=chunk_frames, latents=total_frames * LATENT_COPIES * latent * 4,
        images=decodes * total_frames * IMAGE_COPIES * image * 4,
        decode=decodes * min(decode_chunk_size, total_frames) * decoder * 4,
        weights=weights, output=total_frames * output_per_frame, videos=videos, frames=frames,
        decode_per_frame=decodes * decoder * 4)


def check_fits(estimate: MemoryEstimate, device: torch.device, frames_name: str, chunk_name: str,
               videos_name: str = "the videos per call", size_name: str = "height/width") -> None:
    """Raise MemoryError when ``estimate`` exceeds the free memory, saying which of the frame, chunk, video-count and
    resolution arguments to lower (only those that can help: one frame cannot be lowered, one video need not be;
    the resolution when not even one frame per UNet call fits)."""
    free = available_memory(device)
    if free is None or estimate.total <= free:
        return
    fitting_chunk = (free - estimate.weights - estimate.latents) // estimate.unet_per_frame
    others_fit = estimate.weights + max(estimate.phases()["decoding"], estimate.output) <= free
    frames = estimate.videos * estimate.frames
    one_frame = estimate.weights + estimate.unet_per_frame // estimate.videos + \
        (estimate.latents + estimate.images) // frames + estimate.decode_per_frame
    if one_frame > free:
        advice = [f"lower {size_name} (one frame of one video does not fit at this resolution)"]
    elif fitting_chunk >= 1 and others_fit:
        advice = [f"set {chunk_name} {fitting_chunk} or lower (frames per UNet call)", f"lower {frames_name}"]
    else:
        advice = [f"lower {frames_name} (even {chunk_name} 1 would not fit)"] if estimate.frames > 1 else []
    if estimate.videos > 1:
        advice.append(f"make fewer videos per call ({estimate.videos} now: {videos_name})")
    raise MemoryError(f"this run needs about {estimate.total / GIB:.2f} GiB ({estimate.describe()} GiB) but "
                      f"{device} has {free / GIB:.2f} GiB free; "
                      f"{', or '.join(advice) if advice else 'even one frame of one video does not fit'}")
