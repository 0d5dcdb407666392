"""Handwritten-digit utilities shared by the embedded model, its training scripts and its tests.

The project ships a small Stable-Diffusion-style model trained on scikit-learn's handwritten
digits (``sklearn.datasets.load_digits``) so that it can make a real video on a fresh machine
with no internet and no GPU.  This module holds everything that must agree between training,
evaluation and sampling:

* the data: 8x8 digits upsampled to 32x32 (bilinear) and scaled to [-1, 1], with one fixed,
  stratified held-out split, so the generator and the evaluation classifier never see the
  held-out images;
* the small CNN digit classifier used as the offline evaluation backbone (logits for
  "is this the prompted digit?", penultimate features for Frechet distances), stored as
  safetensors only;
* prompt helpers, so prompts used for training and the digit a prompt names are parsed the
  same way everywhere.

The paths of the shipped weights are in :mod:`zs2_kernels.embedded` (loading the model needs only them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..embedded import classifier_weights_path

IMAGE_SIZE = 32
"""Side of the square images the embedded model generates and the classifier reads."""

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

PROMPT_TEMPLATES = (
    "a handwritten digit {word}",
    "a handwritten digit {numeral}",
    "the number {word}",
    "the number {numeral}",
    "digit {word}",
    "digit {numeral}",
    "a digit {word}",
    "the handwritten number {numeral}",
    "{word}",
    "{numeral}",
)
"""Prompt phrasings the embedded model is trained on; ``{word}``/``{numeral}`` name the digit."""

HELD_OUT_SIZE = 360
SPLIT_SEED = 0

# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DigitSplit:
    """The fixed train / held-out split; images are float32 (N, 1, 32, 32) in [-1, 1]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_digit_split() -> DigitSplit:
    """Load sklearn's digits as 32x32 images in [-1, 1] with the fixed stratified split.

    The split is a pure function of the data (``train_test_split`` with a fixed seed), so
    both training scripts and the tests agree on which images are held out.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = (images * 2.0 - 1.0).clamp(-1.0, 1.0)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=HELD_OUT_SIZE, random_state=SPLIT_SEED, stratify=digits.target
    )
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return DigitSplit(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])


# ----------------------------------------------------------------------------- prompts


def digit_prompt(digit: int, template: str = PROMPT_TEMPLATES[0]) -> str:
    """Prompt naming ``digit`` (0-9), e.g. ``digit_prompt(7) == "a handwritten digit seven"``."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be in 0..9, got {digit}")
    return template.format(word=NUMBER_WORDS[digit], numeral=str(digit))


_DIGIT_TOKEN = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r"|[0-9])\b", re.IGNORECASE)


def parse_digit_prompt(prompt: str) -> int | None:
    """Return the digit a prompt names (number word or single numeral), or None.

    None is returned when the prompt names no digit or names several different ones, since
    then there is no single digit the output should be recognised as.
    """
    found = {
        int(tok) if tok.isdigit() else NUMBER_WORDS.index(tok.lower()) for tok in _DIGIT_TOKEN.findall(prompt)
    }
    return found.pop() if len(found) == 1 else None


# ----------------------------------------------------------------------------- classifier


class DigitClassifier(nn.Module):
    """Small CNN digit classifier on 32x32 images in [-1, 1].

    Any number of channels is accepted (they are averaged to grey, since the embedded VAE
    writes grey digits as RGB) and other sizes are resized to 32x32, so frames straight from
    the pipeline (converted to [-1, 1]) can be scored.  ``features`` is the penultimate
    layer, used as the embedding for Frechet distances.
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), feature_dim: int = 128):
        super().__init__()
        self.config = {"widths": list(widths), "feature_dim": feature_dim}
        layers: list[nn.Module] = []
        in_ch = 1
        for width in widths:
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_ch = width
        self.body = nn.Sequential(*layers)
        side = IMAGE_SIZE // 2 ** len(widths)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(in_ch * side * side, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(feature_dim, 10))

    @staticmethod
    def _prepare(images: torch.Tensor) -> torch.Tensor:
        images = images.float().mean(dim=1, keepdim=True)
        if images.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (N, feature_dim) of images (N, C, H, W) in [-1, 1]."""
        return self.embed(self.body(self._prepare(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10) of images (N, C, H, W) in [-1, 1]."""
        return self.head(self.features(images))


    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Predicted digits (N,) of images in [-1, 1], evaluated in batches."""
        return torch.cat([self(chunk).argmax(dim=1) for chunk in images.split(batch_size)])

    def save(self, path: Path) -> None:
        """Write the weights as safetensors, with the constructor config in the metadata."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"config": json.dumps(self.config)})


def load_digit_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> DigitClassifier:
    """Load the digit classifier (safetensors only) in eval mode; defaults to the shipped one."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else classifier_weights_path()
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
    model = DigitClassifier(widths=tuple(config["widths"]), feature_dim=config["feature_dim"])
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval()
