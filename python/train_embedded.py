"""Train the project's embedded default text-to-image model on scikit-learn's digits.

The result is a complete, tiny ``StableDiffusionPipeline`` folder (vae, unet, text_encoder,
tokenizer, DDIM scheduler, model_index.json; no safety checker) that loads offline with
``StableDiffusionPipeline.from_pretrained``, so the project can make a real video on a fresh
machine with no internet and no GPU.  Three stages, all deterministic (fixed seeds, seeded
data order) and CPU-sized:

1. an ``AutoencoderKL`` (32x32x3 grey digits -> 8x8x4 latents) trained with an MSE
   reconstruction loss plus a small KL term; ``scaling_factor`` is set to 1 / std of the
   training latents so the pipeline's latent scaling is right;
2. a tiny ``CLIPTextModel`` with a ``CLIPTokenizer`` built offline from an in-memory
   vocabulary (every prompt word is one token);
3. a ``UNet2DConditionModel`` with self- (``attn1``) and cross-attention (``attn2``) blocks,
   trained jointly with the text encoder using the epsilon-prediction DDPM loss and 10 %
   empty-prompt dropout for classifier-free guidance; the exponential moving average of
   both is what gets saved.

    python python/train_embedded.py --out zs2_kernels/embedded/digits-sd
    python python/train_embedded.py --out /tmp/tiny --vae-steps 2 --unet-steps 2   # smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

# Let idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning
# threads made training steps up to 10x slower.  Must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tqdm import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zs2_kernels.embedded import embedded_model_path  # noqa: E402
from zs2_kernels.evaluation.digits import (  # noqa: E402
    IMAGE_SIZE,
    NUMBER_WORDS,
    PROMPT_TEMPLATES,
    digit_prompt,
    load_digit_split,
)

MAX_TOKENS = 16
TEXT_DIM = 64
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
EXTRA_WORDS = ("an", "of", "image", "picture", "drawing", "written", "hand", "number", "digit", "video")


# ----------------------------------------------------------------------------- text


def build_tokenizer() -> CLIPTokenizer:
    """CLIP BPE tokenizer from an in-memory vocabulary: every character, plus one token per prompt word.

    Each word gets a left-to-right chain of merges ("s e" -> "se", "se v" -> "sev", ...), so
    known words become a single token and anything else still tokenizes, character by character.
    """
    words = {w for t in PROMPT_TEMPLATES for d in range(10) for w in digit_prompt(d, t).split()}
    words |= set(EXTRA_WORDS) | set(NUMBER_WORDS)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    merges = []
    for word in sorted(words):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            if (merged, piece) not in merges:
                merges.append((merged, piece))
            merged += piece
            vocab.setdefault(merged, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)
    for word in words:
        assert len(tokenizer.tokenize(word)) == 1, f"{word!r} is not a single token"
    return tokenizer


def build_text_encoder(vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=4 * TEXT_DIM,
        projection_dim=TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config)


# ----------------------------------------------------------------------------- models


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def build_unet(latent_size: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=2,
        norm_num_groups=16,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
    )


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- stages


def train_vae(images: torch.Tensor, steps: int, batch_size: int, kl_weight: float, generator: torch.Generator):
    vae = build_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, min(100, steps)))
    vae.train()
    bar = tqdm(range(steps), desc="vae")
    for _ in bar:
        batch = images[torch.randint(0, len(images), (batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(latents).sample
        mse = F.mse_loss(recon, batch)
        kl = posterior.kl().mean() / batch[0].numel()
        loss = mse + kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        sched.step()
        bar.set_postfix(mse=f"{mse.item():.4f}", kl=f"{kl.item():.3f}")
    vae.eval()
    with torch.no_grad():
        posterior = torch.cat([vae.encode(chunk).latent_dist.parameters for chunk in images.split(256)])
    mean, logvar = posterior.chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    samples = mean + std * torch.randn(mean.shape, generator=generator)
    vae.register_to_config(scaling_factor=float(1.0 / samples.std()))
    with torch.no_grad():
        recon_mse = F.mse_loss(vae.decode(mean[:256]).sample, images[:256]).item()
    print(f"vae: reconstruction MSE {recon_mse:.4f}, latent std {samples.std():.3f}, "
          f"mean posterior std {std.mean():.3f}, scaling_factor {vae.config.scaling_factor:.4f}")
    return vae, mean, std


def train_unet(
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    labels: torch.Tensor,
    scaling_factor: float,
    tokenizer: CLIPTokenizer,
    steps: int,
    batch_size: int,
    lr: float,
    ema_decay: float,
    generator: torch.Generator,
):
    text_encoder = build_text_encoder(len(tokenizer))
    unet = build_unet(latent_mean.shape[-1])
    noise_scheduler = DDPMScheduler(**SCHEDULE, prediction_type="epsilon")
    # Row 10 * t + d is template t for digit d; the last row is the empty prompt.
    prompts = [digit_prompt(d, t) for t in PROMPT_TEMPLATES for d in range(10)] + [""]
    tokens = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
    token_ids = tokens.input_ids
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, min(200, steps)))
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    ema_pairs = list(zip(list(ema_unet.parameters()) + list(ema_text.parameters()), params))
    unet.train()
    text_encoder.train()
    bar = tqdm(range(steps), desc="unet")
    for step in bar:
        idx = torch.randint(0, len(labels), (batch_size,), generator=generator)
        template = torch.randint(0, len(PROMPT_TEMPLATES), (batch_size,), generator=generator)
        row = template * 10 + labels[idx]
        drop = torch.rand(batch_size, generator=generator) < 0.1
        row = torch.where(drop, torch.full_like(row, len(prompts) - 1), row)
        eps = torch.randn(latent_mean[idx].shape, generator=generator)
        latents = (latent_mean[idx] + latent_std[idx] * eps) * scaling_factor
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, SCHEDULE["num_train_timesteps"], (batch_size,), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        context = text_encoder(token_ids[row])[0]
        loss = F.mse_loss(unet(noisy, timesteps, encoder_hidden_states=context).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema_p, p in ema_pairs:
                ema_p.lerp_(p, 1.0 - decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return ema_unet, ema_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=embedded_model_path())
    parser.add_argument("--vae-steps", type=int, default=400)
    parser.add_argument("--unet-steps", type=int, default=4000)
    parser.add_argument("--vae-batch-size", type=int, default=64)
    parser.add_argument("--unet-batch-size", type=int, default=64)
    parser.add_argument("--kl-weight", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data = load_digit_split()
    images = data.train_images.expand(-1, 3, -1, -1).contiguous()
    tokenizer = build_tokenizer()

    start = time.perf_counter()
    vae, latent_mean, latent_std = train_vae(images, args.vae_steps, args.vae_batch_size, args.kl_weight, generator)
    vae_time = time.perf_counter() - start
    unet, text_encoder = train_unet(
        latent_mean, latent_std, data.train_labels, vae.config.scaling_factor, tokenizer,
        args.unet_steps, args.unet_batch_size, args.lr, args.ema_decay, generator,
    )
    unet_time = time.perf_counter() - start - vae_time

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(args.out, safe_serialization=True)
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
             for p in args.out.iterdir() if p.is_dir()}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in
              (("vae", vae), ("unet", unet), ("text_encoder", text_encoder))}
    print(json.dumps({"vae_seconds": round(vae_time), "unet_seconds": round(unet_time),
                      "parameters": params, "folder_bytes": sizes}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
