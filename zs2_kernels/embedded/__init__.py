"""The weights shipped with the package, so a video can be made offline on a fresh machine.

``digits-sd/`` is a small ``StableDiffusionPipeline`` trained by ``python/train_embedded.py`` on
scikit-learn's handwritten digits; ``digit_classifier.safetensors`` is the evaluation classifier trained by
``python/train_classifier.py``; ``digits-controlnet/`` is a small ``ControlNetModel`` for ``digits-sd``, trained
by ``python/train_controlnet.py`` on :func:`digit_condition` edge maps. Only the paths and the condition live here:
loading the default model needs nothing else. The digit data, prompts and classifier (evaluation and training
only) are in :mod:`zs2_kernels.evaluation.digits`.
"""

from __future__ import annotations

from pathlib import Path

from .condition import digit_condition

__all__ = ["classifier_weights_path", "controlnet_path", "digit_condition", "embedded_model_path"]

_HERE = Path(__file__).resolve().parent


def embedded_model_path() -> Path:
    """Folder of the shipped ``StableDiffusionPipeline`` (load with ``from_pretrained``)."""
    return _HERE / "digits-sd"


def classifier_weights_path() -> Path:
    """File of the shipped digit classifier weights (safetensors, config in its metadata)."""
    return _HERE / "digit_classifier.safetensors"


def controlnet_path() -> Path:
    """Folder of the shipped ``ControlNetModel`` for ``digits-sd`` (condition: :func:`digit_condition`)."""
    return _HERE / "digits-controlnet"
