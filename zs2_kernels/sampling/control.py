"""Guided video for ``sample_video``: a control video steering every frame through one or more ControlNets.

The control frames are split with the latents chunk by chunk, and each ControlNet runs temporal momentum
attention with its own state carried across chunks like the UNet's, so chunked equals unchunked. The
computation per UNet call is diffusers' ``StableDiffusionControlNetPipeline``'s (guess mode included).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path

import torch

from .._checks import check_number
from ..attention import unwrap_compiled
from ..embedded import controlnet_path, embedded_model_path
from ..loading import _looks_like_path, quiet_library_logs
from ..video_io import frames_tensor
from .compiling import compiled

#: UNet config entries a ControlNet must share with it (its residuals are added to the UNet's blocks).
MATCHING_CONFIG = ("block_out_channels", "cross_attention_dim", "in_channels", "layers_per_block")
#: sample_video's ControlNet arguments and their defaults: given without control_video, they are refused.
CONTROL_DEFAULTS = {"controlnet": None, "controlnet_conditioning_scale": 1.0, "control_guidance_start": 0.0,
                    "control_guidance_end": 1.0, "guess_mode": False}


def control_frames(control_video, num_frames: int | None) -> torch.Tensor:
    """The control video as float32 [V or 1, F, 3, H, W] in [0, 1]; ``num_frames`` (if given) must be F.

    Accepts a tensor [F, C, H, W] / [V, F, C, H, W] in [0, 1] (C 1 or 3), an array [F, H, W, C] /
    [V, F, H, W, C] (uint8, or float in [0, 1]), or a list of PIL images (one video) or of such lists.
    """
    frames = frames_tensor(control_video, "control_video")
    given = tuple(getattr(control_video, "shape", frames.shape))  # an array's shape as passed: channels last
    if frames.dim() == 4:
        frames = frames.unsqueeze(0)
    if frames.dim() != 5 or frames.shape[2] not in (1, 3) or 0 in frames.shape:
        raise ValueError(f"control_video must be [F, C, H, W] or [V, F, C, H, W] with C 1 or 3 (arrays and PIL: "
                         f"channels last), got shape {given}")
    if not torch.isfinite(frames).all() or frames.min() < 0 or frames.max() > 1:
        raise ValueError("control_video values must be in [0, 1] (uint8 arrays and PIL images are scaled by 1/255)")
    if num_frames is not None and frames.shape[1] != num_frames:
        raise ValueError(f"control_video has {frames.shape[1]} frames but num_frames is {num_frames}: give "
                         "one control frame per video frame (or leave num_frames out to take the video's length)")
    return frames.expand(-1, -1, 3, -1, -1).float()


def control_steering(control_video, controlnet, scale, start, end, guess_mode) -> ControlSteering | None:
    """sample_video's ControlNet arguments checked (without a model) as a :class:`ControlSteering`, or None without a
    control video, where any of them given is refused. A MultiControlNetModel is taken as the list of its nets."""
    given = dict(zip(CONTROL_DEFAULTS, (controlnet, scale, start, end, guess_mode)))
    if control_video is None:
        named = [name for name, default in CONTROL_DEFAULTS.items() if not _is_default(given[name], default)]
        if named:
            raise ValueError(f"{', '.join(named)} need{'s' if len(named) == 1 else ''} control_video (the frames "
                             "that guide the video); without it they would be ignored")
        return None
    if hasattr(controlnet, "nets"):  # a MultiControlNetModel: its nets, one control video each
        controlnet = list(controlnet.nets)
    return ControlSteering(control_video, controlnet, scale, start, end, guess_mode)


def pipeline_controlnet(model):
    """The ControlNet (or MultiControlNetModel) of a ControlNet pipeline given as ``model``, else None: what guides
    when sample_video gets a control video and no ControlNet of its own."""
    return getattr(model, "controlnet", None) if hasattr(model, "unet") else None


def _is_default(value, default) -> bool:
    """``value`` is ``default`` or a number equal to it (1 for 1.0, numpy numbers too; not a list or tensor)."""
    return value is default or (isinstance(value, numbers.Real) and value == default)


def controlnet_location(source) -> str:
    """A ControlNet folder (with config.json) or hub id; raises FileNotFoundError for a missing folder (a source that
    looks like a path: starts with ".", "/" or "~", or is not "org/name")."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"controlnet folder {path} has no config.json: not a diffusers ControlNet folder")
        return str(path)
    if _looks_like_path(str(source)) or path.exists():
        raise FileNotFoundError(f"controlnet {path}: no such folder (a ControlNet folder with config.json, or a hub id "
                                "org/name)")
    return str(source)


#: diffusers' ControlNetModel default: three stride-2 blocks, the condition shrunk 8x (SD's VAE factor).
DEFAULT_CONDITIONING_CHANNELS = (16, 32, 96, 256)


def read_controlnet_config(source) -> dict:
    """A ControlNet folder's or hub id's config.json, read without its weights (hub: fetched or from the cache)."""
    location = controlnet_location(source)
    if Path(location).is_dir():
        return json.loads((Path(location) / "config.json").read_text())
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(location, "config.json")).read_text())
    except Exception as error:  # the hub client's errors of every kind: network, missing repo or file, offline
        raise OSError(f"controlnet {location!r}: could not find its config.json on the hub or in the local cache: "
                      f"{type(error).__name__}") from None


def check_fits_unet(config, unet_config, vae_factor: int | None = None) -> None:
    """Raise ValueError unless ``config`` is a ControlNet's that fits a UNet of ``unet_config``, takes RGB conditions
    and (with ``vae_factor``, the VAE's downscale) brings its condition to the latents' size."""
    kind = config.get("_class_name")
    if kind is not None and "ControlNet" not in str(kind):
        raise ValueError(f"controlnet's config.json is a {kind}'s, not a ControlNetModel's")
    wrong = [f"{key} {_listed(config.get(key))} vs the UNet's {_listed(unet_config.get(key))}"
             for key in MATCHING_CONFIG if _listed(config.get(key)) != _listed(unet_config.get(key))]
    if wrong:
        raise ValueError(f"controlnet does not fit the UNet: {'; '.join(wrong)}")
    channels = config.get("conditioning_channels", 3)
    if channels != 3:
        raise ValueError(f"controlnet takes {channels}-channel conditions (conditioning_channels {channels}) but "
                         "control videos are given to it as RGB, grey copied to 3 channels: use an RGB ControlNet")
    downscale = 2 ** (len(config.get("conditioning_embedding_out_channels", DEFAULT_CONDITIONING_CHANNELS)) - 1)
    if vae_factor is not None and downscale != vae_factor:
        raise ValueError(f"controlnet shrinks its condition {downscale}x (conditioning_embedding_out_channels) but "
                         f"this model's latents are 1/{vae_factor} of the frame: it was made for another VAE")


def load_controlnets(controlnet, pipe, count: int):
    """The ControlNet(s) to guide with, checked against ``pipe.unet``: a ControlNetModel (or its compiled wrapper), a
    folder or hub id, a list of those (one per control video), or None for the embedded one (embedded model only)."""
    from diffusers import ControlNetModel
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    unet = pipe.unet
    if controlnet is None:
        controlnet = getattr(pipe, "controlnet", None)  # a ControlNet pipeline's own (loaded from its folder)
    if controlnet is None:
        source = getattr(pipe, "name_or_path", None) or ""
        if Path(str(source)).resolve() != embedded_model_path():
            raise ValueError("control_video needs controlnet= (a ControlNetModel, folder or hub id) for this model; "
                             "only the embedded model has a default ControlNet")
        controlnet = controlnet_path()
    nets = list(getattr(controlnet, "nets", controlnet if isinstance(controlnet, (list, tuple)) else [controlnet]))
    if len(nets) != count:
        raise ValueError(f"give one control video per ControlNet: {len(nets)} ControlNet(s), {count} control video(s)")
    loaded = []
    for net in map(unwrap_compiled, nets):
        if isinstance(net, (str, Path)):
            check_fits_unet(read_controlnet_config(net), unet.config, pipe.vae_scale_factor)  # before its weights
            with quiet_library_logs():
                net = ControlNetModel.from_pretrained(controlnet_location(net), use_safetensors=True,
                                                      low_cpu_mem_usage=False, torch_dtype=unet.dtype)
            net = net.to(unet.device)  # loaded on the CPU: a folder's ControlNet goes where the UNet is
        if not isinstance(net, ControlNetModel):
            raise TypeError(f"controlnet must be a ControlNetModel, a folder or a hub id, got {type(net).__name__}")
        check_fits_unet(net.config, unet.config, pipe.vae_scale_factor)
        if (net.device, net.dtype) != (unet.device, unet.dtype):
            raise ValueError(f"controlnet is on {net.device} in {net.dtype}, the UNet on {unet.device} in "
                             f"{unet.dtype}: move it (controlnet.to(...)) or pass its folder")
        loaded.append(net)
    if len({id(net) for net in loaded}) < len(loaded):
        raise ValueError("controlnet lists the same ControlNetModel object twice: its momentum-attention state would "
                         "mix between the two uses; load it twice (or copy.deepcopy it) for two guides")
    return loaded[0] if len(loaded) == 1 else MultiControlNetModel(loaded)


def _listed(value):
    """Config values compare as lists: a config read from JSON has lists where one built in code has tuples."""
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass
class ControlRun:
    """Prepared ControlNet steering (a :class:`~zs2_kernels.sampling.modes.SteeringRun`): one or more ControlNets,
    their control videos [V, F, 3, H, W] (per net), scales and active step range."""

    net: torch.nn.Module
    videos: list
    scales: list
    starts: list
    ends: list
    guess_mode: bool
    call: object = None  # what runs the net: the net itself, or its compiled wrapper

    def __post_init__(self):
        self.call = self.net if self.call is None else self.call

    @property
    def models(self) -> list:
        """The ControlNet models (a MultiControlNetModel's nets each): where momentum attention goes."""
        return list(getattr(self.net, "nets", [self.net]))

    def compile(self, options: dict) -> None:
        self.call = compiled(self.net, options)

    def unet_arguments(self, model_input, t, step: int, steps: int, hidden, extra, frames: slice,
                       halves: int) -> dict:
        """The UNet's extra keyword arguments for this call: the ControlNet residuals of frames ``frames``."""
        keep = [1.0 - float(step / steps < s or (step + 1) / steps > e) for s, e in zip(self.starts, self.ends)]
        scales = [scale * k for scale, k in zip(self.scales, keep)]
        images = [video[:, frames].flatten(0, 1) for video in self.videos]
        guess = self.guess_mode and halves == 2
        if guess:  # the ControlNet sees only the conditional half (diffusers' guess mode)
            model_input, hidden = model_input.chunk(2)[1], hidden.chunk(2)[1]
            extra = None if extra is None else {k: v.chunk(2)[1] for k, v in extra.items()}
        else:
            images = [torch.cat([image] * halves) for image in images]
        multi = len(images) > 1
        down, mid = self.call(model_input, t, encoder_hidden_states=hidden,
                              controlnet_cond=images if multi else images[0],
                              conditioning_scale=scales if multi else scales[0], guess_mode=self.guess_mode,
                              added_cond_kwargs=extra, return_dict=False)
        if guess:
            down = [torch.cat([torch.zeros_like(d), d]) for d in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


@dataclass
class ControlSteering:
    """Guided video's checked inputs (a :class:`~zs2_kernels.sampling.modes.Steering`): control video(s) and the
    ControlNet(s) (None: a ControlNet pipeline's own, or the embedded model's)."""

    control_video: object
    controlnet: object
    scale: object
    start: object
    end: object
    guess_mode: bool

    def clips(self) -> list:
        """The control videos, one per ControlNet (a list of ControlNets takes a list of videos)."""
        if isinstance(self.controlnet, (list, tuple)):
            if not isinstance(self.control_video, (list, tuple)) or not self.control_video:
                raise ValueError("with a list of ControlNets, control_video must be a list with one video per "
                                 "ControlNet")
            return list(self.control_video)
        return [self.control_video]

    def frame_count(self, num_frames: int | None) -> int:
        return control_frames(self.clips()[0], num_frames).shape[1]

    def size(self) -> tuple[int, int]:
        return tuple(control_frames(self.clips()[0], None).shape[-2:])

    def moved_with_pipeline(self, pipe) -> list:
        """The ControlNet objects that sit on the given pipeline's UNet device in its dtype (and are not its
        components): cast and moved with the pipeline for the call, and given back like it."""
        nets = self.controlnet
        parts = {id(module) for module in pipe.components.values()}
        return [net for net in map(unwrap_compiled, nets if isinstance(nets, (list, tuple)) else [nets])
                if isinstance(net, torch.nn.Module) and id(net) not in parts
                and (net.device, net.dtype) == (pipe.unet.device, pipe.unet.dtype)]

    def prepare(self, pipe, *, num_frames: int, videos: int, height: int, width: int) -> ControlRun:
        return prepare_guidance(self.clips(), self.controlnet, pipe, num_frames=num_frames, videos=videos,
                                height=height, width=width, scale=self.scale, start=self.start, end=self.end,
                                guess_mode=self.guess_mode)


def prepare_guidance(clips: list, controlnet, pipe, *, num_frames, videos, height, width, scale, start, end,
                     guess_mode) -> ControlRun:
    """Check and load everything guided sampling needs; control videos on the UNet's device and dtype.

    As in diffusers, guess mode is on whenever the (first) ControlNet pools its conditions (global_pool_conditions).
    """
    net = load_controlnets(controlnet, pipe, len(clips))
    guess_mode = bool(guess_mode) or bool(getattr(net, "nets", [net])[0].config.get("global_pool_conditions"))
    count = len(clips)
    scales, starts, ends = (_per_net(name, value, count) for name, value in
                            (("controlnet_conditioning_scale", scale), ("control_guidance_start", start),
                             ("control_guidance_end", end)))
    for s, e in zip(starts, ends):
        check_number("control_guidance_start", s, 0.0, 1.0)
        check_number("control_guidance_end", e, 0.0, 1.0)
        if s >= e:
            raise ValueError(f"control_guidance_start ({s}) must be below control_guidance_end ({e})")
    for value in scales:
        check_number("controlnet_conditioning_scale", value, 0.0, 100.0)
    tensors = []
    for clip in clips:
        frames = control_frames(clip, num_frames)
        if frames.shape[0] not in (1, videos):
            raise ValueError(f"control_video has {frames.shape[0]} videos; give one shared by all or one per video "
                             f"({videos})")
        if tuple(frames.shape[-2:]) != (height, width):
            raise ValueError(f"control_video frames are {tuple(frames.shape[-2:])} pixels but the video is "
                             f"{(height, width)}: pass height/width matching the control video")
        tensors.append(frames.expand(videos, *frames.shape[1:]).to(pipe.unet.device, pipe.unet.dtype))
    return ControlRun(net, tensors, scales, starts, ends, guess_mode)


def _per_net(name: str, value, count: int) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * count
    if len(values) != count:
        raise ValueError(f"{name} must be one number or one per ControlNet ({count}), got {len(values)}")
    return values
