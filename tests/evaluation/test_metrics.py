"""Metric backends: CLIP score through torchmetrics with a tiny local CLIP (transformers 5 outputs wrapped),
and the digit backend on real digits (Inception FID: test_inception.py)."""

import warnings

import numpy as np
import pytest
import torch

from zs2_kernels.evaluation import metrics


def frames(count=3, seed=0):
    return metrics.to_uint8_chw(np.random.default_rng(seed).random((count, 32, 32, 3)).astype(np.float32))


def test_clip_score_matches_direct_cosine(tiny_clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    backend = metrics.ClipScorer(tiny_clip_dir)
    video = frames()
    score = backend.prompt_metrics(video, "a cat")["clip_score"]
    model, processor = CLIPModel.from_pretrained(tiny_clip_dir).eval(), CLIPProcessor.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        inputs = processor(text=["a cat"] * 3, images=list(video), return_tensors="pt", padding=True)
        image = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        text = model.get_text_features(input_ids=inputs["input_ids"],
                                       attention_mask=inputs["attention_mask"]).pooler_output
    cosine = torch.nn.functional.cosine_similarity(image, text).clamp(min=0)
    assert score == pytest.approx(100 * cosine.mean().item(), rel=1e-4, abs=1e-4)
    assert backend.name == f"CLIP ({tiny_clip_dir})"


def test_clip_embeddings_give_consistency(tiny_clip_dir):
    backend = metrics.ClipScorer(tiny_clip_dir)
    video = frames()
    same = metrics.consistency_metrics(backend.embed(torch.cat([video[:1]] * 3)))
    different = metrics.consistency_metrics(backend.embed(video))
    assert same["consistency_adjacent"] == pytest.approx(100.0)
    assert different["consistency_adjacent"] < 100.0


def test_digit_backend_recognises_real_digits():
    backend = metrics.DigitScorer()
    real = backend.reference_images()
    from zs2_kernels.evaluation.digits import load_digit_split

    labels = torch.cat([load_digit_split().train_labels, load_digit_split().test_labels])
    threes = real[labels == 3][:20]
    scores = backend.prompt_metrics(threes, "a handwritten digit three")
    assert scores["prompt_accuracy"] >= 95 and scores["prompt_probability"] > 90
    assert backend.prompt_metrics(threes, "the number 8")["prompt_accuracy"] <= 5


def test_ablation_with_clip_backend(tiny_clip_dir, tmp_path):
    from zs2_kernels.evaluation.ablation import Ablation
    from zs2_kernels.evaluation.planning import AblationSettings

    from tiny_pipelines import tiny_pipeline

    model = tmp_path / "model"
    tiny_pipeline("sd15").save_pretrained(model, safe_serialization=True)
    settings = AblationSettings(out=str(tmp_path / "out"), study="components", model=str(model), prompts=["a cat"],
                                seeds=1, frames=2, steps=2, metrics=("clip", "consistency"), clip_model=tiny_clip_dir)
    results = Ablation(settings).run(progress=False)
    assert results["scorer"].startswith("CLIP") and results["fid_reference"] is None
    assert 0 <= results["summary"]["zs2"]["clip_score"]["mean"] <= 100


def test_feature_fid_warns_when_covariances_are_rank_deficient():
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.normal(size=(200, 8)))
    fid = metrics.FeatureFID(real)
    with pytest.warns(RuntimeWarning, match="FID with 5 generated and 200 reference samples for 8-dim features"):
        fid.distance(torch.from_numpy(rng.normal(size=(5, 8))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fid.distance(real) == pytest.approx(0.0, abs=1e-6)  # enough samples: no warning
