"""The ablation study's plan: its settings checked before any heavy work, its configurations, and its units.

Work is split into units (configuration, prompt, seed); units of one configuration are sampled in fixed batches
with one generator per video. A unit's file is named by a key over everything that determines it (the model's
content, sampler settings, prompt text, seed, configuration, batch size, metrics, library and study version, op
backend, dtype, device type): a rerun with other settings computes its units beside the old ones and never reads
those. Running the units is ``running.py``'s job, the tables and plots ``aggregation.py``'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from .. import __version__
from .._checks import SEARCH_MODES, check_device, check_number, dtype_from_name
from ..loading import read_model_config, resolve_model_location
from ..ops.backend import resolve_backend
from ..sampling.request import MAX_GUIDANCE
from ..sampling.schedulers import check_steps
from ..sampling.shapes import check_resolution
from . import conditional
from . import metrics as zm

STUDIES = ("components", "lambda", "momentum", "length", "travel", "conditional")
METRICS = ("clip", "fid", "consistency")
SCORERS = ("digits", "clip")
LAMBDAS = (0.001, 0.01, 0.1, 1.0)
MOMENTA = (0.0, 0.5, 0.9, 0.98, 1.0)
LENGTHS = (8, 16, 32, 64, 128, 256)
#: Videos longer than this run with LONG_VIDEO_SEEDS seeds (the first ones) instead of --seeds: a 256-frame unit
#: costs as much as 16 of the 16-frame ones, and one seed per prompt keeps the committed study inside about an hour.
LONG_VIDEO_FRAMES, LONG_VIDEO_SEEDS = 128, 1
#: The anchored ZS² configurations of the length study (noise_anchor values).
ANCHORS = (0.6, 0.8)
#: The length study runs longer videos in chunks of this many frames (ZS²'s frame_chunk, Text2Video-Zero's recipe).
LENGTH_CHUNK = 16
#: The travel study: videos of this many frames whose prompt travels from a unit's prompt to the prompt half the
#: list away (keyframes 0 and TRAVEL_FRAMES - 1), beside a hard cut at frame TRAVEL_FRAMES // 2.
TRAVEL_FRAMES = 48
STRENGTHS = (0.2, 0.5, 0.8)
#: Pixels per frame in the GIF grids (the length study's long videos smaller).
GRID_SIDE, LENGTH_GRID_SIDE = 128, 64
DEFAULT_FID_FEATURE = 2048
#: Part of every unit's key: bump it when a change to the sampler or the metrics changes what a unit holds
#: (units of another version are then recomputed beside the old ones, never mixed in).
STUDY_VERSION = 5  # 4: the unbiased default noise chain (7798948); 5: travel study, per-config seed caps
#: The files of a model folder its numbers depend on: configuration and weights (pickles are never loaded).
IDENTITY_SUFFIXES = (".json", ".txt", ".model", ".safetensors")


@dataclasses.dataclass(frozen=True)
class Config:
    """One sampler configuration of the study."""

    name: str
    study: str
    dependency_noise: bool = True
    momentum_attention: bool = True
    noise_lambda: float = 0.01
    search: str = "exact"
    noise_anchor: float = 0.0
    momentum: float = 0.98
    method: str = "zs2"  # or "text2video_zero": diffusers' pipeline on the same components (the paper's baseline)
    mode: str = "text"  # or "guided", "image", "video": the conditional study's modes (conditional.py)
    strength: float | None = None  # video-to-video's
    frames: int | None = None  # the length study's video length (None: the run's --frames)
    frame_chunk: int | None = None  # ZS²'s frame_chunk, or Text2Video-Zero's chunk recipe
    travel: str | None = None  # the travel study's prompts: "interpolate" (keyframes at both ends) or "cut"
    seeds: int | None = None  # at most this many of the run's seeds (None: all of --seeds)

    @property
    def slug(self) -> str:
        return self.name.replace("/", "-").replace("=", "-")


IMAGE_PRIOR = Config("image_prior", "reference", dependency_noise=False, momentum_attention=False)


MAX_SEEDS, MAX_PROMPTS = 20_000, 100_000


def unit_seed(config: Config, prompt_index: int, seed: int) -> int:
    """Generator seed of a unit: shared by every studied configuration (paired comparisons); the FID
    reference set (image prior) draws from a disjoint stream, so no configuration is scored against its
    own samples (per-frame independent sampling would otherwise get FID 0 by construction).

    torch's CPU generator keeps only the low 32 bits of a seed, so every seed stays below 2**32:
    studied units below 2**31 (MAX_SEEDS x 100_003), the reference in [2**31, 2**32)."""
    base = seed * 100_003 + prompt_index
    return base + 2**31 if config is IMAGE_PRIOR else base


def _length_configs(lengths) -> list[Config]:
    """ZS² (unanchored and at each of ANCHORS), Text2Video-Zero and per-frame sampling at each length; longer than
    LENGTH_CHUNK frames in chunks, longer than LONG_VIDEO_FRAMES with LONG_VIDEO_SEEDS seeds."""
    configs = []
    for frames in lengths:
        common = dict(frames=frames, seeds=LONG_VIDEO_SEEDS if frames > LONG_VIDEO_FRAMES else None)
        chunk = LENGTH_CHUNK if frames > LENGTH_CHUNK else None
        configs += [Config(f"zs2/frames={frames}", "length", frame_chunk=chunk, **common),
                    *(Config(f"zs2_anchor={anchor:g}/frames={frames}", "length", noise_anchor=anchor,
                             frame_chunk=chunk, **common) for anchor in ANCHORS),
                    Config(f"text2video_zero/frames={frames}", "length", dependency_noise=False,
                           momentum_attention=False, method="text2video_zero", frame_chunk=chunk, **common),
                    Config(f"per_frame/frames={frames}", "length", dependency_noise=False, momentum_attention=False,
                           **common)]
    return configs


#: The travel study's lower momentum: momentum attention at mu weights the old prompt's frames by mu^k, so a
#: lower mu is the candidate fix of a lag behind the prompt.
TRAVEL_LOW_MOMENTUM = 0.5


def _travel_configs() -> list[Config]:
    """Prompt travel over TRAVEL_FRAMES frames: ZS², ZS² at a lower momentum, per-frame sampling (the lag the
    interpolated embeddings alone give) and ZS² with a hard cut at the midpoint (the smoothness baseline)."""
    common = dict(frames=TRAVEL_FRAMES, frame_chunk=LENGTH_CHUNK)
    return [Config("travel/zs2", "travel", travel="interpolate", **common),
            Config(f"travel/zs2_momentum={TRAVEL_LOW_MOMENTUM:g}", "travel", travel="interpolate",
                   momentum=TRAVEL_LOW_MOMENTUM, **common),
            Config("travel/per_frame", "travel", travel="interpolate", dependency_noise=False,
                   momentum_attention=False, frames=TRAVEL_FRAMES),
            Config("travel/zs2_cut", "travel", travel="cut", **common)]


def travel_keyframes(config: Config, first: str, second: str) -> dict[int, str]:
    """The prompt keyframes of a travel configuration's video: ``first`` at frame 0 and ``second`` at the last frame
    (interpolated between), or a hard cut to ``second`` at the midpoint."""
    if config.travel == "interpolate":
        return {0: first, config.frames - 1: second}
    middle = config.frames // 2
    return {0: first, middle - 1: first, middle: second}


#: The conditional study's long image-to-video videos, with and without the noise anchor (frame 0 is the image's
#: inverted noise there, so the anchor ties every frame to it).
IMAGE_LONG_FRAMES, IMAGE_ANCHOR = 64, 0.8


def _conditional_configs() -> list[Config]:
    """Plain ZS² (the baseline of the guide and image metrics), guided video with each component switched off,
    image-to-video with and without the components (and IMAGE_LONG_FRAMES long, unanchored and anchored),
    video-to-video at each strength and per-frame at the highest."""
    def config(name, mode, both=True, **fields):
        return Config(name, "conditional", mode=mode, dependency_noise=fields.pop("dependency_noise", both),
                      momentum_attention=fields.pop("momentum_attention", both), **fields)

    return [config("plain/zs2", "text"), config("guided/zs2", "guided"),
            config("guided/no_dependency_noise", "guided", dependency_noise=False),
            config("guided/no_momentum_attention", "guided", momentum_attention=False),
            config("guided/neither", "guided", both=False),
            config("image/zs2", "image"), config("image/neither", "image", both=False),
            *(config(name, "image", noise_anchor=anchor, frames=IMAGE_LONG_FRAMES, frame_chunk=LENGTH_CHUNK)
              for name, anchor in ((f"image/zs2/frames={IMAGE_LONG_FRAMES}", 0.0),
                                   (f"image/zs2_anchor={IMAGE_ANCHOR:g}/frames={IMAGE_LONG_FRAMES}", IMAGE_ANCHOR))),
            *(config(f"video/strength={strength:g}", "video", strength=strength) for strength in STRENGTHS),
            config(f"video/strength={STRENGTHS[-1]:g}/neither", "video", both=False, strength=STRENGTHS[-1])]


def study_configs(study: str, embedded: bool = True, lengths=LENGTHS) -> list[Config]:
    """The configurations of one study, or of all of them for ``study="all"`` (the conditional study only with
    the embedded model: its inputs are held-out digits and its guide the embedded ControlNet's); ``lengths``: the
    video lengths of the length study."""
    groups = {
        "components": [Config("zs2", "components"),
                       Config("text2video_zero", "components", dependency_noise=False, momentum_attention=False,
                              method="text2video_zero"),
                       Config("no_dependency_noise", "components", dependency_noise=False),
                       Config("no_momentum_attention", "components", momentum_attention=False),
                       Config("neither", "components", dependency_noise=False, momentum_attention=False)],
        "lambda": [Config(f"lambda={lam:g}/{mode}", "lambda", noise_lambda=lam, search=mode)
                   for mode in SEARCH_MODES for lam in LAMBDAS],
        "momentum": [Config(f"momentum={mu:g}", "momentum", momentum=mu) for mu in MOMENTA],
        "length": _length_configs(lengths),
        "travel": _travel_configs(),
        "conditional": _conditional_configs(),
    }
    if study == "all":
        return [config for name in STUDIES if embedded or name != "conditional" for config in groups[name]]
    if study not in groups:
        raise ValueError(f"--study must be one of {STUDIES + ('all',)}, got {study!r}")
    if study == "conditional" and not embedded:
        raise ValueError("--study conditional runs on the embedded model only (its inputs are held-out digits, its "
                         "guide the embedded ControlNet's): leave out --model")
    return groups[study]


def paired_comparisons(configs) -> list[tuple[str, str]]:
    """The (A, B) configuration pairs whose per-unit differences A - B the results report: units of one prompt
    and seed share their noise, so the pairing removes what prompt and seed contribute. Full ZS² against each
    alternative, the paper search against the exact one, momentum 1 against 0, each length's methods and the
    longest ZS² against the shortest, travel against a hard cut, per-frame travel and the lower momentum, each
    conditional mode with against without the components."""
    names = {c.name for c in configs}
    lengths = sorted(c.frames for c in configs if c.study == "length" and c.name.startswith("zs2/"))
    top = f"{STRENGTHS[-1]:g}"
    alternatives = ("neither", "no_dependency_noise", "no_momentum_attention")
    pairs = [("zs2", other) for other in ("text2video_zero", *alternatives)]
    pairs += [(f"lambda={lam:g}/paper", f"lambda={lam:g}/exact") for lam in LAMBDAS]
    pairs += [("momentum=1", "momentum=0")]
    for frames in lengths:
        pairs += [(f"zs2/frames={frames}", f"{other}/frames={frames}") for other in ("text2video_zero", "per_frame")]
        pairs += [(f"zs2_anchor={anchor:g}/frames={frames}", f"zs2/frames={frames}") for anchor in ANCHORS]
    if len(lengths) > 1:
        pairs.append((f"zs2/frames={lengths[-1]}", f"zs2/frames={lengths[0]}"))
    pairs += [("travel/zs2", other) for other in ("travel/zs2_cut", "travel/per_frame")]
    pairs += [(f"travel/zs2_momentum={TRAVEL_LOW_MOMENTUM:g}", "travel/zs2")]
    pairs += [("guided/zs2", f"guided/{other}") for other in alternatives]
    long_image = f"frames={IMAGE_LONG_FRAMES}"
    pairs += [(f"image/zs2_anchor={IMAGE_ANCHOR:g}/{long_image}", f"image/zs2/{long_image}")]
    pairs += [("guided/zs2", "plain/zs2"), ("image/zs2", "image/neither"), ("image/zs2", "plain/zs2"),
              (f"video/strength={top}", f"video/strength={top}/neither")]
    return [(a, b) for a, b in pairs if a in names and b in names]


@dataclasses.dataclass
class AblationSettings:
    """Everything that defines a study run (all configurations share prompts, seeds and sampler settings)."""

    out: str
    study: str = "all"
    model: str | None = None
    prompts: list[str] | None = None
    seeds: int = 3
    frames: int = 16
    steps: int = 25
    guidance: float = 4.0
    height: int | None = None
    width: int | None = None
    metrics: tuple[str, ...] = METRICS
    clip_model: str | None = None
    inception_weights: str | None = None
    reference_images: str | None = None
    fid_feature: int | None = None  # None: DEFAULT_FID_FEATURE (Inception's pool layer)
    scorer: str | None = None  # "digits" or "clip"; default: digits for the embedded model, else clip
    device: str | None = None
    dtype: str | None = None
    batch: int = 4
    lengths: tuple[int, ...] = LENGTHS


def default_prompts(model) -> list[str]:
    """Ten digit prompts for the embedded model; the paper's 53 demo prompts for any other model."""
    if model is None:
        from .digits import digit_prompt

        return [digit_prompt(digit) for digit in range(10)]
    from importlib.resources import files

    text = files("zs2_kernels.evaluation").joinpath("data/zs2-paper-prompts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_prompts(path) -> list[str]:
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"--prompts {path} is not a regular file: give a text file with one prompt per line")
    if not path.is_file():
        raise FileNotFoundError(f"--prompts file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"--prompts file {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts file {path} has no prompts (one per line)")
    return prompts


def source_identity(source: str) -> str:
    """What a model's numbers come from: sha256 over a file, or over a folder's configuration and weights files
    (relative names and bytes, so a moved copy keeps its identity and an edited file changes it); for a hub id,
    the id and the commit it resolves to (online: the hub's latest; offline: the cached one)."""
    path = Path(source).expanduser()
    if path.is_file() or path.is_dir():
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.suffix in IDENTITY_SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\0".encode())
            with open(file, "rb") as handle:
                while chunk := handle.read(1 << 23):
                    digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"
    from huggingface_hub import snapshot_download

    return f"hub:{source}@{Path(snapshot_download(source, allow_patterns='*.json')).name}"


def _read_model_config(settings) -> dict:
    """The model's configuration files (no weights), or a ValueError naming --model."""
    try:
        return read_model_config(settings.model)
    except OSError as error:
        raise ValueError(f"--model: {error}") from None


def _model_resolution(settings, config: dict) -> tuple[int, int]:
    """--height/--width (default: the model's size), checked as the sampler checks them but from the model's
    configuration files alone: a bad size is refused before any weights load."""
    factor = config["vae_scale_factor"]
    try:
        return check_resolution(factor, config["unet"]["sample_size"] * factor, settings.height, settings.width)
    except ValueError as error:  # its messages begin with the argument's name
        raise ValueError(f"--{error}") from None


@dataclasses.dataclass(frozen=True)
class Unit:
    """One video of the study and the file that holds its result (named by its key)."""

    config: Config
    prompt_index: int
    seed: int
    key: dict
    path: Path


class StudyPlan:
    """Checks a study's settings before any heavy work (model configs, memory, output folder, scorer) and lists
    its units in fixed batches; this process's rank and device under torchrun."""

    def __init__(self, settings: AblationSettings):
        self.settings = settings
        if not settings.lengths or any(not isinstance(n, int) or n < 2 for n in settings.lengths) \
                or len(set(settings.lengths)) != len(settings.lengths):
            raise ValueError(f"--lengths must be distinct frame counts >= 2, got {settings.lengths}")
        self.configs = study_configs(settings.study, embedded=settings.model is None, lengths=settings.lengths)
        unknown = set(settings.metrics) - set(METRICS)
        if unknown or not settings.metrics:
            raise ValueError(f"--metrics must be a comma-separated subset of {METRICS}, got {settings.metrics}")
        self.prompts = settings.prompts or default_prompts(settings.model)
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ValueError("--prompts must hold at least one non-empty prompt")
        if len(self.prompts) > MAX_PROMPTS:
            raise ValueError(f"--prompts holds {len(self.prompts)} prompts; at most {MAX_PROMPTS} are supported")
        if any(config.study == "travel" for config in self.configs) and len(self.prompts) < 2:
            raise ValueError("the travel study needs at least 2 prompts (each video travels from its prompt to the "
                             "prompt half the list away); pass more --prompts or choose another --study")
        if settings.seeds > MAX_SEEDS:
            raise ValueError(f"--seeds must be between 1 and {MAX_SEEDS}, got {settings.seeds}")
        frames_low = 2 if any(config.frames is None for config in self.configs) else 1  # the length study: --lengths
        for name, value, low in (("--seeds", settings.seeds, 1), ("--frames", settings.frames, frames_low),
                                 ("--steps", settings.steps, 1), ("--batch", settings.batch, 1)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        check_number("--guidance", settings.guidance, 0.0, MAX_GUIDANCE)
        if any(config.method == "text2video_zero" for config in self.configs):
            if settings.steps < 2:
                raise ValueError(f"--steps must be >= 2 for the text2video_zero configurations (its t0 < t1 < "
                                 f"steps), got {settings.steps}")
            if settings.guidance <= 1.0:  # diffusers' pipeline splits its prediction into two guidance halves
                raise ValueError(f"--guidance must be > 1 for the text2video_zero configurations (its pipeline "
                                 f"needs classifier-free guidance), got {settings.guidance}")
        if settings.device is not None:
            try:
                check_device(settings.device)
            except ValueError as error:
                raise ValueError(f"--device: {error}") from None
        if not str(settings.out).strip():
            raise ValueError("--out must name a folder, got an empty string")
        self.out = Path(settings.out)
        self._check_out_writable()
        self.reference_folder = None
        if settings.reference_images is not None:
            self.reference_folder = Path(settings.reference_images)
            if not self.reference_folder.is_dir() or not image_files(self.reference_folder):
                raise ValueError(f"--reference-images {self.reference_folder} is not a folder with images "
                                 "(.png/.jpg/.jpeg)")
        model_config = _read_model_config(settings)
        self.height, self.width = _model_resolution(settings, model_config)
        if any(config.study == "conditional" for config in self.configs):
            self._check_conditional(model_config)
        check_steps(settings.steps, model_config["scheduler"], "--steps")
        model_identity = source_identity(resolve_model_location(settings.model))
        self.rank, self.world = _distributed_rank_world()
        self.device = _rank_device(settings.device, self.rank)
        self._check_memory(model_config)
        self.scorer = self._make_scorer()
        if self.uses_image_prior:
            self.configs = self.configs + [IMAGE_PRIOR]
        self.run_key = {
            "study_version": STUDY_VERSION, "library_version": __version__, "model": model_identity,
            "dtype": str(dtype_from_name(settings.dtype)) if settings.dtype else "as stored",
            "device": self.device.type, "backend": resolve_backend(self.device), "frames": settings.frames,
            "steps": settings.steps, "guidance": settings.guidance, "height": self.height, "width": self.width,
            "metrics": sorted(settings.metrics), "scorer": [type(self.scorer).__name__, self.scorer.fid_name],
            "scorer_sources": [source_identity(source) for source in self.scorer.sources]}

    def _check_conditional(self, model_config: dict) -> None:
        """The conditional study pairs each prompt's digit with that digit's held-out images (32 x 32), one per
        seed, and measures motion over at least 3 frame-to-frame shifts."""
        from .digits import parse_digit_prompt

        bad = [p for p in self.prompts if parse_digit_prompt(p) is None]
        if bad:
            within = " (in --study all with the embedded model)" if self.settings.study == "all" else ""
            raise ValueError(f"the conditional study{within} needs prompts naming one digit; these do not: "
                             f"{bad[:3]}" + ("; choose another --study or digit prompts" if within else ""))
        from ..sampling.editing import check_strength

        for config in self.configs:
            if config.mode == "video":
                try:
                    check_strength(config.strength, self.settings.steps)
                except ValueError as error:
                    raise ValueError(f"--steps {self.settings.steps} is too few for the conditional study's "
                                     f"{config.name}: {error}") from None
        native = model_config["unet"]["sample_size"] * model_config["vae_scale_factor"]
        if (self.height, self.width) != (native, native):
            raise ValueError(f"--height/--width: the conditional study runs at the embedded model's {native} x "
                             f"{native} (its held-out digit inputs), got {self.height} x {self.width}")
        if self.settings.frames < 4:
            raise ValueError(f"--frames must be >= 4 for the conditional study (its motion correlation needs 3 "
                             f"frame-to-frame shifts), got {self.settings.frames}")
        limit = conditional.max_seeds()
        if self.settings.seeds > limit:
            raise ValueError(f"--seeds must be at most {limit} for the conditional study (one held-out image per "
                             f"digit and seed), got {self.settings.seeds}")

    def _check_memory(self, model_config: dict) -> None:
        """Refuse, before any work, a configuration whose batch would not fit in this device's free memory."""
        from ..sampling.memory import GIB, available_memory, estimate_memory

        free = available_memory(self.device)
        dtype = dtype_from_name(self.settings.dtype) if self.settings.dtype else torch.float32
        videos = min(self.settings.batch, len(self.prompts) * self.settings.seeds)
        for config in self.configs:
            frames = self.frames_of(config)
            estimate = estimate_memory(model_config["unet"], model_config["vae"], videos=videos, frames=frames,
                                       height=self.height, width=self.width, chunk=config.frame_chunk,
                                       guidance=self.settings.guidance > 1.0, dtype=dtype,
                                       weights=model_config["weights"])
            if free is not None and estimate.total > free:
                name = "--lengths" if config.study == "length" else "--frames" if config.frames is None else None
                what = f"{name} {frames}: {config.name}" if name else f"{config.name} ({frames} frames)"
                raise MemoryError(f"{what} needs about {estimate.total / GIB:.1f} GiB for {videos} videos per call "
                                  f"but {self.device} has {free / GIB:.1f} GiB free; lower "
                                  + (f"{name} or --batch" if name else "--batch"))

    def frames_of(self, config: Config) -> int:
        """A configuration's video length: its own (the length study) or the run's --frames."""
        return config.frames or self.settings.frames

    def travel_target(self, prompt_index: int) -> str:
        """The travel study's second prompt of a unit: the prompt half the list away (digit d + 5 of 10 digits)."""
        return self.prompts[(prompt_index + len(self.prompts) // 2) % len(self.prompts)]

    def sampler_prompt(self, config: Config, prompt_index: int) -> str | dict[int, str]:
        """What a unit's video is sampled from: its prompt, or in the travel study keyframes from it to
        :meth:`travel_target`."""
        prompt = self.prompts[prompt_index]
        return prompt if config.travel is None else travel_keyframes(config, prompt, self.travel_target(prompt_index))

    def config_record(self, config: Config) -> dict:
        """What a unit records of its configuration, its video length resolved."""
        return dataclasses.asdict(config) | {"frames": self.frames_of(config)}

    @property
    def uses_image_prior(self) -> bool:
        return ("fid" in self.settings.metrics and self.reference_folder is None
                and self.scorer.reference_name is None)

    def _check_out_writable(self) -> None:
        """Refuse an --out that cannot become a writable folder, creating nothing: a refused run leaves no trace."""
        existing = self.out.absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise PermissionError(f"--out {self.out} is not writable: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"--out {self.out} is not writable: no write permission on {existing}")
        try:  # what os.access cannot tell (read-only or virtual file systems such as /proc): try, and clean up
            os.rmdir(tempfile.mkdtemp(prefix=".zs2-probe-", dir=existing))
        except OSError as error:
            raise PermissionError(f"--out {self.out} is not writable: cannot create a folder in {existing} "
                                  f"({error.strerror})") from None

    def _make_scorer(self) -> zm.Scorer:
        settings = self.settings
        choice = settings.scorer or ("digits" if settings.model is None else "clip")
        if choice not in SCORERS:
            raise ValueError(f"--scorer must be one of {SCORERS}, got {choice!r}")
        if choice == "digits":
            from .digits import parse_digit_prompt

            for name, value in (("--clip-model", settings.clip_model),
                                ("--inception-weights", settings.inception_weights),
                                ("--fid-feature", settings.fid_feature)):
                if value is not None:
                    raise ValueError(f"{name} applies to --scorer clip only; this run scores with the digit "
                                     "classifier (the embedded model's default)")

            bad = [p for p in self.prompts if parse_digit_prompt(p) is None]
            if bad and "clip" in settings.metrics:
                raise ValueError(f"the digit metrics need prompts naming one digit; these do not: {bad[:3]} (only "
                                 "the prompt metrics do: --metrics consistency,fid scores any prompt)")
            return zm.DigitScorer(self.device)
        if settings.clip_model is None:
            raise ValueError("CLIP metrics need a CLIP model: pass --clip-model (a local folder, or a hub id when "
                             "online); for FID also --inception-weights")
        return zm.ClipScorer(settings.clip_model, self.device, with_fid="fid" in settings.metrics,
                              inception_weights=settings.inception_weights,
                              fid_feature=settings.fid_feature or DEFAULT_FID_FEATURE)

    # ---------------------------------------------------------------- units
    def batches(self) -> list[list[Unit]]:
        """Fixed batches (same configuration, consecutive units), independent of what is already done. A unit's
        key holds its batch's size: a video's last bits depend on the size of the UNet batch it was sampled in."""
        out = []
        for config in self.configs:
            seeds = min(self.settings.seeds, config.seeds or self.settings.seeds)
            mine = [(p, s) for p in range(len(self.prompts)) for s in range(seeds)]
            for i in range(0, len(mine), self.settings.batch):
                chunk = mine[i:i + self.settings.batch]
                out.append([self._unit(config, p, s, len(chunk)) for p, s in chunk])
        return out

    def _unit(self, config: Config, prompt_index: int, seed: int, batch_size: int) -> Unit:
        key = self.run_key | {"config": self.config_record(config), "prompt": self.prompts[prompt_index],
                              "prompt_index": prompt_index, "seed": seed, "batch": batch_size}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = self.out / "units" / config.slug / f"p{prompt_index:03d}-s{seed:03d}-{digest}.json"
        return Unit(config, prompt_index, seed, key, path)

    def units(self) -> list[Unit]:
        return [unit for batch in self.batches() for unit in batch]

def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def _distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) under torchrun (gloo process group, used for one barrier), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _rank_device(device: str | None, rank: int) -> torch.device:
    """This rank's device: under torchrun, cuda:LOCAL_RANK, made current so that every launch (Triton's go to
    the current device) and every default CUDA allocation of the rank lands on its own GPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device
