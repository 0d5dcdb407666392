"""``sample_video``: ZS² text-to-video sampling with any diffusers text-to-image latent diffusion pipeline.

A scheduler (DDIM by default, see :mod:`.schedulers`) with classifier-free guidance over a batch laid out (guidance
half, video, frame); initial latents from the dependency noise model (and a stochastic scheduler's per-step noise
too); temporal momentum attention installed on the UNet for the call and always restored. ``frame_chunk`` bounds
memory for long videos while giving the same result (the momentum state is carried from chunk to chunk). The call's
arguments are one :class:`~.request.SampleRequest`; its conditional modes (:mod:`.modes`) are asked for their frames
and size, prepared once, and called per step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch

from ..attention import install_momentum_attention
from ..loading import load_pipeline
from ..ops.backend import resolve_backend
from ..ops.noise import chain_correlations
from ..ops.noise import dependency_noise as make_dependency_noise
from ..seeds import video_generators
from .compiling import before_call, compiled, own_outputs, uses_cuda_graphs
from .conditioning import encode_conditioning
from .memory import check_fits, estimate_memory
from .noise_hooks import NoiseSettings, chain_step_noise, check_chainable, draws_step_noise
from .request import SampleRequest
from .schedulers import check_steps, make_scheduler
from .shapes import latent_shape, pipeline_resolution
from .vae import decode


@dataclass
class VideoOutput:
    """Result of :func:`sample_video`.

    frames: "np": float32 array [B, F, H, W, C] in [0, 1]; "pt": tensor [B, F, C, H, W]; "pil": list of
    lists of PIL images; "latent": the final latents [B, F, c, h, w]. B = prompts x videos per prompt.
    stats: noise-search statistics per frame pair ("alpha", "achieved_kl", "correlation" of adjacent frames,
    "correlation_first" of each frame with frame 0; lists [B][F-1]; given ``latents``: the correlations only),
    "initial_noise" ("dependency", "independent" or "given"),
    the backend used, the settings, and wall time per stage in seconds ("timings"); with ``image``/``video``
    also "edit" ("image" or "video"), "strength" and "steps_run" (the denoising steps run).
    """

    frames: object
    stats: dict = field(default_factory=dict)


def _initial_latents(shape, *, use_dependency_noise, noise_lambda, search, generator, seed, device, backend,
                     first=None, noise_anchor=0.0):
    """[V, F, c, h, w] float32 initial latents and the noise statistics (None without dependency noise).

    With ``seed`` (or a list of generators), video v's noise depends only on (seed, v), never on the batch
    it is sampled in (see :mod:`zs2_kernels.seeds`); one generator draws for the whole batch.
    ``first`` [V, c, h, w] (image-to-video's inverted noise) replaces frame 0 and starts the chain.
    """
    if use_dependency_noise:
        return make_dependency_noise(shape, noise_lambda, search=search, generator=generator, seed=seed,
                                     device=device, return_stats=True, backend=backend, first=first,
                                     noise_anchor=noise_anchor)
    generators = video_generators(seed, shape[0]) if generator is None else generator
    if isinstance(generators, torch.Generator):
        noise = torch.randn(shape, generator=generators, device=generators.device, dtype=torch.float32)
    else:
        noise = torch.stack([torch.randn(shape[1:], generator=g, device=g.device, dtype=torch.float32)
                             for g in generators])
    noise = noise.to(device)
    if first is not None:
        noise[:, 0] = first
    return noise, None


#: The noise statistics ``stats`` reports per frame pair (given latents: the correlations only).
NOISE_STATS = ("alpha", "achieved_kl", "correlation", "correlation_first")


def _given_latents(latents: torch.Tensor, shape, device, first=None):
    """The caller's initial noise as float32 [V, F, c, h, w] on ``device`` (a copy: fp16/bf16 values upcast as they
    are) with image-to-video's inverted noise ``first`` as frame 0, and its frame correlations."""
    videos, frames = shape[:2]
    flat = (videos * frames, *shape[2:])
    if tuple(latents.shape) not in (flat, tuple(shape)):
        raise ValueError(f"latents must have shape {flat} or {tuple(shape)} ({videos} videos x num_frames={frames}, "
                         f"the model's {shape[2]} latent channels at {shape[3]} x {shape[4]} for this height and "
                         f"width), got {tuple(latents.shape)}")
    noise = latents.detach().to(device, torch.float32, copy=True).reshape(shape)
    if first is not None:
        noise[:, 0] = first
    return noise, chain_correlations(noise)


def _saved_tensors(components) -> list:
    """(store, name, tensor object, its data) of every parameter and buffer of the given modules."""
    saved = []
    for component in components:
        if isinstance(component, torch.nn.Module):
            for module in component.modules():
                for store in (module._parameters, module._buffers):
                    saved += [(store, name, t, t.data) for name, t in store.items() if t is not None]
    return saved


@contextlib.contextmanager
def _pipeline(model, request: SampleRequest):
    """The pipeline to sample with: ``model`` itself when it is one, else loaded.

    A given pipeline is moved/cast for the call only: its own tensors are put back afterwards, bit for bit
    (a cast down and up again would round them), also when sampling fails; so are the modules the request's
    steering moves with it (ControlNets on its device in its dtype).
    """
    device, dtype = request.device, request.dtype
    if not (hasattr(model, "unet") and hasattr(model, "vae")):
        yield load_pipeline(model, device=device, dtype=dtype, progress=request.progress)
        return
    move = device is not None and device != model.device
    cast = dtype is not None and dtype != model.unet.dtype
    steered = [] if request.steering is None else request.steering.moved_with_pipeline(model)
    parts = [model, *steered] if move or cast else []
    saved = _saved_tensors([*model.components.values(), *parts[1:]]) if parts else []
    try:
        for part in parts:
            if move:
                part.to(device)
            if cast:
                part.to(dtype=dtype)
        yield model
    finally:
        for store, name, tensor, data in saved:
            tensor.data = data
            store[name] = tensor


@dataclass
class _Models:
    """What the denoising loop calls: the UNet (or its compiled wrapper), the prepared steering (or None), and the
    momentum-attention handles on all of them."""

    unet: object
    dtype: torch.dtype  # the UNet's, read once: diffusers' model.dtype walks every parameter (~1 ms a call)
    steering: object
    handles: list
    traced: bool = False  # compiled: carried states are tensors from the first chunk on (one graph per length)
    cuda_graphs: bool = False


def _denoise_step(scheduler, latents, t, conditioning, models: _Models, chunk, guidance_scale, bar, step):
    """One scheduler step over all frames, the UNet (and ControlNets) run on ``chunk`` frames at a time (momentum
    states carried); ``bar`` (or None) advances once per UNet call, so long videos show progress within a step."""
    videos, num_frames = latents.shape[:2]
    halves = 2 if guidance_scale > 1.0 else 1
    for handle in models.handles:
        handle.check_installed()
        handle.reset_state(traced=models.traced)
    noise_pred = torch.empty_like(latents)
    for start in range(0, num_frames, chunk):
        stop = min(start + chunk, num_frames)
        frames = stop - start
        for handle in models.handles:
            handle.set_num_frames(frames, carry_state=chunk < num_frames or models.traced)
        block = latents[:, start:stop].reshape(videos * frames, *latents.shape[2:])
        model_input = scheduler.scale_model_input(torch.cat([block] * halves), t).to(models.dtype).contiguous()
        hidden, extra = conditioning.for_range(start, stop)
        before_call(models.cuda_graphs)
        steered = {} if models.steering is None else models.steering.unet_arguments(
            model_input, t, step, len(scheduler.timesteps), hidden, extra, slice(start, stop), halves)
        prediction = models.unet(model_input, t, encoder_hidden_states=hidden, added_cond_kwargs=extra,
                                 **steered).sample.float()
        own_outputs(models.handles, models.cuda_graphs)
        if halves == 2:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        noise_pred[:, start:stop] = prediction.view(videos, frames, *latents.shape[2:])
        if bar is not None:
            bar.update()
    return scheduler.step(noise_pred.flatten(0, 1), t, latents.flatten(0, 1)).prev_sample.view(latents.shape)


def _denoise(pipe, scheduler, latents, conditioning, request: SampleRequest, backend: str, steering, steps,
             callback_on_step_end):
    """The denoising loop over ``steps``, with momentum attention installed on the UNet and the steering's models
    for it (and always restored); compiled when the request says so."""
    num_frames = latents.shape[1]
    options = request.compile_options
    chunk = num_frames if request.frame_chunk is None else min(request.frame_chunk, num_frames)
    calls = len(steps) * -(-num_frames // chunk)
    models = _Models(unet=pipe.unet if options is None else compiled(pipe.unet, options), dtype=pipe.unet.dtype,
                     steering=steering, handles=[], traced=options is not None,
                     cuda_graphs=uses_cuda_graphs(options, pipe.unet.device))
    if steering is not None and options is not None:
        steering.compile(options)
    try:
        if request.momentum_attention:
            for model in [pipe.unet, *(steering.models if steering is not None else [])]:
                models.handles.append(install_momentum_attention(model, request.momentum, chunk, backend=backend))
        with pipe.progress_bar(total=calls) if request.progress else contextlib.nullcontext() as bar:
            for step, t in enumerate(steps):
                latents = _denoise_step(scheduler, latents, t, conditioning, models, chunk, request.guidance_scale,
                                        bar, step)
                if callback_on_step_end is not None:
                    returned = callback_on_step_end(pipe, step, t, {"latents": latents}) or {}
                    latents = _returned_latents(returned, latents)
    finally:
        for handle in reversed(models.handles):
            handle.restore()
    # Checked once, not per step: a per-step check would synchronise the GPU every step. NaN stays NaN.
    if not torch.isfinite(latents).all():
        advice = ("try dtype=torch.float32" if pipe.unet.dtype != torch.float32
                  else "check a callback's latents for NaN/inf; otherwise the sampling diverged: fewer steps or "
                       "another scheduler (multistep solvers such as UniPC and DPM++ diverge near the training "
                       "steps' count) or a smaller guidance_scale may help")
        raise FloatingPointError(f"latents became NaN/inf during denoising (dtype {pipe.unet.dtype}); {advice}")
    return latents


def _returned_latents(returned, latents):
    """The latents a step-end callback returned (or the current ones), refused unless shaped like them."""
    if not isinstance(returned, dict):
        raise TypeError(f"callback_on_step_end must return a dict (or None), got {type(returned).__name__}")
    new = returned.get("latents", latents)
    if not isinstance(new, torch.Tensor) or new.shape != latents.shape:
        raise ValueError(f"callback_on_step_end returned latents of shape "
                         f"{tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__}; they must "
                         f"keep the shape {tuple(latents.shape)} [videos, frames, c, h, w]")
    return new.to(latents.dtype)


def _postprocess(pipe, latents, output_type, decode_chunk_size):
    """Decoded frames per video in ``output_type`` (diffusers' ``VaeImageProcessor``), or the latents."""
    if output_type == "latent":
        return latents
    videos, num_frames = latents.shape[:2]
    images = pipe.image_processor.postprocess(decode(pipe, latents.flatten(0, 1), decode_chunk_size),
                                              output_type=output_type)
    if output_type == "pil":
        return [images[v * num_frames:(v + 1) * num_frames] for v in range(videos)]
    return images.reshape(videos, num_frames, *images.shape[1:])


@torch.no_grad()
def sample_video(model=None, prompt=None, *, negative_prompt=None, num_frames: int | None = None,
                 height: int | None = None, width: int | None = None, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, noise_lambda: float = 0.01, momentum: float = 0.98,
                 search: str = "exact", noise_anchor: float = 0.0, dependency_noise: bool = True,
                 momentum_attention: bool = True, frame_chunk: int | None = None, seed: int | list[int] | None = None,
                 generator=None,
                 device=None, dtype: torch.dtype | None = None, output_type: str = "np", decode_chunk_size: int = 8,
                 num_videos_per_prompt: int = 1, progress: bool = True, callback_on_step_end=None,
                 backend: str | None = None, scheduler="ddim", prompt_embeds: torch.Tensor | None = None,
                 negative_prompt_embeds: torch.Tensor | None = None, pooled_prompt_embeds: torch.Tensor | None = None,
                 negative_pooled_prompt_embeds: torch.Tensor | None = None, control_video=None, controlnet=None,
                 controlnet_conditioning_scale=1.0, control_guidance_start=0.0, control_guidance_end=1.0,
                 guess_mode: bool = False, image=None, video=None, strength: float | None = None,
                 compile=False, latents: torch.Tensor | None = None) -> VideoOutput:
    """Sample videos with ZS² from a text-to-image diffusion model.

    Args:
        model: a diffusers pipeline object, a local pipeline folder, a hub id, or None (the embedded model).
        prompt: a string or list of strings (one video per prompt and per ``num_videos_per_prompt``); default
            "a handwritten digit 3" (for the embedded model) unless ``prompt_embeds`` are given. Prompt travel: a
            ``{frame: text}`` dict for one video (key 0 required, keys below ``num_frames``; frames between
            keyframes blend their embeddings linearly, the last keyframe holds), or a list mixing dicts and strings.
        negative_prompt: a string (for every prompt) or one per prompt (ignored when guidance is off); a
            ``{frame: text}`` dict (or one per prompt) travels like a prompt, on its own keyframes.
        num_frames: frames per video (>= 1; default 8, or the control video's length). height/width: pixels,
            multiples of the VAE downscale factor (default: the control video's size, else the model's native).
        control_video: guided video: frames steering every video frame through ``controlnet`` — a tensor
            [F, C, H, W] or [V, F, C, H, W] in [0, 1], an array [(V,) F, H, W, C] (uint8 or [0, 1]) or PIL
            images; one shared by every video or one per video; a list of them with a list of ControlNets.
        controlnet: a ControlNetModel (compiled or not; on the UNet's device and dtype), a folder or hub id, or a
            list of distinct ones (multi-ControlNet); None: a ControlNet pipeline's own, or the embedded model's digit
            ControlNet (condition: ``zs2_kernels.embedded.digit_condition``). controlnet_conditioning_scale,
            control_guidance_start, control_guidance_end, guess_mode: as in diffusers' ControlNet pipelines.
        num_inference_steps: scheduler steps (>= 1). guidance_scale: >= 0; <= 1 disables guidance (half the batch).
        scheduler: "ddim" (default), "dpm++" (DPM++ 2M), "unipc", "euler", "euler-a", or a diffusers scheduler
            instance (copied, never stepped itself); per-step noise (euler-a, DDPM) is drawn as dependency chains.
        prompt_embeds, negative_prompt_embeds: [P, L, D] embeddings instead of prompts (one video per row and
            per ``num_videos_per_prompt``); pooled_prompt_embeds, negative_pooled_prompt_embeds: [P, D'] (SDXL).
            Per frame (prompt travel from embeddings): [P, F, L, D] and [P, F, D'], F = num_frames.
        noise_lambda, search: the dependency noise model's KL target and search mode ("exact" or "paper").
        noise_anchor: a in [0, 1): every frame's initial noise keeps a correlation of at least a with frame 0's
            (long videos stay closer to frame 0; 0, the default, is the unanchored chain bit for bit; "exact" only).
            With ``image`` frame 0 is the image's inverted noise: the anchor ties every frame to it.
        momentum: mu of temporal momentum attention in [0, 1]. backend: of the zs2 ops (default by device).
        dependency_noise / momentum_attention: switch either component off (both off: per-frame sampling).
        frame_chunk: run the UNet on at most this many frames at a time (bounds memory for long videos); the
            float32 momentum state is carried across chunks, so the result is the unchunked one up to the UNet's
            own batch-size rounding (bit for bit on CPU in fp16/bf16; ~1e-5 on the embedded model in fp32).
        seed / generator: with ``seed`` (an int in [0, 2**63)) video v's noise depends only on (seed, v), alone
            or in any batch (per backend); a list of such ints gives one seed per video: video v is then the
            video ``seed=seed[v]`` makes alone (``seed=[s]`` equals ``seed=s``), whatever it is batched with. A
            list of CPU generators, one per video, gives the same video on CPU and GPU; a single generator draws
            for the whole batch (diffusers' rule).
        device, dtype: where and in which precision to run (default: the pipeline's execution device/dtype);
            dtype as a torch dtype or a name ("float16", "bf16", ...). A pipeline passed in is moved/cast for
            the call only and given back with its own tensors, unchanged (its weights stay in memory meanwhile).
        output_type: "np", "pt", "pil" or "latent". decode_chunk_size: frames per VAE decode call. progress: bars.
        callback_on_step_end: ``fn(pipe, step, timestep, {"latents": latents}) -> dict``; a returned "latents"
            entry (same shape) replaces the latents (diffusers convention).
        image: image-to-video from this frame 0, kept: a tensor [(V,) C, H, W] in [0, 1], array [(V,) H, W, C], PIL.
            video, strength: video-to-video (SDEdit): frames as control_video takes them, noised to ``strength`` in
            (0, 1] (default 0.8; int(num_inference_steps · strength) steps run), then denoised with ZS².
        compile: torch.compile the UNet and ControlNets, once per model: True, a mode or a dict of its arguments.
        latents: the initial noise of every frame instead of drawing it, as diffusers pipelines take it: unit
            variance (scaled by the scheduler's ``init_noise_sigma`` here), [videos · frames, c, h, w] or [videos,
            frames, c, h, w]; computed in float32 (fp16/bf16 values are upcast as they are, so they carry their
            rounding). The dependency noise is then the caller's: ``latents=zs2_kernels.initial_latents(pipe, F,
            num_videos=V, seed=s, dtype=torch.float32), seed=s`` gives the ``seed=s`` video; noise_lambda, search
            and noise_anchor only shape a stochastic scheduler's step noise, which still comes from ``seed`` or
            ``generator``. With ``image`` frame 0 is the image's inverted noise and frames 1.. are the given
            frames as they are (the chain is not re-run from it; latents' frame 0 is unused); with ``video`` the
            latents are the noise added at the start timestep. ``stats`` then reports the given noise's
            "correlation" and "correlation_first" (no "alpha"/"achieved_kl": no search ran).

    Every argument is checked before any work (a :class:`~.request.SampleRequest` is built from them).
    """
    started = time.perf_counter()  # the "load" timing: from here to a ready pipeline
    arguments = {name: value for name, value in locals().items() if name not in ("model", "started")}
    return sample(model, SampleRequest.for_model(model, **arguments), started=started)


@torch.no_grad()
def sample(model, request: SampleRequest, *, started: float | None = None) -> VideoOutput:
    """Run a checked request on ``model`` (a pipeline object, a folder, a hub id, or None: the embedded model).

    ``sample_video(model, **arguments)`` is ``sample(model, SampleRequest.for_model(model, **arguments))``; the
    command line and other front ends build the request themselves. ``started``: when the call began (its "load"
    timing starts there; default now).
    """
    started = time.perf_counter() if started is None else started
    if not isinstance(request, SampleRequest):
        raise TypeError(f"request must be a SampleRequest (zs2_kernels.sampling.SampleRequest), got "
                        f"{type(request).__name__}")
    request = request.on_model(model)
    with _pipeline(model, request) as pipe:
        frames, stats = _sample(pipe, request, started)
    return VideoOutput(frames=frames, stats=stats)


def _size(pipe, request: SampleRequest) -> tuple[int, int]:
    """The video's (height, width): the request's, else its conditional inputs', else the model's native size."""
    height, width = request.height, request.width
    for mode in (request.steering, request.start):
        if mode is not None and height is None and width is None:
            height, width = mode.size() if mode is request.steering else mode.size(pipe.vae_scale_factor)
    return pipeline_resolution(pipe, height, width)


def _sample(pipe, request: SampleRequest, started: float):
    """The steps of :func:`sample` on a ready pipeline: (frames, stats)."""
    timings = {}
    num_frames, videos = request.frames, request.videos
    height, width = _size(pipe, request)
    if isinstance(request.scheduler, str):  # an instance's own limit was checked with the other arguments
        check_steps(request.num_inference_steps, pipe.scheduler.config)
    device = pipe._execution_device
    check_fits(estimate_memory(pipe.unet.config, pipe.vae.config, videos=videos, frames=num_frames, height=height,
                               width=width, chunk=request.frame_chunk, guidance=request.guided, dtype=pipe.unet.dtype,
                               decode_chunk_size=request.decode_chunk_size,
                               decodes=request.output_type != "latent"), device, "num_frames", "frame_chunk",
               "the prompts times num_videos_per_prompt")
    backend = resolve_backend(torch.device(device), request.backend)
    timings["load"] = time.perf_counter() - started

    stage = time.perf_counter()
    conditioning = encode_conditioning(pipe, request.prompts, request.negative_prompts, request.num_videos_per_prompt,
                                       request.guided, height, width, request.embeddings, num_frames)
    steering = None if request.steering is None else request.steering.prepare(
        pipe, num_frames=num_frames, videos=videos, height=height, width=width)
    timings["encode_prompt"] = time.perf_counter() - stage

    stage = time.perf_counter()
    scheduler = make_scheduler(request.scheduler, pipe.scheduler.config)
    scheduler.set_timesteps(request.num_inference_steps, device=device)
    start = None if request.start is None else request.start.prepare(
        pipe, scheduler, conditioning, videos=videos, height=height, width=width, chunk_size=request.decode_chunk_size)
    timings["encode_edit"] = time.perf_counter() - stage

    stage = time.perf_counter()
    shape, first = latent_shape(pipe, videos, num_frames, height, width), getattr(start, "first", None)
    if request.latents is not None:
        latents, noise_stats = _given_latents(request.latents, shape, device, first)
    else:
        latents, noise_stats = _initial_latents(shape, use_dependency_noise=request.dependency_noise,
                                                noise_lambda=request.noise_lambda, search=request.search,
                                                generator=request.generator, seed=request.seed, device=device,
                                                backend=backend, first=first, noise_anchor=request.noise_anchor)
    if request.dependency_noise:
        check_chainable(scheduler)
    if draws_step_noise(scheduler):  # seeded step noise: chains, or per-frame sampling's independent frames
        chain_step_noise(scheduler, NoiseSettings(num_frames, request.noise_lambda, request.search,
                                                  request.step_seed(), backend, request.noise_anchor,
                                                  chained=request.dependency_noise))
    steps, callback = scheduler.timesteps, request.callback_on_step_end
    if start is None:
        latents = latents * scheduler.init_noise_sigma
    else:
        latents, steps, callback = start.begin(scheduler, latents, callback)
    timings["initial_noise"] = time.perf_counter() - stage

    stage = time.perf_counter()
    latents = _denoise(pipe, scheduler, latents, conditioning, request, backend, steering, steps, callback)
    timings["denoise"] = time.perf_counter() - stage

    stage = time.perf_counter()
    frames = _postprocess(pipe, latents, request.output_type, request.decode_chunk_size)
    timings["decode"] = time.perf_counter() - stage
    timings["total"] = time.perf_counter() - started
    stats = {"backend": backend, "timings": timings, "num_frames": num_frames, "height": height, "width": width,
             "num_inference_steps": request.num_inference_steps, "guidance_scale": request.guidance_scale,
             "scheduler": type(scheduler).__name__,
             "momentum": request.momentum if request.momentum_attention else None,
             "dependency_noise": request.dependency_noise, "momentum_attention": request.momentum_attention,
             "frame_chunk": request.frame_chunk, "compile": request.compile_options, "device": str(device),
             "dtype": str(pipe.unet.dtype).replace("torch.", ""),
             "initial_noise": "given" if request.latents is not None else "dependency" if request.dependency_noise
             else "independent"}
    if request.start is not None:
        stats.update({**request.start.describe(), "steps_run": len(steps)})
    if request.dependency_noise:
        stats.update({"noise_lambda": request.noise_lambda, "search": request.search,
                      "noise_anchor": request.noise_anchor})
    if noise_stats is not None:
        stats.update({k: noise_stats[k].cpu().tolist() for k in NOISE_STATS if k in noise_stats})
    return frames, stats
