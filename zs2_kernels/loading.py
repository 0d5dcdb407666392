"""Loading an image diffusion pipeline: the embedded default, a local folder, or a hub id (safetensors only)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .embedded import embedded_model_path


def _looks_like_path(model: str) -> bool:
    """Hub ids are "org/name"; anything else that does not exist locally is a missing path."""
    return model.startswith((".", "/", "~")) or model.count("/") != 1 or "\\" in model


def resolve_model_location(model) -> str:
    """The folder or hub id to load; raises FileNotFoundError naming what was looked for."""
    if model is None:
        folder = embedded_model_path()
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"the embedded default model is missing: looked for {folder}/model_index.json "
                                    "(reinstall zs2_kernels, or pass model=<folder or hub id>)")
        return str(folder)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be None, a pipeline, a folder path or a hub id, got {type(model).__name__}")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"model folder {path} has no model_index.json: not a diffusers pipeline folder")
        return str(path)
    if isinstance(model, os.PathLike) or _looks_like_path(str(model)) or path.exists():
        raise FileNotFoundError(f"model path {path} does not exist (looked for a diffusers pipeline folder with "
                                "model_index.json)")
    return str(model)


def _dtype_keyword() -> str:
    """Recent diffusers take ``dtype`` (and warn on ``torch_dtype``); older ones only know ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present where dtype is)
    except ImportError:
        return "torch_dtype"
    return "dtype"


def load_pipeline(model=None, *, device=None, dtype: torch.dtype | None = None):
    """Load a diffusers text-to-image pipeline (Stable Diffusion 1.x/2.x or SDXL) for video sampling.

    Args:
        model: None for the embedded default model, a local pipeline folder, or a hub id (needs
            network access, or a populated cache with ``HF_HUB_OFFLINE=1``). Weights load from
            safetensors only; pickled checkpoints are refused.
        device: move the pipeline there (default: leave it on CPU).
        dtype: torch dtype of the weights (default: as stored).
    """
    from diffusers import DiffusionPipeline

    location = resolve_model_location(model)
    kwargs = {"use_safetensors": True}
    if dtype is not None:
        kwargs[_dtype_keyword()] = dtype
    try:
        pipe = DiffusionPipeline.from_pretrained(location, **kwargs)
    except OSError as error:
        raise OSError(f"could not load pipeline {location!r}: {error}") from error
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if getattr(pipe, component, None) is None:
            raise ValueError(f"pipeline {location!r} has no {component}; zs2 needs a text-to-image latent diffusion "
                             "pipeline such as StableDiffusionPipeline or StableDiffusionXLPipeline")
    if device is not None:
        pipe = pipe.to(device)
    return pipe
