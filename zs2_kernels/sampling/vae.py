"""The VAE's two directions for the sampler: frames to latents (image-to-video, video-to-video) and latents to frames.

Both run in chunks and in the VAE's dtype, redo a chunk in float32 when it overflows (the SDXL VAE does in fp16), and
raise on NaN/inf instead of returning black frames.
"""

from __future__ import annotations

import torch


def vae_call(vae, run, chunk: torch.Tensor, what: str) -> torch.Tensor:
    """``run(chunk)`` through the VAE in its dtype, redone in float32 if that overflows and cast back after
    (lossless from fp16/bf16); NaN/inf that remain raise FloatingPointError naming ``what`` the VAE was doing."""
    out = run(chunk.to(vae.dtype))
    if not torch.isfinite(out).all() and vae.dtype != torch.float32:
        original = vae.dtype
        vae.to(torch.float32)
        try:
            out = run(chunk.float())
        finally:
            vae.to(original)
    if not torch.isfinite(out).all():
        raise FloatingPointError(f"VAE {what} produced NaN/inf; try dtype=torch.float32")
    return out.float()


def encode(pipe, images: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """VAE latents float32 [N, c, h, w] of images [N, 3, H, W] in [0, 1]: the posterior's mode (its mean: sampling
    would add independent noise to every frame), shifted and scaled as the decoder expects them back."""
    vae = pipe.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = [vae_call(vae, lambda x: vae.encode(x).latent_dist.mode(),
                        images[start:start + chunk_size].to(vae.device) * 2 - 1, "encoding")
               for start in range(0, images.shape[0], chunk_size)]
    return (torch.cat(latents) - shift) * vae.config.scaling_factor


def decode(pipe, latents: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Images in [-1, 1] of latents [N, c, h, w], decoded ``chunk_size`` at a time."""
    vae = pipe.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return torch.cat([vae_call(vae, lambda x: vae.decode(x).sample,
                               latents[start:start + chunk_size] / vae.config.scaling_factor + shift, "decoding")
                      for start in range(0, latents.shape[0], chunk_size)])
