"""Loading an image diffusion pipeline: the embedded default, a local folder, or a hub id (safetensors only)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import torch

from ._checks import check_device, check_dtype
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
    if path.exists():
        raise ValueError(f"model path {path} is not a folder: give a diffusers pipeline folder (with "
                         "model_index.json) or a hub id")
    if isinstance(model, os.PathLike) or _looks_like_path(str(model)):
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


#: Library log lines that tell our users nothing they can act on: transformers' image processors fall back
#: from torchvision (which would pull a CUDA torch from the package index), and the tokenizers' over-length
#: notes (one of them repeats the whole cut-off prompt; ``sample_video`` warns once, briefly, instead).
QUIET_LOG_LINES = ("requires torchvision", "Token indices sequence length is longer",
                   "was truncated because CLIP can only handle",
                   # diffusers' fp16-on-CPU warning: float16 runs on CPUs with this torch (tested), only slowly
                   "cannot run with `cpu` device")


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(line in record.getMessage() for line in QUIET_LOG_LINES)


@contextlib.contextmanager
def quiet_library_logs(progress: bool = True):
    """Within the block, drop :data:`QUIET_LOG_LINES` from diffusers' and transformers' logs, and (``progress``
    False) their loading progress bars; everything else they log still shows."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    handlers = [h for name in ("diffusers", "transformers") for h in logging.getLogger(name).handlers]
    bars = [library for library in libraries if not progress and library.is_progress_bar_enabled()]
    quiet = _QuietFilter()
    for handler in handlers:
        handler.addFilter(quiet)
    for library in bars:
        library.disable_progress_bar()
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
        for library in bars:
            library.enable_progress_bar()


#: Seconds to wait for the hub's answer before calling it unreachable (the hub client retries five times, ~30 s).
HUB_TIMEOUT = 5.0
#: The small files read before any weights: what the checks need.
_CONFIG_FILES = ("model_index.json", "unet/config.json", "vae/config.json")


def _hub_folder(hub_id: str) -> Path:
    """The local snapshot folder of a hub id, after fetching its small config files.

    The local cache is tried first, without network; then, unless offline mode is on, one quick request tells
    whether the hub can be reached at all before the hub client is asked (an offline machine spent ~30 s in its
    retries, printing a line each, before the refusal).
    """
    from huggingface_hub import constants, hf_hub_download

    try:
        paths = [hf_hub_download(hub_id, name, local_files_only=True) for name in _CONFIG_FILES]
        return Path(paths[0]).parent
    except Exception:  # not (all) in the cache: the client raises several kinds for that
        pass
    if constants.is_offline_mode():
        raise OSError(f"model {hub_id!r}: its pipeline files are not in the local cache, and HF_HUB_OFFLINE is set "
                      "(download it once with network access, or give a local folder)")
    unreachable = _hub_unreachable(constants.ENDPOINT)
    if unreachable:
        raise OSError(f"model {hub_id!r}: its pipeline files are not in the local cache and the hub "
                      f"({constants.ENDPOINT}) cannot be reached: {unreachable} (give a local folder, or run with "
                      "network access once)")
    try:
        paths = [hf_hub_download(hub_id, name) for name in _CONFIG_FILES]
    except Exception as error:  # the hub client's errors of every kind: network, missing repo or file
        raise OSError(f"model {hub_id!r}: could not find its pipeline files on the hub or in the local cache: "
                      f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    return Path(paths[0]).parent


def _hub_unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be reached (one HEAD request, :data:`HUB_TIMEOUT`, no retries), or None if it
    answered at all (any HTTP status: the hub client deals with those)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_TIMEOUT).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))
    return None


def read_model_config(model=None) -> dict:
    """What the checks need before any weights load: {"unet": config, "vae": config, "scheduler": config (empty
    when the folder has none), "vae_scale_factor": int, "weights": bytes}.

    ``weights`` is the size of the safetensors files on disk (0 for a hub id whose weights are not yet in
    the cache). Raises FileNotFoundError/OSError naming the model when it cannot be found or read.
    """
    location = resolve_model_location(model)
    folder = Path(location) if Path(location).is_dir() else _hub_folder(location)
    configs = {}
    for part in ("unet", "vae"):
        path = folder / part / "config.json"
        try:
            configs[part] = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise FileNotFoundError(f"model {location!r} has no readable {part}/config.json ({error}); zs2 needs a "
                                    "text-to-image latent diffusion pipeline such as StableDiffusionPipeline") from None
    for part in ("text_encoder", "text_encoder_2"):  # optional: what the UNet's cross-attention reads
        path = folder / part / "config.json"
        try:
            configs[part] = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError) as error:
            raise ValueError(f"model {location!r}: {part}/config.json is not readable JSON ({error})") from None
    scheduler = folder / "scheduler" / "scheduler_config.json"
    try:
        configs["scheduler"] = json.loads(scheduler.read_text()) if scheduler.is_file() else {}
    except ValueError as error:
        raise ValueError(f"model {location!r}: scheduler/scheduler_config.json is not valid JSON ({error})") from None
    _check_model_config(configs, location)
    configs["vae_scale_factor"] = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)  # as diffusers computes it
    configs["weights"] = sum(path.stat().st_size for path in folder.rglob("*.safetensors") if path.is_file())
    return configs


def _check_json_files(folder: Path) -> None:
    """Every JSON file of a pipeline folder parses (configs, tokenizers), else the file is named: the libraries
    report a damaged one as a bare "Expecting value: line 1 column 1" (run after a failed load only)."""
    for path in sorted(folder.rglob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"model {str(folder)!r}: {path.relative_to(folder)} is not valid JSON ({error})") from None


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_model_config(configs: dict, location: str) -> None:
    """The config values the checks derive the user's limits from are sane; else the model is named, not a flag."""
    problems = []
    unet, vae, scheduler = configs["unet"], configs["vae"], configs["scheduler"]
    if not _positive_int(unet.get("sample_size", 64)) and not isinstance(unet.get("sample_size"), (list, tuple)):
        problems.append(f"unet/config.json sample_size must be a positive int, got {unet.get('sample_size')!r}")
    channels = vae.get("block_out_channels")
    if not isinstance(channels, (list, tuple)) or not channels or not all(map(_positive_int, channels)):
        problems.append(f"vae/config.json block_out_channels must be a list of positive ints, got {channels!r}")
    timesteps = scheduler.get("num_train_timesteps", 1000)
    if not _positive_int(timesteps) or timesteps < 2:
        problems.append(f"scheduler/scheduler_config.json num_train_timesteps must be an int >= 2, got {timesteps!r}")
    problems += _mismatched_components(configs)
    if problems:
        raise ValueError(f"model {location!r} has a broken configuration: {'; '.join(problems)}")


def _mismatched_components(configs: dict) -> list[str]:
    """Components whose configs cannot work together (each loads, then the first UNet call fails on a shape): the
    UNet's cross-attention width against the text encoders' outputs, its output channels against the VAE's latent
    channels."""
    unet, vae = configs["unet"], configs["vae"]
    problems = []
    encoders = [(part, configs[part]) for part in ("text_encoder", "text_encoder_2") if configs.get(part) is not None]
    widths = [config.get("hidden_size") for _, config in encoders]
    width = sum(widths) if widths and all(map(_positive_int, widths)) else None
    attends = unet.get("cross_attention_dim")
    if width is not None and _positive_int(attends) and attends != width:
        names = " + ".join(f"{part}/config.json hidden_size {config['hidden_size']}" for part, config in encoders)
        problems.append(f"unet/config.json cross_attention_dim {attends} does not match {names} (the UNet "
                        "attends to the text encoders' output)")
    latent, out = vae.get("latent_channels", 4), unet.get("out_channels", 4)
    if _positive_int(latent) and _positive_int(out) and latent != out:
        problems.append(f"unet/config.json out_channels {out} does not match vae/config.json latent_channels {latent} "
                        "(the UNet predicts the VAE's latents)")
    return problems


def load_pipeline(model=None, *, device=None, dtype: torch.dtype | None = None, progress: bool = True):
    """Load a diffusers text-to-image pipeline (Stable Diffusion 1.x/2.x or SDXL) for video sampling.

    Args:
        model: None for the embedded default model, a local pipeline folder, or a hub id (needs
            network access, or a populated cache with ``HF_HUB_OFFLINE=1``). Weights load from
            safetensors only; pickled checkpoints are refused.
        device: move the pipeline there (default: leave it on CPU).
        dtype: torch dtype of the weights (default: as stored).
        progress: show the libraries' loading progress bars.
    """
    from diffusers import DiffusionPipeline

    device = None if device is None else check_device(device)
    dtype = check_dtype(dtype)
    location = resolve_model_location(model)
    # Said explicitly, so diffusers does not warn that accelerate is missing (loading works without it).
    kwargs = {"use_safetensors": True, "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
    if dtype is not None:
        kwargs[_dtype_keyword()] = dtype
    try:
        with quiet_library_logs(progress):
            pipe = DiffusionPipeline.from_pretrained(location, **kwargs)
    except Exception as error:
        if Path(location).is_dir():  # only when loading failed: the libraries name no damaged JSON file
            _check_json_files(Path(location))
        if isinstance(error, (OSError, ValueError)):  # ValueError: files that parse but do not fit their class
            raise type(error)(f"could not load pipeline {location!r}: {error}") from error
        raise
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if getattr(pipe, component, None) is None:
            raise ValueError(f"pipeline {location!r} has no {component}; zs2 needs a text-to-image latent diffusion "
                             "pipeline such as StableDiffusionPipeline or StableDiffusionXLPipeline")
    if device is not None:
        with quiet_library_logs(progress):
            pipe = pipe.to(device)
    return pipe
