"""The video's size in pixels and in latents: one rule for the sampler, ``video_mode``'s ``initial_latents``, the
command line's preflight and the ablation study."""

from __future__ import annotations

from .._checks import check_int


def check_resolution(factor: int, native: int, height, width) -> tuple[int, int]:
    """(height, width), ``native`` pixels where None, after checking both are multiples of the VAE's ``factor``."""
    height = native if height is None else height
    width = native if width is None else width
    for name, value in (("height", height), ("width", width)):
        check_int(name, value, factor)
        if value % factor:
            raise ValueError(f"{name} must be a multiple of the model's downscale factor {factor}, got {value}")
    return height, width


def pipeline_resolution(pipe, height, width) -> tuple[int, int]:
    """:func:`check_resolution` for a loaded pipeline: its VAE's factor, its UNet's native size."""
    factor = pipe.vae_scale_factor
    return check_resolution(factor, pipe.unet.config.sample_size * factor, height, width)


def frame_latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    """(channels, height, width) of one frame's latents: the VAE's latent channels at its downscale factor (the
    noise the UNet denoises; an Instruct-Pix2Pix UNet reads more channels, the image's latents beside them)."""
    factor = pipe.vae_scale_factor
    return pipe.vae.config.latent_channels, height // factor, width // factor


def latent_shape(pipe, videos: int, frames: int, height: int, width: int) -> tuple[int, ...]:
    """[videos, frames, c, h, w] of a text-to-image pipeline's video latents; a UNet that reads other channels than
    the VAE's latents (Instruct-Pix2Pix, inpainting) is refused: ``video_mode`` runs those in their own pipeline."""
    channels = frame_latent_shape(pipe, height, width)
    if pipe.unet.config.in_channels != channels[0]:
        raise ValueError(f"sample_video needs a text-to-image UNet, whose input is the VAE's {channels[0]} latent "
                         f"channels; this one reads {pipe.unet.config.in_channels} (an Instruct-Pix2Pix or "
                         "inpainting UNet): use zs2_kernels.video_mode around its own pipeline")
    return (videos, frames, *channels)
