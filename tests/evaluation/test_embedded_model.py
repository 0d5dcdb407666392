"""Quality gates on the shipped embedded model and its evaluation classifier (offline, CPU).

* generated digits are recognised as the prompted digit;
* a Frechet distance on classifier features shows the samples are close to real digits
  (compared with the distance of decoded random latents, i.e. an untrained-quality baseline);
* the evaluation classifier itself is accurate on the held-out split;
* the training script still runs end to end and writes a folder that loads offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zs2_kernels.embedded import embedded_model_path
from zs2_kernels.evaluation.digits import (
    PROMPT_TEMPLATES,
    digit_prompt,
    load_digit_classifier,
    load_digit_split,
    parse_digit_prompt,
)
from zs2_kernels.evaluation.metrics import FeatureFID

REPO_ROOT = Path(__file__).resolve().parents[2]
GUIDANCE_SCALE = 4.0
NUM_STEPS = 25
PER_DIGIT = 20  # 200 images for the Frechet distance; the first 10 per digit for accuracy


@pytest.fixture(scope="module")
def pipe():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(embedded_model_path(), local_files_only=True)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def classifier():
    return load_digit_classifier()


@pytest.fixture(scope="module")
def split():
    return load_digit_split()


@pytest.fixture(scope="module")
def generated(pipe):
    """200 images in [-1, 1] (20 per digit, digit-major) and their prompted digits."""
    digits = [d for d in range(10) for _ in range(PER_DIGIT)]
    with torch.no_grad():
        images = pipe(
            [digit_prompt(d) for d in digits],
            num_inference_steps=NUM_STEPS,
            guidance_scale=GUIDANCE_SCALE,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
    return images * 2.0 - 1.0, torch.tensor(digits)


def test_prompt_helpers_round_trip():
    for template in PROMPT_TEMPLATES:
        for digit in range(10):
            assert parse_digit_prompt(digit_prompt(digit, template)) == digit
    assert parse_digit_prompt("a handwritten digit") is None
    assert parse_digit_prompt("a three and a 5") is None


def test_shipped_folder_is_small_safetensors_with_self_and_cross_attention(pipe):
    files = [f for f in embedded_model_path().rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 20 * 1024 * 1024
    assert not [f for f in files if f.suffix in {".bin", ".pt", ".pth", ".pkl"}]
    names = [name for name, _ in pipe.unet.named_modules()]
    assert any(name.endswith("attn1") for name in names) and any(name.endswith("attn2") for name in names)


def test_classifier_held_out_accuracy(classifier, split):
    accuracy = (classifier.predict(split.test_images) == split.test_labels).float().mean().item()
    print(f"classifier held-out accuracy {accuracy:.4f}")
    assert accuracy >= 0.97


def test_generated_digits_are_recognised(generated, classifier):
    images, digits = generated
    first_ten = torch.arange(len(digits)) % PER_DIGIT < 10
    predicted = classifier.predict(images[first_ten])
    accuracy = (predicted == digits[first_ten]).float().mean().item()
    print(f"generated-digit accuracy {accuracy:.3f} on {int(first_ten.sum())} samples")
    assert accuracy >= 0.90


def test_frechet_distance_beats_decoded_random_latents(generated, pipe, classifier, split):
    images, _ = generated
    latents = torch.randn((len(images), 4, 8, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        random_images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample.clamp(-1.0, 1.0)
        distance = FeatureFID(classifier.features(split.test_images))  # torchmetrics' FID on classifier features
        fd_generated = distance.distance(classifier.features(images))
        fd_random = distance.distance(classifier.features(random_images))
    print(f"Frechet distance generated {fd_generated:.2f}, random latents {fd_random:.2f}, "
          f"ratio {fd_generated / fd_random:.3f}")
    assert fd_generated <= fd_random / 3.0


def test_training_script_runs_and_loads_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "tiny-sd"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "python" / "train_embedded.py"), "--out", str(out),
         "--vae-steps", "2", "--unet-steps", "2", "--vae-batch-size", "8", "--unet-batch-size", "8"],
        check=True, env=env, cwd=REPO_ROOT,
    )
    load = (
        "import sys, huggingface_hub.constants as c\n"
        "assert c.HF_HUB_OFFLINE\n"
        "from diffusers import StableDiffusionPipeline\n"
        "pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1])\n"
        "out = pipe('the number 3', num_inference_steps=2, output_type='pt').images\n"
        "assert out.shape == (1, 3, 32, 32), out.shape\n"
    )
    subprocess.run([sys.executable, "-c", load, str(out)], check=True, env=env, cwd=REPO_ROOT)
    expected = {"vae", "unet", "text_encoder", "tokenizer", "scheduler", "model_index.json"}
    assert {p.name for p in out.iterdir()} >= expected
