"""Video metrics for the ablation study: prompt fidelity, FID, frame consistency and motion.

Two interchangeable scorers (the :class:`Scorer` protocol) produce the per-frame quantities:

* ``ClipScorer``: torchmetrics ``CLIPScore`` (frame-averaged) and CLIP image embeddings, with the CLIP
  model loaded from a local folder or hub id;
* ``DigitScorer``: the offline stand-in for the embedded digits model: the shipped digit classifier
  gives the prompt score (probability / accuracy of the prompted digit) and the embeddings.

FID is torchmetrics' ``FrechetInceptionDistance``, fed either Inception features (standard FID; see
``inception.py`` for the weights) or the digit classifier's features (the offline analogue). Features
are extracted once per video and stored, so a resumed run never recomputes them; the distance itself
is computed by torchmetrics from the stored features (an identity "feature extractor").
"""

from __future__ import annotations

import itertools
import warnings
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..video_io import to_uint8
from .inception import load_inception


def to_uint8_chw(frames: np.ndarray) -> torch.Tensor:
    """[F, H, W, C] floats in [0, 1] (or uint8) as the uint8 tensor [F, 3, H, W] the scorers read: the written
    video's pixels (:func:`zs2_kernels.video_io.to_uint8`), channels first."""
    return torch.from_numpy(to_uint8(frames)).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------- per-video quantities
def consistency_metrics(embeddings: torch.Tensor) -> dict:
    """Cosine similarity x100 of frame embeddings: consecutive frames, all frame pairs (both conventions), and
    drift: every later frame against frame 0 (mean) and the last frame against frame 0."""
    unit = nn.functional.normalize(embeddings.double(), dim=-1)
    if unit.shape[0] < 2:
        return {"consistency_adjacent": 100.0, "consistency_all": 100.0, "consistency_first": 100.0,
                "consistency_last_first": 100.0}
    adjacent = (unit[1:] * unit[:-1]).sum(-1).mean().item()
    pairs = list(itertools.combinations(range(unit.shape[0]), 2))
    first, second = zip(*pairs)
    all_pairs = (unit[list(first)] * unit[list(second)]).sum(-1).mean().item()
    to_first = consistency_to_first(embeddings)
    return {"consistency_adjacent": 100 * adjacent, "consistency_all": 100 * all_pairs,
            "consistency_first": to_first[1:].mean().item(), "consistency_last_first": to_first[-1].item()}


def consistency_to_first(embeddings: torch.Tensor) -> torch.Tensor:
    """[F]: cosine similarity x100 of each frame's embedding with frame 0's (the drift curve; 100 at frame 0)."""
    unit = nn.functional.normalize(embeddings.double(), dim=-1)
    return 100 * (unit * unit[:1]).sum(-1)


def motion_metrics(frames_u8: torch.Tensor, embeddings: torch.Tensor) -> dict:
    """How much consecutive frames change: mean |difference| in pixels (0-255) and the mean L2 distance x100
    of unit-norm embeddings. A still video scores 0 on both (and perfect consistency)."""
    if frames_u8.shape[0] < 2:
        return {"motion_pixel": 0.0, "motion_embedding": 0.0}
    pixels = frames_u8.double()
    unit = nn.functional.normalize(embeddings.double(), dim=-1)
    return {"motion_pixel": (pixels[1:] - pixels[:-1]).abs().mean().item(),
            "motion_embedding": 100 * (unit[1:] - unit[:-1]).norm(dim=-1).mean().item()}


def travel_metrics(first: torch.Tensor, second: torch.Tensor, switch_frame: int) -> dict:
    """How a video whose prompt travels from a first to a second prompt follows it, from per-frame scores of each
    prompt ([F]; higher is closer): the first prompt's mean score over the first quarter of the frames, the
    second's over the last quarter, the switch frame (the first frame from which the second prompt scores higher
    on every later frame; F if the last frame still favours the first) and the lag = switch frame - ``switch_frame``
    (where a hard cut switches; > 0: the video follows late)."""
    frames = first.shape[0]
    quarter = max(1, frames // 4)
    ahead = (second > first).flip(0).int().cumprod(0).sum().item()  # trailing frames the second prompt leads
    switch = frames - ahead
    return {"travel_start": first[:quarter].double().mean().item(),
            "travel_end": second[-quarter:].double().mean().item(), "travel_switch": float(switch),
            "travel_lag": float(switch - switch_frame)}


def adjacent_consistency_min(embeddings: torch.Tensor) -> float:
    """The lowest cosine similarity x100 of consecutive frames' embeddings: a hard cut's jump shows here."""
    unit = nn.functional.normalize(embeddings.double(), dim=-1)
    return 100 * (unit[1:] * unit[:-1]).sum(-1).min().item() if unit.shape[0] > 1 else 100.0


# --------------------------------------------------------------------------- scorers
class Scorer(Protocol):
    """What the ablation needs of a metric scorer."""

    name: str  #: recorded with the results
    fid_name: str  #: the feature space of its FID
    reference_name: str | None  #: its built-in real images for FID, or None (the study then uses an image prior)
    sources: tuple[str, ...]  #: the files, folders or hub ids its numbers come from (in every unit's key)

    def prompt_metrics(self, frames_u8: torch.Tensor, prompt: str) -> dict:
        """How well frames (uint8 [F, 3, H, W]) show the prompt: metric name -> value."""

    def frame_scores(self, frames_u8: torch.Tensor, prompt: str) -> torch.Tensor:
        """How well each frame shows the prompt: [F], higher is closer (the travel study's curves)."""

    def embed(self, frames_u8: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings [F, E] for consistency and motion."""

    def fid_features(self, frames_u8: torch.Tensor) -> torch.Tensor:
        """Per-frame FID features [F, K]."""

    def reference_images(self) -> torch.Tensor:
        """The built-in real images (uint8 [N, 3, H, W]) named by ``reference_name``."""


class DigitScorer:
    """Offline metrics for the embedded digits model, from the shipped digit classifier."""

    fid_name = "digit-classifier features"
    reference_name = "scikit-learn digits (real data)"

    def __init__(self, device="cpu"):
        from ..embedded import classifier_weights_path
        from .digits import load_digit_classifier

        self.device = torch.device(device)
        self.classifier = load_digit_classifier(device=self.device)
        self.name = f"digit-classifier ({classifier_weights_path().name})"
        self.sources = (str(classifier_weights_path()),)

    def _prepare(self, frames_u8: torch.Tensor) -> torch.Tensor:
        return frames_u8.to(self.device).float() / 127.5 - 1.0

    @torch.no_grad()
    def embed(self, frames_u8: torch.Tensor) -> torch.Tensor:
        """Penultimate classifier features [F, 128]."""
        return self.classifier.features(self._prepare(frames_u8)).double().cpu()

    fid_features = embed

    @torch.no_grad()
    def _logits(self, frames_u8: torch.Tensor, prompt: str) -> tuple[torch.Tensor, int]:
        from .digits import parse_digit_prompt

        digit = parse_digit_prompt(prompt)
        if digit is None:
            raise ValueError(f"prompt {prompt!r} names no single digit; the digit metrics need prompts such as "
                             "'a handwritten digit 3'")
        return self.classifier(self._prepare(frames_u8)).double().cpu(), digit

    def prompt_metrics(self, frames_u8: torch.Tensor, prompt: str) -> dict:
        """% of frames classified as the prompted digit, and its mean probability x100."""
        logits, digit = self._logits(frames_u8, prompt)
        return {"prompt_accuracy": 100 * (logits.argmax(-1) == digit).double().mean().item(),
                "prompt_probability": 100 * logits.softmax(-1)[:, digit].mean().item()}

    def frame_scores(self, frames_u8: torch.Tensor, prompt: str) -> torch.Tensor:
        """Each frame's probability x100 of the prompted digit."""
        logits, digit = self._logits(frames_u8, prompt)
        return 100 * logits.softmax(-1)[:, digit]

    def reference_images(self) -> torch.Tensor:
        """All of scikit-learn's digits as uint8 [N, 3, 32, 32]: the real data the model imitates."""
        from .digits import load_digit_split

        split = load_digit_split()
        images = torch.cat([split.train_images, split.test_images])
        return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)


class _ClipTensorOutputs(nn.Module):
    """Wraps a transformers CLIPModel so its feature methods return tensors.

    transformers 5 returns ``BaseModelOutputWithPooling`` from ``get_*_features`` (projected embeddings in
    ``pooler_output``); torchmetrics <= 1.9 expects tensors and crashes on ``.norm``.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config  # torchmetrics reads the text length limit from it

    @staticmethod
    def _tensor(output):
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def get_image_features(self, *args, **kwargs):
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return self._tensor(self.model.get_text_features(*args, **kwargs))


class ClipScorer:
    """CLIP score (torchmetrics) and CLIP image embeddings; with ``with_fid``, Inception FID features."""

    reference_name = None  # no built-in real images: FID needs a folder of them, or the image prior

    def __init__(self, model_path: str, device="cpu", *, with_fid: bool = False,
                 inception_weights: str | None = None, fid_feature: int = 2048):
        from torchmetrics.multimodal.clip_score import CLIPScore
        from transformers import CLIPModel, CLIPProcessor

        self.device = torch.device(device)
        self.name = f"CLIP ({model_path})"
        try:
            model = CLIPModel.from_pretrained(model_path, use_safetensors=True).eval()
            processor = CLIPProcessor.from_pretrained(model_path)
        except OSError as error:
            raise ValueError(f"--clip-model {model_path!r} could not be loaded offline: {error}") from error
        self.clip = _ClipTensorOutputs(model).to(self.device)
        self.processor = processor
        self.clip_score = CLIPScore(model_name_or_path=lambda: (self.clip, processor),
                                    sync_on_compute=False).to(self.device)  # per video, per rank
        # Loaded now, so missing weights stop a study before any sampling.
        self._inception = load_inception(fid_feature, inception_weights).to(self.device) if with_fid else None
        self.fid_name = f"inception-{fid_feature}"
        self.sources = (model_path, *([inception_weights] if with_fid and inception_weights else []))

    @torch.no_grad()
    def prompt_metrics(self, frames_u8: torch.Tensor, prompt: str) -> dict:
        """torchmetrics CLIPScore averaged over frames (uint8 input, as CLIPScore expects)."""
        self.clip_score.reset()
        self.clip_score.update(list(frames_u8.to(self.device)), [prompt] * frames_u8.shape[0])
        return {"clip_score": self.clip_score.compute().item()}

    def frame_scores(self, frames_u8: torch.Tensor, prompt: str) -> torch.Tensor:
        """torchmetrics CLIPScore of each frame."""
        return torch.tensor([self.prompt_metrics(frame[None], prompt)["clip_score"] for frame in frames_u8])

    @torch.no_grad()
    def embed(self, frames_u8: torch.Tensor) -> torch.Tensor:
        inputs = self.processor(images=list(frames_u8), return_tensors="pt")
        return self.clip.get_image_features(pixel_values=inputs["pixel_values"].to(self.device)).double().cpu()

    @torch.no_grad()
    def fid_features(self, frames_u8: torch.Tensor) -> torch.Tensor:
        """Inception features of uint8 frames (the standard FID embedding, antialias off)."""
        if self._inception is None:
            raise RuntimeError("this ClipScorer was built without FID (with_fid=False)")
        return self._inception(frames_u8.to(self.device)).double().cpu()

    def reference_images(self) -> torch.Tensor:
        raise RuntimeError("CLIP scoring has no built-in reference images; pass --reference-images")


# --------------------------------------------------------------------------- FID from stored features
class _StoredFeatures(nn.Module):
    """Identity 'feature extractor': lets torchmetrics' FID run on features extracted earlier."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features):
        return features


class FeatureFID:
    """torchmetrics FrechetInceptionDistance over stored features; real statistics are added once and kept."""

    def __init__(self, real_features: torch.Tensor):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.num_features = real_features.shape[1]
        # Ranks exchange features through the study's unit files, so no process-group sync here.
        self.metric = FrechetInceptionDistance(feature=_StoredFeatures(self.num_features), reset_real_features=False,
                                               sync_on_compute=False)
        self.metric.set_dtype(torch.float64)
        self.real_count = real_features.shape[0]
        self.metric.update(real_features.double(), real=True)

    def distance(self, fake_features: torch.Tensor) -> float:
        if min(self.real_count, fake_features.shape[0]) < self.num_features:
            warnings.warn(f"FID with {fake_features.shape[0]} generated and {self.real_count} reference samples for "
                          f"{self.num_features}-dim features: covariances are rank-deficient and the value is "
                          "biased; use more samples (for Inception FID, or a smaller layer: --fid-feature 64/192/768)",
                          RuntimeWarning, stacklevel=2)
        self.metric.reset()
        self.metric.update(fake_features.double(), real=False)
        return float(self.metric.compute())
