"""Text conditioning of a ZS² batch: prompts (or given prompt embeddings) checked and encoded once per video (per
keyframe with prompt travel, :mod:`.prompt_travel`), then given to each frame of the UNet batch laid out (guidance
half, video, frame)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from .._checks import caller_stacklevel
from ..loading import quiet_library_logs
from .prompt_travel import PromptTravel, check_travel, per_frame


def check_prompts(prompt):
    """The prompts as a list, one per video: non-empty strings, or :class:`PromptTravel` for a ``{frame: text}``
    dict (a string or a dict alone is one prompt); raises naming ``prompt``."""
    prompts = [prompt] if isinstance(prompt, (str, dict)) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise TypeError("prompt must be a non-empty string, a {frame: text} dict (prompt travel) or a non-empty "
                        f"list of them, got {prompt!r}")
    checked = []
    for p in prompts:
        if isinstance(p, dict):
            checked.append(check_travel(p))
            continue
        if not isinstance(p, str):
            raise TypeError(f"prompt must contain strings or {{frame: text}} dicts, got {p!r}")
        if not p.strip():
            raise ValueError(f"prompt must contain non-empty strings, got {p!r}")
        checked.append(p)
    return checked


def check_negative_prompts(negative_prompt, count: int):
    """None, or one negative prompt per prompt: a string or a ``{frame: text}`` dict (prompt travel) applies to
    every prompt, a list of them must have ``count``."""
    if negative_prompt is None:
        return None
    if isinstance(negative_prompt, (str, dict)):
        negative_prompt = [negative_prompt] * count
    if not isinstance(negative_prompt, (list, tuple)) or not all(isinstance(n, (str, dict)) for n in negative_prompt):
        raise TypeError("negative_prompt must be None, a string, a {frame: text} dict or a list of them, got "
                        f"{negative_prompt!r}")
    if len(negative_prompt) != count:
        raise ValueError(f"negative_prompt must be a string (used for every prompt) or a list of {count} "
                         f"(one per prompt), got a list of {len(negative_prompt)}")
    return [check_travel(n) if isinstance(n, dict) else n for n in negative_prompt]


def _texts(prompts) -> list[str]:
    """Every text of ``prompts`` (each keyframe's of a travelling one), in order."""
    return [t for p in prompts for t in (p.texts if isinstance(p, PromptTravel) else [p])]


@dataclass
class PromptEmbeddings:
    """Prompt embeddings given instead of prompts (diffusers' names); the pooled ones are SDXL's.

    One row per prompt ([P, L, D], pooled [P, D']), or per frame for prompt travel ([P, F, L, D], pooled [P, F, D'],
    F = num_frames): every given tensor in the same form."""

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    pooled_prompt_embeds: torch.Tensor | None = None
    negative_pooled_prompt_embeds: torch.Tensor | None = None

    def __post_init__(self):
        if isinstance(self.prompt_embeds, torch.Tensor) and self.prompt_embeds.dim() not in (3, 4):
            raise TypeError(f"prompt_embeds must be [P, L, D] (one row per prompt) or [P, F, L, D] (one per frame), "
                            f"got shape {tuple(self.prompt_embeds.shape)}")
        per_frame = isinstance(self.prompt_embeds, torch.Tensor) and self.prompt_embeds.dim() == 4
        _check_embeds("prompt_embeds", self.prompt_embeds, 4 if per_frame else 3)
        rows = self.prompt_embeds.shape[:2] if per_frame else self.prompt_embeds.shape[:1]
        _check_embeds("negative_prompt_embeds", self.negative_prompt_embeds, 4 if per_frame else 3,
                      self.prompt_embeds.shape)
        _check_embeds("pooled_prompt_embeds", self.pooled_prompt_embeds, 3 if per_frame else 2)
        if self.pooled_prompt_embeds is not None and self.pooled_prompt_embeds.shape[:len(rows)] != rows:
            unit = "prompt and frame" if per_frame else "prompt"
            raise ValueError(f"pooled_prompt_embeds must have one row per {unit} {tuple(rows)}, got shape "
                             f"{tuple(self.pooled_prompt_embeds.shape)}")
        _check_embeds("negative_pooled_prompt_embeds", self.negative_pooled_prompt_embeds, 3 if per_frame else 2,
                      None if self.pooled_prompt_embeds is None else self.pooled_prompt_embeds.shape)

    @property
    def frames(self) -> int | None:
        """Frames of the per-frame form ([P, F, L, D]), else None."""
        return self.prompt_embeds.shape[1] if self.prompt_embeds.dim() == 4 else None

    def flat(self) -> "PromptEmbeddings":
        """The per-frame form with (prompt, frame) flattened to rows, as diffusers' ``encode_prompt`` takes it."""
        return PromptEmbeddings(*(None if value is None else value.flatten(0, 1) for value in vars(self).values()))

    @property
    def count(self) -> int:
        """Prompts given (rows of prompt_embeds)."""
        return self.prompt_embeds.shape[0]

    def for_encode_prompt(self, sdxl: bool) -> dict:
        """The keyword arguments of the pipeline's ``encode_prompt``; raises when the set does not fit the model."""
        given = {name: value for name, value in vars(self).items() if value is not None}
        if not sdxl:
            pooled = [name for name in given if "pooled" in name]
            if pooled:
                raise ValueError(f"{pooled[0]} is for SDXL pipelines (two text encoders); this one has one")
            return given
        if "pooled_prompt_embeds" not in given:
            raise ValueError("SDXL needs pooled_prompt_embeds beside prompt_embeds (encode_prompt returns both)")
        if ("negative_prompt_embeds" in given) != ("negative_pooled_prompt_embeds" in given):
            raise ValueError("SDXL needs negative_prompt_embeds and negative_pooled_prompt_embeds together")
        return given


def _check_embeds(name: str, value, dims: int, shape=None) -> None:
    """None, or a finite float tensor with ``dims`` dims (and ``shape`` when given); raises naming ``name``."""
    if value is None:
        return
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() != dims:
        raise TypeError(f"{name} must be a float tensor with {dims} dims, got "
                        f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
    if value.is_meta:
        raise ValueError(f"{name} is on the meta device (no data); pass real embeddings")
    if value.numel() == 0 or (shape is not None and value.shape != shape):
        raise ValueError(f"{name} must have shape {tuple(shape) if shape is not None else 'non-empty'}, "
                         f"got {tuple(value.shape)}")
    if not torch.isfinite(value).all():  # else every step runs and the latents end NaN
        raise ValueError(f"{name} must be finite (no NaN/inf)")


def is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None or "text_time" == pipe.unet.config.get(
        "addition_embed_type")


def _encode_prompts(pipe, prompts, negative_prompt, device, guidance, embeddings: PromptEmbeddings | None):
    """Text conditioning per prompt: (embeds [P, L, D], negative embeds or None, SDXL pooled pair or None).

    Given ``embeddings`` are used as they are; diffusers' ``encode_prompt`` encodes what is missing (e.g. the
    negative prompt)."""
    given = {} if embeddings is None else embeddings.for_encode_prompt(is_sdxl(pipe))
    if is_sdxl(pipe):
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance,
            negative_prompt=negative_prompt, **given)
        return embeds, negative, (pooled, negative_pooled)
    embeds, negative = pipe.encode_prompt(prompts, device, 1, guidance, negative_prompt, **given)
    return embeds, negative, None


def _sdxl_added_conditions(pipe, pooled, height, width, dtype, device):
    """SDXL's extra conditioning: pooled text embeds and (original size, crop, target size) time ids."""
    projection_dim = pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None else int(
        pooled.shape[-1])
    time_ids = pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=dtype,
                                      text_encoder_projection_dim=projection_dim).to(device)
    return {"text_embeds": pooled, "time_ids": time_ids.repeat(pooled.shape[0], 1)}


@dataclass
class Conditioning:
    """Text conditioning of the UNet batch (guidance half, video): ``embeds`` [rows, L, D] for every frame alike, or
    [rows, F, L, D] per frame (prompt travel; SDXL's added "text_embeds" then [rows, F, D'] too)."""

    embeds: torch.Tensor
    added: dict | None
    per_frame: bool = False
    cache: dict = field(default_factory=dict)

    def for_range(self, start: int, stop: int):
        """(encoder hidden states, SDXL added conditions) of frames [start, stop) of every video, laid out (row,
        frame); the same tensors for every range of one length when the conditioning is alike for all frames."""
        frames = stop - start
        key = frames if not self.per_frame else (start, stop)
        if key not in self.cache:
            if self.per_frame:
                hidden = self.embeds[:, start:stop].flatten(0, 1)
                extra = None if self.added is None else {
                    "text_embeds": self.added["text_embeds"][:, start:stop].flatten(0, 1),
                    "time_ids": self.added["time_ids"].repeat_interleave(frames, 0)}
            else:
                hidden = self.embeds.repeat_interleave(frames, dim=0)
                extra = None if self.added is None else {k: v.repeat_interleave(frames, 0)
                                                         for k, v in self.added.items()}
            self.cache[key] = (hidden, extra)
        return self.cache[key]

    def for_frames(self, frames: int):
        """:meth:`for_range` of the first ``frames`` frames."""
        return self.for_range(0, frames)


def _warn_truncated(tokenizer, texts) -> None:
    """One short warning naming the (negative) prompts cut at the text encoder's length, instead of the
    libraries' notes that repeat the whole cut-off text (filtered by :func:`quiet_library_logs`)."""
    limit = tokenizer.model_max_length
    cut = [text[:40] for text in dict.fromkeys(texts) if len(tokenizer(text, truncation=False).input_ids) > limit]
    if cut:
        warnings.warn(f"{len(cut)} prompt(s) are longer than the text encoder's {limit} tokens and are cut there "
                      f"(starting {', '.join(repr(c) for c in cut)})", stacklevel=caller_stacklevel())


def encode_conditioning(pipe, prompts, negative_prompt, videos_per_prompt, guidance, height, width,
                        embeddings: PromptEmbeddings | None = None, num_frames: int | None = None) -> Conditioning:
    """Prompt embeddings per video, the negative ones first when guidance is on (and SDXL's added conditions).

    ``prompts`` is None when ``embeddings`` are given instead. With prompt travel (a :class:`PromptTravel` among
    the prompts) every keyframe's text is encoded once and the conditioning is per frame of ``num_frames``."""
    device = pipe._execution_device
    width = pipe.unet.config.cross_attention_dim
    if embeddings is not None and embeddings.prompt_embeds.shape[-1] != width:
        raise ValueError(f"prompt_embeds must have the text encoder's width {width} (the UNet's cross_attention_dim) "
                         f"in the last dim, got {tuple(embeddings.prompt_embeds.shape)}")
    if embeddings is not None and guidance and embeddings.negative_prompt_embeds is None:
        _check_negative_fits(pipe, embeddings.prompt_embeds.shape[-2])
    travels = prompts is not None and any(isinstance(p, PromptTravel) for p in prompts)
    frames_given = None if embeddings is None else embeddings.frames
    if frames_given is not None:
        embeddings = embeddings.flat()
    texts = _texts(prompts) if prompts else None
    negative_travels = guidance and negative_prompt is not None and any(isinstance(n, PromptTravel)
                                                                        for n in negative_prompt)
    with quiet_library_logs():
        if texts and pipe.tokenizer is not None:
            _warn_truncated(pipe.tokenizer, texts + (_texts(negative_prompt or []) if guidance else []))
        if negative_travels:  # each side on its own keyframes: both encoded as prompts
            return _travelling_negatives(pipe, prompts, texts, negative_prompt, device, videos_per_prompt, height,
                                         width, num_frames)
        negatives = negative_prompt
        if travels and negative_prompt is not None:  # each keyframe text with its video's negative prompt
            negatives = [n for p, n in zip(prompts, negative_prompt)
                         for _ in (p.texts if isinstance(p, PromptTravel) else [p])]
        embeds, negative, pooled = _encode_prompts(pipe, texts, negatives, device, guidance, embeddings)
    if travels:
        embeds, negative, pooled = (_per_frame(prompts, e, num_frames) for e in (embeds, negative, pooled))
    elif frames_given is not None:  # rows back to [P, F, ...]
        embeds, negative, pooled = (_unflatten(e, frames_given) for e in (embeds, negative, pooled))
    return _conditioning(pipe, embeds, negative, pooled, videos_per_prompt, guidance, height, width, device,
                         travels or frames_given is not None)


def _travelling_negatives(pipe, prompts, texts, negative_prompt, device, videos_per_prompt, height, width,
                          num_frames) -> "Conditioning":
    """Guided conditioning when a negative prompt travels: the prompts' and the negative prompts' texts are encoded
    as prompts, and each side is blended per frame on its own keyframes."""
    embeds, _, pooled = _encode_prompts(pipe, texts, None, device, False, None)
    negative, _, negative_pooled = _encode_prompts(pipe, _texts(negative_prompt), None, device, False, None)
    embeds, negative = _per_frame(prompts, embeds, num_frames), _per_frame(negative_prompt, negative, num_frames)
    if pooled is not None:
        pooled = (_per_frame(prompts, pooled[0], num_frames), _per_frame(negative_prompt, negative_pooled[0],
                                                                         num_frames))
    return _conditioning(pipe, embeds, negative, pooled, videos_per_prompt, True, height, width, device, True)


def _conditioning(pipe, embeds, negative, pooled, videos_per_prompt, guidance, height, width, device,
                  per_frame: bool) -> "Conditioning":
    """The UNet batch's conditioning from encoded prompts: repeated per video, the negative half first."""
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
    return Conditioning(embeds, added, per_frame=per_frame)


def _check_negative_fits(pipe, tokens: int) -> None:
    """diffusers encodes the missing negative prompt at prompt_embeds' length: within the text encoder's positions."""
    encoder = getattr(pipe, "text_encoder", None)
    limit = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    if limit is not None and tokens > limit:
        raise ValueError(f"prompt_embeds has {tokens} tokens but the text encoder takes at most {limit}, and the "
                         "negative prompt is encoded at prompt_embeds' length: pass negative_prompt_embeds too, or "
                         f"embeddings of at most {limit} tokens")


def _unflatten(encoded, frames: int):
    """Rows (prompt, frame) back to [P, F, ...] (a pair for SDXL's pooled ones, or None)."""
    if encoded is None:
        return None
    if isinstance(encoded, tuple):
        return tuple(_unflatten(e, frames) for e in encoded)
    return encoded.unflatten(0, (-1, frames))


def _per_frame(prompts, encoded, num_frames: int):
    """Keyframe encodings (one row per keyframe text, videos after one another; a pair for SDXL's pooled ones, or
    None) as per-frame tensors [P, F, ...] (see :func:`.prompt_travel.per_frame`)."""
    if encoded is None:
        return None
    if isinstance(encoded, tuple):
        return tuple(_per_frame(prompts, e, num_frames) for e in encoded)
    counts = [len(p.texts) if isinstance(p, PromptTravel) else 1 for p in prompts]
    return per_frame(prompts, list(torch.split(encoded, counts)), num_frames)
