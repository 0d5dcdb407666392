"""``sample_video``: ZS² text-to-video sampling with any diffusers text-to-image latent diffusion pipeline.

DDIM (eta = 0) with classifier-free guidance over a batch laid out (guidance half, video, frame);
initial latents from the dependency noise model; temporal momentum attention installed on the UNet
for the call and always restored. ``frame_chunk`` bounds memory for long videos while giving the same
result (the momentum state is carried from chunk to chunk).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field

import torch

from ._checks import check_device, check_dtype, check_int, check_number, check_search, check_seed
from .attention import install_momentum_attention
from .loading import load_pipeline, quiet_library_logs
from .memory import check_fits, estimate_memory
from .ops.backend import resolve_backend
from .ops.noise.chain import dependency_noise as make_dependency_noise
from .ops.noise.chain import video_generators

OUTPUT_TYPES = ("np", "pt", "pil", "latent")


@dataclass
class VideoOutput:
    """Result of :func:`sample_video`.

    frames: "np": float32 array [B, F, H, W, C] in [0, 1]; "pt": tensor [B, F, C, H, W]; "pil": list of
    lists of PIL images; "latent": the final latents [B, F, c, h, w]. B = prompts x videos per prompt.
    stats: noise-search statistics per frame pair ("alpha", "achieved_kl", "correlation", lists [B][F-1]),
    the backend used, the settings, and wall time per stage in seconds ("timings").
    """

    frames: object
    stats: dict = field(default_factory=dict)


def _check_prompts(prompt):
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise TypeError(f"prompt must be a non-empty string or a non-empty list of strings, got {prompt!r}")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt must contain non-empty strings, got {p!r}")
    return list(prompts)


def _check_negative_prompts(negative_prompt, count: int):
    """None, or one negative prompt per prompt: a string applies to every prompt, a list must have ``count``."""
    if negative_prompt is None:
        return None
    if isinstance(negative_prompt, str):
        return [negative_prompt] * count
    if not isinstance(negative_prompt, (list, tuple)) or not all(isinstance(n, str) for n in negative_prompt):
        raise TypeError(f"negative_prompt must be None, a string or a list of strings, got {negative_prompt!r}")
    if len(negative_prompt) != count:
        raise ValueError(f"negative_prompt must be a string (used for every prompt) or a list of {count} "
                         f"(one per prompt), got a list of {len(negative_prompt)}")
    return list(negative_prompt)


#: Far past any useful scale (Stable Diffusion uses 5-15); larger ones only overflow the noise prediction.
MAX_GUIDANCE = 1000.0


def check_inputs(prompt, negative_prompt, num_frames, num_inference_steps, guidance_scale, noise_lambda, momentum,
                 search, frame_chunk, output_type, decode_chunk_size, num_videos_per_prompt, seed, generator):
    """Validate everything that needs no model; raise naming the argument and the accepted range.

    Returns the prompts and the negative prompts (None or one per prompt) as lists.
    """
    prompts = _check_prompts(prompt)
    negatives = _check_negative_prompts(negative_prompt, len(prompts))
    check_int("num_frames", num_frames, 1)
    check_int("num_inference_steps", num_inference_steps, 1)
    check_number("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE)
    check_search(noise_lambda, search)
    check_number("momentum", momentum, 0.0, 1.0)
    if frame_chunk is not None:
        check_int("frame_chunk", frame_chunk, 1)
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    check_int("decode_chunk_size", decode_chunk_size, 1)
    check_int("num_videos_per_prompt", num_videos_per_prompt, 1)
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None:
        check_seed(seed)
    generators = generator if isinstance(generator, (list, tuple)) else [generator]
    if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
        raise TypeError(f"generator must be a torch.Generator or a list of them, got {generator!r}")
    videos = len(prompts) * num_videos_per_prompt
    if isinstance(generator, (list, tuple)) and len(generator) != videos:
        raise ValueError(f"generator list must have one generator per video ({videos} = prompts x "
                         f"num_videos_per_prompt), got {len(generator)}")
    return prompts, negatives


def check_resolution(factor: int, native: int, height, width) -> tuple[int, int]:
    """(height, width), ``native`` pixels where None, after checking both are multiples of the VAE's ``factor``."""
    height = native if height is None else height
    width = native if width is None else width
    for name, value in (("height", height), ("width", width)):
        check_int(name, value, factor)
        if value % factor:
            raise ValueError(f"{name} must be a multiple of the model's downscale factor {factor}, got {value}")
    return height, width


def _check_resolution(pipe, height, width):
    factor = pipe.vae_scale_factor
    return check_resolution(factor, pipe.unet.config.sample_size * factor, height, width)


def _is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None or "text_time" == pipe.unet.config.get(
        "addition_embed_type")


def _encode_prompts(pipe, prompts, negative_prompt, device, guidance):
    """Text conditioning per video: (embeds [V, L, D], negative embeds or None, added-cond kwargs or None)."""
    if _is_sdxl(pipe):
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance,
            negative_prompt=negative_prompt)
        return embeds, negative, (pooled, negative_pooled)
    embeds, negative = pipe.encode_prompt(prompts, device, 1, guidance, negative_prompt)
    return embeds, negative, None


def _sdxl_added_conditions(pipe, pooled, height, width, dtype, device):
    """SDXL's extra conditioning: pooled text embeds and (original size, crop, target size) time ids."""
    projection_dim = pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None else int(
        pooled.shape[-1])
    time_ids = pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=dtype,
                                      text_encoder_projection_dim=projection_dim).to(device)
    return {"text_embeds": pooled, "time_ids": time_ids.repeat(pooled.shape[0], 1)}


def _initial_latents(shape, *, use_dependency_noise, noise_lambda, search, generator, seed, device, backend):
    """[V, F, c, h, w] float32 initial latents and the noise statistics (None without dependency noise).

    With ``seed`` (or a list of generators), video v's noise depends only on (seed, v), never on the batch
    it is sampled in (see :func:`zs2_kernels.noise.video_seeds`); one generator draws for the whole batch.
    """
    if use_dependency_noise:
        return make_dependency_noise(shape, noise_lambda, search=search, generator=generator, seed=seed,
                                     device=device, return_stats=True, backend=backend)
    generators = video_generators(seed, shape[0]) if generator is None else generator
    if isinstance(generators, torch.Generator):
        noise = torch.randn(shape, generator=generators, device=generators.device, dtype=torch.float32)
    else:
        noise = torch.stack([torch.randn(shape[1:], generator=g, device=g.device, dtype=torch.float32)
                             for g in generators])
    return noise.to(device), None


def _decode(pipe, latents, chunk_size):
    """VAE-decode [N, c, h, w] latents in chunks to images in [-1, 1]; a chunk that overflows fp16 is redone in
    fp32, and NaN/inf raises instead of returning black frames."""
    vae = pipe.vae
    scaling = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    images = []
    for start in range(0, latents.shape[0], chunk_size):
        chunk = latents[start:start + chunk_size] / scaling + shift
        image = vae.decode(chunk.to(vae.dtype)).sample
        if not torch.isfinite(image).all() and vae.dtype != torch.float32:
            original = vae.dtype
            vae.to(torch.float32)
            try:
                image = vae.decode(chunk.float()).sample
            finally:
                vae.to(original)
        if not torch.isfinite(image).all():
            raise FloatingPointError("VAE decoding produced NaN/inf; try dtype=torch.float32")
        images.append(image.float())
    return torch.cat(images)


def _saved_tensors(pipe) -> list:
    """(store, name, tensor object, its data) of every parameter and buffer of the pipeline's modules."""
    saved = []
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for module in component.modules():
                for store in (module._parameters, module._buffers):
                    saved += [(store, name, t, t.data) for name, t in store.items() if t is not None]
    return saved


@contextlib.contextmanager
def _pipeline(model, device, dtype, progress):
    """The pipeline to sample with: ``model`` itself when it is one, else loaded.

    A given pipeline is moved/cast for the call only: its own tensors are put back afterwards, bit for bit
    (a cast down and up again would round them), also when sampling fails.
    """
    if not (hasattr(model, "unet") and hasattr(model, "vae")):
        yield load_pipeline(model, device=device, dtype=dtype, progress=progress)
        return
    move = device is not None and device != model.device
    cast = dtype is not None and dtype != model.unet.dtype
    saved = _saved_tensors(model) if move or cast else []
    try:
        if move:
            model.to(device)
        if cast:
            model.to(dtype=dtype)
        yield model
    finally:
        for store, name, tensor, data in saved:
            tensor.data = data
            store[name] = tensor


@dataclass
class _Conditioning:
    """Text conditioning of the UNet batch (guidance half, video), repeated per frame for a chunk length."""

    embeds: torch.Tensor
    added: dict | None
    per_frames: dict = field(default_factory=dict)

    def for_frames(self, frames: int):
        """(encoder hidden states, SDXL added conditions) with each video's row repeated ``frames`` times."""
        if frames not in self.per_frames:
            extra = None if self.added is None else {k: v.repeat_interleave(frames, 0) for k, v in self.added.items()}
            self.per_frames[frames] = (self.embeds.repeat_interleave(frames, dim=0), extra)
        return self.per_frames[frames]


def _warn_truncated(tokenizer, texts) -> None:
    """One short warning naming the (negative) prompts cut at the text encoder's length, instead of the
    libraries' notes that repeat the whole cut-off text (filtered by :func:`quiet_library_logs`)."""
    limit = tokenizer.model_max_length
    cut = [text[:40] for text in dict.fromkeys(texts) if len(tokenizer(text, truncation=False).input_ids) > limit]
    if cut:
        warnings.warn(f"{len(cut)} prompt(s) are longer than the text encoder's {limit} tokens and are cut there "
                      f"(starting {', '.join(repr(c) for c in cut)})", stacklevel=4)


def _encode_conditioning(pipe, prompts, negative_prompt, videos_per_prompt, guidance, height, width) -> _Conditioning:
    """Prompt embeddings per video, the negative ones first when guidance is on (and SDXL's added conditions)."""
    device = pipe._execution_device
    with quiet_library_logs():
        _warn_truncated(pipe.tokenizer, prompts + (negative_prompt or []) if guidance else prompts)
        embeds, negative, pooled = _encode_prompts(pipe, prompts, negative_prompt, device, guidance)
    embeds = embeds.repeat_interleave(videos_per_prompt, dim=0)
    added = None
    if pooled is not None:
        added = _sdxl_added_conditions(pipe, pooled[0].repeat_interleave(videos_per_prompt, 0), height, width,
                                       embeds.dtype, device)
    if guidance:
        embeds = torch.cat([negative.repeat_interleave(videos_per_prompt, dim=0), embeds])
        if added is not None:
            negative_added = _sdxl_added_conditions(pipe, pooled[1].repeat_interleave(videos_per_prompt, 0),
                                                    height, width, embeds.dtype, device)
            added = {k: torch.cat([negative_added[k], added[k]]) for k in added}
    return _Conditioning(embeds, added)


def _denoise_step(pipe, scheduler, latents, t, conditioning, handle, chunk, guidance_scale, bar):
    """One DDIM step over all frames, the UNet run on ``chunk`` frames at a time (momentum state carried);
    ``bar`` (or None) advances once per UNet call, so long videos show progress within a step."""
    videos, num_frames = latents.shape[:2]
    halves = 2 if guidance_scale > 1.0 else 1
    if handle is not None:
        handle.check_installed()
        handle.reset_state()
    noise_pred = torch.empty_like(latents)
    for start in range(0, num_frames, chunk):
        stop = min(start + chunk, num_frames)
        frames = stop - start
        if handle is not None:
            handle.set_num_frames(frames, carry_state=chunk < num_frames)
        block = latents[:, start:stop].reshape(videos * frames, *latents.shape[2:])
        model_input = scheduler.scale_model_input(torch.cat([block] * halves), t).to(pipe.unet.dtype)
        hidden, extra = conditioning.for_frames(frames)
        prediction = pipe.unet(model_input, t, encoder_hidden_states=hidden, added_cond_kwargs=extra).sample.float()
        if halves == 2:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        noise_pred[:, start:stop] = prediction.view(videos, frames, *latents.shape[2:])
        if bar is not None:
            bar.update()
    return scheduler.step(noise_pred.flatten(0, 1), t, latents.flatten(0, 1)).prev_sample.view(latents.shape)


def _denoise(pipe, scheduler, latents, conditioning, *, momentum, momentum_attention, frame_chunk, guidance_scale,
             backend, progress, callback_on_step_end):
    """The denoising loop, with momentum attention installed for it (and always restored)."""
    num_frames = latents.shape[1]
    chunk = num_frames if frame_chunk is None else min(frame_chunk, num_frames)
    handle = install_momentum_attention(pipe.unet, momentum, chunk, backend=backend) if momentum_attention else None
    steps = scheduler.timesteps
    calls = len(steps) * -(-num_frames // chunk)
    try:
        with pipe.progress_bar(total=calls) if progress else contextlib.nullcontext() as bar:
            for step, t in enumerate(steps):
                latents = _denoise_step(pipe, scheduler, latents, t, conditioning, handle, chunk, guidance_scale, bar)
                if callback_on_step_end is not None:
                    returned = callback_on_step_end(pipe, step, t, {"latents": latents}) or {}
                    latents = returned.get("latents", latents)
    finally:
        if handle is not None:
            handle.restore()
    # Checked once, not per step: a per-step check would synchronise the GPU every step. NaN stays NaN.
    if not torch.isfinite(latents).all():
        advice = ("try dtype=torch.float32" if pipe.unet.dtype != torch.float32
                  else "the model diverged (a smaller guidance_scale may help)")
        raise FloatingPointError(f"latents became NaN/inf during denoising (dtype {pipe.unet.dtype}); {advice}")
    return latents


def _postprocess(pipe, latents, output_type, decode_chunk_size):
    """Decoded frames per video in ``output_type`` (diffusers' ``VaeImageProcessor``), or the latents."""
    if output_type == "latent":
        return latents
    videos, num_frames = latents.shape[:2]
    images = pipe.image_processor.postprocess(_decode(pipe, latents.flatten(0, 1), decode_chunk_size),
                                              output_type=output_type)
    if output_type == "pil":
        return [images[v * num_frames:(v + 1) * num_frames] for v in range(videos)]
    return images.reshape(videos, num_frames, *images.shape[1:])


@torch.no_grad()
def sample_video(model=None, prompt="a handwritten digit 3", *, negative_prompt=None, num_frames: int = 8,
                 height: int | None = None, width: int | None = None, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, noise_lambda: float = 0.01, momentum: float = 0.98,
                 search: str = "exact", dependency_noise: bool = True, momentum_attention: bool = True,
                 frame_chunk: int | None = None, seed: int | None = None, generator=None,
                 device=None, dtype: torch.dtype | None = None, output_type: str = "np", decode_chunk_size: int = 8,
                 num_videos_per_prompt: int = 1, progress: bool = True, callback_on_step_end=None,
                 backend: str | None = None) -> VideoOutput:
    """Sample videos with ZS² from a text-to-image diffusion model.

    Args:
        model: a diffusers pipeline object, a local pipeline folder, a hub id, or None for the embedded
            default model.
        prompt: a string or list of strings (one video per prompt and per ``num_videos_per_prompt``).
        negative_prompt: a string (used for every prompt) or a list with one per prompt, for classifier-free
            guidance (ignored when guidance is off).
        num_frames: frames per video (>= 1). height/width: pixels, multiples of the VAE downscale factor
            (default: the model's native size).
        num_inference_steps: DDIM steps (>= 1). guidance_scale: >= 0; <= 1 disables guidance (half the batch).
        noise_lambda, search: the dependency noise model's KL target and search mode ("exact" or "paper").
        momentum: mu of temporal momentum attention in [0, 1].
        dependency_noise / momentum_attention: switch either component off (ablations; both off is
            independent per-frame sampling).
        frame_chunk: run the UNet on at most this many frames at a time (bounds memory for long videos). The
            float32 momentum state is carried from chunk to chunk, so the result is the unchunked one bit for
            bit wherever the UNet's own layers compute each sample independently of the batch size. On CPU
            that holds in fp16/bf16 (and in fp32 for small layers); fp32 convolutions and matrix products on
            CPU (oneDNN/MKL), and cuBLAS/cuDNN on a GPU, may pick other algorithms for other batch sizes: there
            chunked and unchunked agree to within that rounding (about 1e-5 on the embedded model, CPU fp32).
        seed / generator: reproducibility. With ``seed`` (an int in [0, 2**63)), video v of the batch depends
            only on (seed, v), so sampling it alone or in any batch gives the same video (on one backend:
            Triton's in-kernel Philox and the CPU generators draw different numbers). A list of CPU
            generators, one per video, gives the same video on CPU and GPU; a single generator draws for the
            whole batch (diffusers' rule).
        device, dtype: where and in which precision to run (default: the pipeline's execution device/dtype);
            dtype as a torch dtype or a name ("float16", "bf16", ...). A pipeline passed in is moved/cast for
            the call only and given back with its own tensors, unchanged (its weights stay in memory meanwhile).
        output_type: "np", "pt", "pil" or "latent". decode_chunk_size: frames per VAE decode call.
        progress: show a progress bar over the UNet calls (and loading bars when ``model`` is not a pipeline).
        callback_on_step_end: ``fn(pipe, step, timestep, {"latents": latents}) -> dict``; a returned
            "latents" entry replaces the latents (diffusers convention).
        backend: backend of the zs2 ops ("triton", "cuda", "torch"; default by device).
    """
    prompts, negative_prompt = check_inputs(prompt, negative_prompt, num_frames, num_inference_steps, guidance_scale,
                                            noise_lambda, momentum, search, frame_chunk, output_type,
                                            decode_chunk_size, num_videos_per_prompt, seed, generator)
    dtype = check_dtype(dtype)
    device = None if device is None else check_device(device)
    from diffusers import DDIMScheduler

    timings, started = {}, time.perf_counter()
    with _pipeline(model, device, dtype, progress) as pipe:
        height, width = _check_resolution(pipe, height, width)
        device = pipe._execution_device
        check_fits(estimate_memory(pipe.unet.config, pipe.vae.config, videos=len(prompts) * num_videos_per_prompt,
                                   frames=num_frames, height=height, width=width, chunk=frame_chunk,
                                   guidance=guidance_scale > 1.0, dtype=pipe.unet.dtype,
                                   decode_chunk_size=decode_chunk_size), device, "num_frames", "frame_chunk")
        backend = resolve_backend(torch.device(device), backend)
        timings["load"] = time.perf_counter() - started

        stage = time.perf_counter()
        conditioning = _encode_conditioning(pipe, prompts, negative_prompt, num_videos_per_prompt,
                                            guidance_scale > 1.0, height, width)
        timings["encode_prompt"] = time.perf_counter() - stage

        stage = time.perf_counter()
        latent_shape = (len(prompts) * num_videos_per_prompt, num_frames, pipe.unet.config.in_channels,
                        height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        latents, noise_stats = _initial_latents(latent_shape, use_dependency_noise=dependency_noise,
                                                noise_lambda=noise_lambda, search=search, generator=generator,
                                                seed=seed, device=device, backend=backend)
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(num_inference_steps, device=device)
        latents = latents * scheduler.init_noise_sigma
        timings["initial_noise"] = time.perf_counter() - stage

        stage = time.perf_counter()
        latents = _denoise(pipe, scheduler, latents, conditioning, momentum=momentum,
                           momentum_attention=momentum_attention, frame_chunk=frame_chunk,
                           guidance_scale=guidance_scale, backend=backend, progress=progress,
                           callback_on_step_end=callback_on_step_end)
        timings["denoise"] = time.perf_counter() - stage

        stage = time.perf_counter()
        frames = _postprocess(pipe, latents, output_type, decode_chunk_size)
        timings["decode"] = time.perf_counter() - stage
        timings["total"] = time.perf_counter() - started

        stats = {"backend": backend, "timings": timings, "num_frames": num_frames, "height": height, "width": width,
                 "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                 "momentum": momentum if momentum_attention else None, "dependency_noise": dependency_noise,
                 "momentum_attention": momentum_attention, "frame_chunk": frame_chunk, "device": str(device),
                 "dtype": str(pipe.unet.dtype).replace("torch.", "")}
    if noise_stats is not None:
        stats.update({"noise_lambda": noise_lambda, "search": search,
                      **{k: noise_stats[k].cpu().tolist() for k in ("alpha", "achieved_kl", "correlation")}})
    return VideoOutput(frames=frames, stats=stats)
