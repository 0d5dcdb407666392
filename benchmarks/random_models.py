"""Random-weight diffusers pipelines at real model sizes, built from config (no downloads, no weights).

GPU machines lent to this project have no network and no model weights, yet the sampler benchmark must
run at the sizes users run: the UNet, VAE and text encoder here have Stable Diffusion 1.5's architecture
(860M-parameter UNet, 512² images, 64² latents), so time and memory per step are those of the real
model. The weights are random, so the frames are noise: these pipelines measure speed, never quality.

The tokenizer is character-level (CLIP's BPE vocabulary is a download); prompts are still 77 tokens,
as with the real one, so the text encoder does the same work.
"""

from __future__ import annotations

import string

import torch

#: Architectures by name: what ``bench_sampler.py --random-model`` accepts.
STYLES = ("sd15",)
MAX_TOKENS = 77


def character_tokenizer(max_tokens: int = MAX_TOKENS):
    """A CLIP tokenizer over single characters (an in-memory vocabulary), padding to ``max_tokens`` (SD: 77).

    Also the tokenizer of the tests' tiny pipelines (tests/tiny_pipelines.py), with 16 tokens.
    """
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + ".,'-":
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_tokens)


def sd15_pipeline(device, dtype: torch.dtype, seed: int = 0):
    """Stable Diffusion 1.5's architecture with random weights, built directly on ``device`` in ``dtype``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=512)
        text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                                    num_hidden_layers=12, max_position_embeddings=MAX_TOKENS,
                                                    hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1,
                                                    pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=character_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe.to(device=device, dtype=dtype)


def random_pipeline(style: str, device, dtype: torch.dtype):
    """The random-weight pipeline of architecture ``style`` (one of :data:`STYLES`)."""
    if style not in STYLES:
        raise ValueError(f"random model style must be one of {STYLES}, got {style!r}")
    return sd15_pipeline(device, dtype)
