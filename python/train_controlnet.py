"""Train the embedded ControlNet: guide videos of digit edge maps steer the embedded digits model offline.

A small ``ControlNetModel`` (a trainable copy of the embedded UNet's encoder and middle block, with zero
convolutions into the frozen UNet and a 3-layer condition encoder, 32x32 -> 8x8) learns to follow
``zs2_kernels.embedded.digit_condition`` edge maps. The UNet, VAE and text encoder stay frozen; the data is the
digit training split only (the held-out split is for the quality gate), each image randomly shifted, rotated and
scaled so the net learns to put the digit where the edges are, not where digits usually are. The prompts are the
embedded model's training prompts, half of them dropped to the empty prompt (as in the ControlNet paper: the net
learns to read the digit from its edges, and classifier-free guidance gets a guided unconditional branch). The
exponential moving average of the weights is saved. Deterministic: every random draw comes from one seeded
``torch.Generator`` in a fixed order.

    python python/train_controlnet.py                                       # -> zs2_kernels/embedded/digits-controlnet
    python python/train_controlnet.py --out /tmp/cn --steps 2 --batch-size 8   # smoke run
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

# Let idle OpenMP threads sleep instead of spinning (see train_embedded.py). Must precede torch's OpenMP start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import ControlNetModel, DDPMScheduler, StableDiffusionPipeline  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zs2_kernels.embedded import controlnet_path, digit_condition, embedded_model_path  # noqa: E402
from zs2_kernels.evaluation.digits import PROMPT_TEMPLATES, digit_prompt, load_digit_split  # noqa: E402

#: Channels of the condition encoder: three stages, two of them stride 2 (32x32 edge map -> 8x8 latent grid).
CONDITION_CHANNELS = (16, 32, 64)
SIZE_LIMIT = 5 * 1024 * 1024


def random_affine(images: torch.Tensor, max_shift: float, max_degrees: float, generator: torch.Generator):
    """Shift (up to ``max_shift`` of the side), rotate (up to ``max_degrees``) and scale (0.85-1.1) each image.

    Images are in [0, 1] with a black (0) background, which is what comes in from outside the frame.
    """
    n = len(images)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    scale = 0.85 + 0.25 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * max_shift  # grid coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, -shift[:, 0]], 1), torch.stack([sin, cos, -shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class Denoiser:
    """The frozen embedded model with a ControlNet: latents, prompt embeddings and the epsilon-prediction loss."""

    def __init__(self, pipe: StableDiffusionPipeline):
        self.pipe = pipe
        for model in (pipe.vae, pipe.unet, pipe.text_encoder):
            model.requires_grad_(False).eval()
        # Row 10 * t + d is template t for digit d; the last row is the empty prompt.
        prompts = [digit_prompt(d, t) for t in PROMPT_TEMPLATES for d in range(10)] + [""]
        tokens = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            self.contexts = pipe.text_encoder(tokens)[0]
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    @torch.no_grad()
    def latents(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scaled VAE latents (a posterior sample) of images in [0, 1]."""
        posterior = self.pipe.vae.encode(images.expand(-1, 3, -1, -1) * 2 - 1).latent_dist
        return posterior.sample(generator=generator) * self.pipe.vae.config.scaling_factor

    def loss(self, controlnet, images, rows, generator: torch.Generator) -> torch.Tensor:
        """Epsilon-prediction DDPM loss of the UNet steered by ``controlnet`` with the images' edge maps."""
        latents = self.latents(images, generator)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(images),),
                                  generator=generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        context = self.contexts[rows]
        down, mid = controlnet(noisy, timesteps, encoder_hidden_states=context,
                               controlnet_cond=digit_condition(images), return_dict=False)
        prediction = self.pipe.unet(noisy, timesteps, encoder_hidden_states=context,
                                    down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        return F.mse_loss(prediction, noise)


def held_out_loss(denoiser: Denoiser, controlnet, images, labels, seed: int) -> float:
    """Mean loss on the held-out digits (moved like the training data), same noise for every model compared."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        moved = random_affine(images, 0.2, 30.0, generator)
        return denoiser.loss(controlnet, moved, labels, generator).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=controlnet_path())
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--ema-decay", type=float, default=0.998)
    parser.add_argument("--prompt-dropout", type=float, default=0.5)
    parser.add_argument("--max-shift", type=float, default=0.2, help="largest shift, as a fraction of the side")
    parser.add_argument("--max-degrees", type=float, default=30.0, help="largest rotation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data = load_digit_split()
    images, labels = (data.train_images + 1) / 2, data.train_labels
    pipe = StableDiffusionPipeline.from_pretrained(embedded_model_path(), local_files_only=True)
    denoiser = Denoiser(pipe)
    controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=CONDITION_CHANNELS)
    params = list(controlnet.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, args.steps, min(100, args.steps)))
    ema = copy.deepcopy(controlnet).eval()
    ema_pairs = list(zip(ema.parameters(), params))
    empty_row = len(denoiser.contexts) - 1

    start = time.perf_counter()
    controlnet.train()
    bar = tqdm(range(args.steps), desc="controlnet", mininterval=10)
    for step in bar:
        idx = torch.randint(0, len(labels), (args.batch_size,), generator=generator)
        template = torch.randint(0, len(PROMPT_TEMPLATES), (args.batch_size,), generator=generator)
        drop = torch.rand(args.batch_size, generator=generator) < args.prompt_dropout
        rows = torch.where(drop, empty_row, template * 10 + labels[idx])
        batch = random_affine(images[idx], args.max_shift, args.max_degrees, generator)
        loss = denoiser.loss(controlnet, batch, rows, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema_p, p in ema_pairs:
                ema_p.lerp_(p, 1.0 - decay)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    seconds = time.perf_counter() - start

    test_images, test_rows = (data.test_images + 1) / 2, data.test_labels
    untrained = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=CONDITION_CHANNELS)
    ema.save_pretrained(args.out, safe_serialization=True)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(json.dumps({
        "train_seconds": round(seconds), "steps": args.steps, "parameters": sum(p.numel() for p in params),
        "folder_bytes": size,
        # Zero convolutions: the untrained net adds nothing, i.e. this is the frozen UNet's own loss.
        "held_out_loss_unet_alone": round(held_out_loss(denoiser, untrained.eval(), test_images, test_rows, 1), 4),
        "held_out_loss_with_controlnet": round(held_out_loss(denoiser, ema, test_images, test_rows, 1), 4),
    }, indent=1))
    if size > SIZE_LIMIT:
        raise SystemExit(f"{args.out} is {size} bytes, over the {SIZE_LIMIT} byte limit for shipped weights")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
