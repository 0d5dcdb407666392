"""The request: every argument of one sampling call, checked once, in one frozen object.

:class:`SampleRequest`'s fields are ``sample_video``'s keyword arguments, with the same names and defaults. Building
one checks them all without a model (each error names the argument and its accepted range) and derives what the
sampler's steps read: the prompts as lists, the conditional modes (:mod:`.modes`), the frame count, the compile
options, the device and dtype, the number of videos. The command line's preflight builds the same object, and
:func:`zs2_kernels.sampling.sample` runs one: the demo app and batch runners can build requests too.

Adding an argument to ``sample_video``: its signature, a field here (with its check in ``__post_init__``) and the one
place in the sampler that reads it.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import torch

from .._checks import check_bool, check_device, check_dtype, check_float_tensor, check_int, check_number, check_search
from ..ops.backend import check_backend_name
from ..ops.noise.api import check_anchor
from ..seeds import check_seeds, step_seed
from .compiling import compile_options
from .conditioning import PromptEmbeddings, check_negative_prompts, check_prompts
from .control import control_steering, pipeline_controlnet
from .editing import check_edit
from .modes import Start, Steering
from .prompt_travel import check_keyframes
from .schedulers import SCHEDULERS, check_steps, make_scheduler

OUTPUT_TYPES = ("np", "pt", "pil", "latent")
#: The prompt when neither prompt nor prompt_embeds is given (made for the embedded digits model).
DEFAULT_PROMPT = "a handwritten digit 3"
#: Far past any useful scale (Stable Diffusion uses 5-15); larger ones only overflow the noise prediction.
MAX_GUIDANCE = 1000.0
#: The frame count when neither num_frames nor a conditional input gives one.
DEFAULT_FRAMES = 8


@dataclass(frozen=True, eq=False)
class SampleRequest:
    """One sampling call's arguments (``sample_video``'s keyword arguments; see its docstring), checked."""

    prompt: object = None
    negative_prompt: object = None
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    noise_lambda: float = 0.01
    momentum: float = 0.98
    search: str = "exact"
    noise_anchor: float = 0.0
    dependency_noise: bool = True
    momentum_attention: bool = True
    frame_chunk: int | None = None
    seed: int | list[int] | None = None
    generator: object = None
    device: object = None
    dtype: object = None
    output_type: str = "np"
    decode_chunk_size: int = 8
    num_videos_per_prompt: int = 1
    progress: bool = True
    callback_on_step_end: object = None
    backend: str | None = None
    scheduler: object = "ddim"
    prompt_embeds: torch.Tensor | None = None
    negative_prompt_embeds: torch.Tensor | None = None
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None
    control_video: object = None
    controlnet: object = None
    controlnet_conditioning_scale: object = 1.0
    control_guidance_start: object = 0.0
    control_guidance_end: object = 1.0
    guess_mode: bool = False
    image: object = None
    video: object = None
    strength: float | None = None
    compile: object = False
    latents: torch.Tensor | None = None

    # Derived by __post_init__ from the fields above.
    prompts: list | None = field(init=False)  # None when prompt embeddings replace them
    negative_prompts: list | None = field(init=False)  # one per prompt, or None
    embeddings: PromptEmbeddings | None = field(init=False)
    steering: Steering | None = field(init=False)  # what steers every step (a control video)
    start: Start | None = field(init=False)  # what the video starts from (an image, a video)
    frames: int = field(init=False)  # num_frames, else the conditional inputs', else DEFAULT_FRAMES
    videos: int = field(init=False)  # prompts x num_videos_per_prompt
    compile_options: dict | None = field(init=False)  # torch.compile's arguments, or None: eager

    def __post_init__(self):
        derive = object.__setattr__.__get__(self)
        embeddings = _embeddings(self.prompt_embeds, self.negative_prompt_embeds, self.pooled_prompt_embeds,
                                 self.negative_pooled_prompt_embeds)
        start = check_edit(self.image, self.video, self.strength, self.control_video, self.num_inference_steps)
        steering = control_steering(self.control_video, self.controlnet, self.controlnet_conditioning_scale,
                                    self.control_guidance_start, self.control_guidance_end, self.guess_mode)
        frames = self.num_frames
        for mode in (steering, start):
            frames = frames if mode is None else mode.frame_count(frames)
        frames = DEFAULT_FRAMES if frames is None else frames
        prompts, negatives = self._check_inputs(embeddings, frames)
        derive("prompts", prompts)
        derive("negative_prompts", negatives)
        derive("embeddings", embeddings)
        derive("steering", steering)
        derive("start", start)
        derive("frames", frames)
        derive("videos", (embeddings.count if embeddings is not None else len(prompts)) * self.num_videos_per_prompt)
        derive("compile_options", compile_options(self.compile))
        derive("dtype", check_dtype(self.dtype))
        derive("device", None if self.device is None else check_device(self.device))

    def _check_inputs(self, embeddings: PromptEmbeddings | None, frames: int) -> tuple[list | None, list | None]:
        """Everything else that needs no model; returns the prompts (None when embeddings replace them) and the
        negative prompts (None or one per prompt) as lists."""
        if embeddings is not None and self.prompt is not None:
            raise ValueError("pass either prompt or prompt_embeds, not both")
        prompts = None if embeddings is not None else check_prompts(
            DEFAULT_PROMPT if self.prompt is None else self.prompt)
        count = embeddings.count if embeddings is not None else len(prompts)
        if embeddings is not None and embeddings.negative_prompt_embeds is not None and \
                self.negative_prompt is not None:
            raise ValueError("pass either negative_prompt or negative_prompt_embeds, not both")
        negatives = check_negative_prompts(self.negative_prompt, count)
        for name in ("dependency_noise", "guess_mode", "momentum_attention", "progress"):
            check_bool(name, getattr(self, name))
        if self.callback_on_step_end is not None:
            _check_callback(self.callback_on_step_end)
        if not isinstance(self.scheduler, str) or self.scheduler not in SCHEDULERS:
            check_steps(check_int("num_inference_steps", self.num_inference_steps, 1),
                        make_scheduler(self.scheduler, {}).config)  # raises for anything but a name or an instance
        check_backend_name(self.backend)
        check_int("num_frames", frames, 1)
        check_keyframes(prompts, frames)
        check_keyframes(negatives, frames)
        if embeddings is not None and embeddings.frames not in (None, frames):
            raise ValueError(f"prompt_embeds has {embeddings.frames} frames per prompt ([P, F, L, D], one row per "
                             f"frame) but the video has num_frames={frames}")
        check_int("num_inference_steps", self.num_inference_steps, 1)
        check_number("guidance_scale", self.guidance_scale, 0.0, MAX_GUIDANCE)
        check_search(self.noise_lambda, self.search)
        check_anchor(self.noise_anchor, self.search)
        check_number("momentum", self.momentum, 0.0, 1.0)
        if self.frame_chunk is not None:
            check_int("frame_chunk", self.frame_chunk, 1)
        if self.output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {self.output_type!r}")
        check_int("decode_chunk_size", self.decode_chunk_size, 1)
        check_int("num_videos_per_prompt", self.num_videos_per_prompt, 1)
        self._check_randomness(count * self.num_videos_per_prompt)
        if self.latents is not None:
            _check_latents(self.latents)
        return prompts, negatives

    def _check_randomness(self, videos: int) -> None:
        seed, generator = self.seed, self.generator
        if seed is not None and generator is not None:
            raise ValueError("pass either seed or generator, not both")
        if seed is not None:
            object.__setattr__(self, "seed", check_seeds(seed, videos))
        generators = generator if isinstance(generator, (list, tuple)) else [generator]
        if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
            raise TypeError(f"generator must be a torch.Generator or a list of them, got {generator!r}")
        if isinstance(generator, (list, tuple)) and len(generator) != videos:
            raise ValueError(f"generator list must have one generator per video ({videos} = prompts x "
                             f"num_videos_per_prompt), got {len(generator)}")

    @classmethod
    def for_model(cls, model, **arguments) -> SampleRequest:
        """The request of a call on ``model``: a ControlNet pipeline given as the model guides with its own
        ControlNet(s) when the call gives a control video and no ``controlnet``."""
        if arguments.get("control_video") is not None and arguments.get("controlnet") is None:
            arguments["controlnet"] = pipeline_controlnet(model)
        return cls(**arguments)

    def on_model(self, model) -> SampleRequest:
        """This request for a call on ``model`` (see :meth:`for_model`)."""
        if self.control_video is None or self.controlnet is not None or pipeline_controlnet(model) is None:
            return self
        return dataclasses.replace(self, controlnet=pipeline_controlnet(model))

    @property
    def guided(self) -> bool:
        """Classifier-free guidance on (the UNet batch holds two halves)."""
        return self.guidance_scale > 1.0

    def step_seed(self) -> int:
        """The seed of a stochastic scheduler's per-step noise chains (see :func:`zs2_kernels.seeds.step_seed`)."""
        return step_seed(self.seed, self.generator)


def _check_latents(latents) -> None:
    """Given initial noise: a finite float tensor [videos · frames, c, h, w] or [videos, frames, c, h, w] (its
    sizes are checked against the model's in the sampler)."""
    check_float_tensor("latents", latents)
    if latents.dim() not in (4, 5):
        raise ValueError(f"latents must be [videos · frames, c, h, w] or [videos, frames, c, h, w], got shape "
                         f"{tuple(latents.shape)}")
    if latents.is_meta or not torch.isfinite(latents).all():
        raise ValueError("latents must be finite (no NaN/inf) and hold data (not on the meta device)")


def _check_callback(callback) -> None:
    """A callable taking diffusers' four positional arguments (pipe, step, timestep, callback_kwargs)."""
    if not callable(callback):
        raise TypeError(f"callback_on_step_end must be callable or None, got {callback!r}")
    try:
        inspect.signature(callback).bind(None, 0, 0, {})
    except TypeError as error:
        raise TypeError(f"callback_on_step_end must take (pipe, step, timestep, callback_kwargs) like diffusers' "
                        f"callbacks: {error}") from None
    except ValueError:  # a builtin without a signature: called as it is
        pass


def _embeddings(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds):
    """The given prompt embeddings, checked, or None."""
    if prompt_embeds is None:
        if any(e is not None for e in (negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds)):
            raise ValueError("negative and pooled prompt embeddings need prompt_embeds")
        return None
    return PromptEmbeddings(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds)
