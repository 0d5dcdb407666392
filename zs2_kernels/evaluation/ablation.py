"""The ablation study: component isolation (with Text2Video-Zero, the paper's baseline), the KL-threshold (lambda)
sweep in both search modes, a momentum sweep, video length (drift) and, on the embedded model, the conditional modes
(guided, image-to-video, video-to-video), with prompt fidelity, FID, consistency and motion metrics.

Work is split into units (configuration, prompt, seed); units of one configuration are sampled in fixed
batches with one generator per video, on one CPU thread, so a unit's result does not depend on which process
or which run computed it. A unit's file is named by a key over everything that determines it (the model's
content, sampler settings, prompt text, seed, configuration, batch size, metrics, library and study version,
op backend, dtype, device type): a rerun with other settings computes its units beside the old ones and
never reads those. Each finished unit is written atomically (features .npz first, then the .json that marks
it done), a rerun skips finished units, and after any interruption a rerun ends with the same tables. Under
``torchrun`` batches are sharded across ranks (the output folder must be shared); rank 0 writes the tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .._atomic import atomic_write
from .._checks import check_device, check_number, dtype_from_name
from ..environment import describe
from ..loading import read_model_config, resolve_model_location
from ..ops.backend import resolve_backend
from ..sampling.sampler import MAX_GUIDANCE, check_resolution
from ..sampling.schedulers import check_steps
from ..video_io import to_uint8
from . import conditional
from . import metrics as zm

STUDIES = ("components", "lambda", "momentum", "length", "conditional")
METRICS = ("clip", "fid", "consistency")
SCORERS = ("digits", "clip")
LAMBDAS = (0.001, 0.01, 0.1, 1.0)
MOMENTA = (0.0, 0.5, 0.9, 0.98, 1.0)
SEARCH_MODES = ("paper", "exact")
LENGTHS = (8, 16, 32, 64, 128)
#: The length study runs longer videos in chunks of this many frames (ZS²'s frame_chunk, Text2Video-Zero's recipe).
LENGTH_CHUNK = 16
STRENGTHS = (0.2, 0.5, 0.8)
#: Pixels per frame in the GIF grids (the length study's long videos smaller).
GRID_SIDE, LENGTH_GRID_SIDE = 128, 64
DEFAULT_FID_FEATURE = 2048
#: Part of every unit's key: bump it when a change to the sampler or the metrics changes what a unit holds
#: (units of another version are then recomputed beside the old ones, never mixed in).
STUDY_VERSION = 3
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
    momentum: float = 0.98
    method: str = "zs2"  # or "text2video_zero": diffusers' pipeline on the same components (the paper's baseline)
    mode: str = "text"  # or "guided", "image", "video": the conditional study's modes (conditional.py)
    strength: float | None = None  # video-to-video's
    frames: int | None = None  # the length study's video length (None: the run's --frames)
    frame_chunk: int | None = None  # ZS²'s frame_chunk, or Text2Video-Zero's chunk recipe

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
    """ZS², Text2Video-Zero and per-frame sampling at each length; longer than LENGTH_CHUNK frames in chunks."""
    configs = []
    for frames in lengths:
        chunk = LENGTH_CHUNK if frames > LENGTH_CHUNK else None
        configs += [Config(f"zs2/frames={frames}", "length", frames=frames, frame_chunk=chunk),
                    Config(f"text2video_zero/frames={frames}", "length", dependency_noise=False,
                           momentum_attention=False, method="text2video_zero", frames=frames, frame_chunk=chunk),
                    Config(f"per_frame/frames={frames}", "length", dependency_noise=False, momentum_attention=False,
                           frames=frames)]
    return configs


def _conditional_configs() -> list[Config]:
    """Plain ZS² (the baseline of the guide and image metrics), guided video with each component switched off,
    image-to-video with and without the components, video-to-video at each strength and per-frame at the highest."""
    def config(name, mode, both=True, **fields):
        return Config(name, "conditional", mode=mode, dependency_noise=fields.pop("dependency_noise", both),
                      momentum_attention=fields.pop("momentum_attention", both), **fields)

    return [config("plain/zs2", "text"), config("guided/zs2", "guided"),
            config("guided/no_dependency_noise", "guided", dependency_noise=False),
            config("guided/no_momentum_attention", "guided", momentum_attention=False),
            config("guided/neither", "guided", both=False),
            config("image/zs2", "image"), config("image/neither", "image", both=False),
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
    longest ZS² against the shortest, each conditional mode with against without the components."""
    names = {c.name for c in configs}
    lengths = sorted(c.frames for c in configs if c.study == "length" and c.name.startswith("zs2/"))
    top = f"{STRENGTHS[-1]:g}"
    alternatives = ("neither", "no_dependency_noise", "no_momentum_attention")
    pairs = [("zs2", other) for other in ("text2video_zero", *alternatives)]
    pairs += [(f"lambda={lam:g}/paper", f"lambda={lam:g}/exact") for lam in LAMBDAS]
    pairs += [("momentum=1", "momentum=0")]
    for frames in lengths:
        pairs += [(f"zs2/frames={frames}", f"{other}/frames={frames}") for other in ("text2video_zero", "per_frame")]
    if len(lengths) > 1:
        pairs.append((f"zs2/frames={lengths[-1]}", f"zs2/frames={lengths[0]}"))
    pairs += [("guided/zs2", f"guided/{other}") for other in alternatives]
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
    if not path.is_file():
        raise FileNotFoundError(f"--prompts file {path} does not exist")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts file {path} has no prompts (one per line)")
    return prompts


def _write_json(path: Path, payload) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1, sort_keys=True)))


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


@contextlib.contextmanager
def _one_thread():
    """Run on one intra-op thread. A float32 convolution on the CPU splits its sums by thread count, so a video
    sampled on two threads differs in the last bits from the same video on one, enough to move a uint8 pixel
    and a printed digit of the table; the study's numbers must not depend on how its work was split."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the study
@dataclasses.dataclass(frozen=True)
class Unit:
    """One video of the study and the file that holds its result (named by its key)."""

    config: Config
    prompt_index: int
    seed: int
    key: dict
    path: Path


class Ablation:
    """Validates settings (before any heavy work), runs this rank's units, and writes the outputs on rank 0."""

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
            if not self.reference_folder.is_dir() or not _image_files(self.reference_folder):
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
                name = "--lengths" if config.frames else "--frames"
                raise MemoryError(f"{name} {frames}: {config.name} needs about {estimate.total / GIB:.1f} GiB for "
                                  f"{videos} videos per call but {self.device} has {free / GIB:.1f} GiB free; lower "
                                  f"{name} or --batch")

    def frames_of(self, config: Config) -> int:
        """A configuration's video length: its own (the length study) or the run's --frames."""
        return config.frames or self.settings.frames

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
            mine = [(p, s) for p in range(len(self.prompts)) for s in range(self.settings.seeds)]
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

    def run(self, progress: bool = True) -> dict | None:
        """Run this rank's unfinished units, then (rank 0) aggregate; returns the summary on rank 0."""
        from tqdm.auto import tqdm

        from ..loading import load_pipeline

        started = time.perf_counter()
        (self.out / "units").mkdir(parents=True, exist_ok=True)
        mine = [b for i, b in enumerate(self.batches()) if i % self.world == self.rank]
        todo = [b for b in mine if not all(_finished(u) for u in b)]
        with _one_thread():
            if todo:
                dtype = dtype_from_name(self.settings.dtype) if self.settings.dtype else None
                pipe = load_pipeline(self.settings.model, device=self.device, dtype=dtype)
                bar = tqdm(total=sum(len(b) for b in mine), initial=sum(len(b) for b in mine if b not in todo),
                           desc=f"ablation units (rank {self.rank}/{self.world})",
                           disable=not progress or self.rank != 0)
                for batch in todo:
                    self._run_batch(pipe, batch)
                    bar.update(len(batch))
                bar.close()
            _barrier(self.world)
            if self.rank != 0:
                return None
            return self.aggregate(time.perf_counter() - started)

    def _run_batch(self, pipe, batch: list[Unit]) -> None:
        from ..sampling.sampler import sample_video

        config = batch[0].config
        if config.method == "text2video_zero":
            self._run_text2video_zero(pipe, batch)
            return
        settings = self.settings
        inputs = [self._conditional_inputs(unit) for unit in batch]
        result = sample_video(pipe, [self.prompts[u.prompt_index] for u in batch], num_frames=self.frames_of(config),
                              height=self.height, width=self.width, num_inference_steps=settings.steps,
                              guidance_scale=settings.guidance, noise_lambda=config.noise_lambda,
                              momentum=config.momentum, search=config.search, frame_chunk=config.frame_chunk,
                              dependency_noise=config.dependency_noise, momentum_attention=config.momentum_attention,
                              generator=[torch.Generator().manual_seed(unit_seed(config, u.prompt_index, u.seed))
                                         for u in batch], output_type="np", progress=False,
                              **conditional.sampler_arguments(config.mode, inputs, config.strength))
        seconds = result.stats["timings"]["total"] / len(batch)
        for video, (unit, unit_inputs) in enumerate(zip(batch, inputs)):
            self._finish_unit(unit, result.frames[video], result.stats, video, seconds, unit_inputs)

    def _conditional_inputs(self, unit: Unit) -> dict | None:
        """The conditional study's inputs of a unit (from its prompt's digit and its seed), else None."""
        if unit.config.study != "conditional":
            return None
        from .digits import parse_digit_prompt

        digit = parse_digit_prompt(self.prompts[unit.prompt_index])
        return conditional.unit_inputs(digit, unit.seed, self.frames_of(unit.config))

    def _run_text2video_zero(self, pipe, batch: list[Unit]) -> None:
        """Text2Video-Zero units, one video per call (its pipeline makes one video; long ones by its chunk recipe),
        same prompts and seeds; its UNet processors are put back afterwards (its constructor installs cross-frame
        attention)."""
        from . import text2video_zero

        config = batch[0].config
        processors = dict(pipe.unet.attn_processors)
        try:
            t2vz = text2video_zero.text2video_zero_pipeline(pipe)
            stats = {"device": str(pipe._execution_device), "backend": "diffusers"}
            for unit in batch:
                started = time.perf_counter()
                frames = text2video_zero.sample(
                    t2vz, self.prompts[unit.prompt_index], frames=self.frames_of(config), height=self.height,
                    width=self.width, steps=self.settings.steps, guidance=self.settings.guidance,
                    seed=unit_seed(config, unit.prompt_index, unit.seed), chunk=config.frame_chunk)
                self._finish_unit(unit, frames, stats, 0, time.perf_counter() - started)
        finally:
            pipe.unet.set_attn_processor(processors)

    def _finish_unit(self, unit: Unit, frames, stats, video, seconds, inputs: dict | None = None) -> None:
        frames_u8 = zm.to_uint8_chw(frames)
        prompt = self.prompts[unit.prompt_index]
        values, arrays, curves = {}, {}, {}
        if "clip" in self.settings.metrics:
            values.update(self.scorer.prompt_metrics(frames_u8, prompt))
        if "consistency" in self.settings.metrics:
            embeddings = self.scorer.embed(frames_u8)
            values.update(zm.consistency_metrics(embeddings))
            values.update(zm.motion_metrics(frames_u8, embeddings))
            curves["consistency_to_first"] = zm.consistency_to_first(embeddings).tolist()
        if inputs is not None:
            values.update(conditional.unit_metrics(unit.config.mode, frames_u8.float() / 255, inputs,
                                                   self.scorer.embed))
        if "fid" in self.settings.metrics:
            arrays["fid_features"] = self.scorer.fid_features(frames_u8).numpy()
        noise = {}
        if unit.config.dependency_noise:
            for key in ("achieved_kl", "alpha", "correlation"):
                pairs = np.asarray(stats[key][video], dtype=np.float64)
                noise[key] = float(pairs.mean()) if pairs.size else None
        if unit.prompt_index == 0 and unit.seed == 0:
            side = LENGTH_GRID_SIDE if unit.config.study == "length" else GRID_SIDE
            arrays["grid_frames"] = to_uint8(frames, max(1, side // max(frames.shape[1:3])))
        unit.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(unit.path.with_suffix(".npz"), lambda tmp: _save_npz(tmp, arrays))
        _write_json(unit.path, {"key": unit.key, "config": self.config_record(unit.config), "prompt": prompt,
                                "prompt_index": unit.prompt_index, "seed": unit.seed, "metrics": values,
                                "curves": curves, "noise": noise, "seconds": seconds, "device": stats["device"],
                                "backend": stats["backend"]})

    # ---------------------------------------------------------------- outputs
    def aggregate(self, wall_time: float) -> dict:
        """Read every unit, compute per-configuration means, 95% intervals and FID; write all outputs."""
        from . import report

        study = self.units()
        units = [json.loads(unit.path.read_text()) | {"config_name": unit.config.name} for unit in study]
        summary = {config.name: report.summarise([u for u in units if u["config_name"] == config.name])
                   for config in self.configs}
        if "fid" in self.settings.metrics:
            fid = zm.FeatureFID(self._reference_features(study))
            for config in self.configs:
                if config is IMAGE_PRIOR:
                    continue
                fake = np.concatenate([_fid_features(unit) for unit in study if unit.config == config])
                summary[config.name]["fid"] = {"mean": fid.distance(torch.from_numpy(fake)), "ci95": None,
                                               "n": int(fake.shape[0])}
        results = {
            "settings": dataclasses.asdict(self.settings) | {"prompts": self.prompts},
            "configs": [self.config_record(c) for c in self.configs],
            "scorer": self.scorer.name,
            "fid_reference": self._fid_reference_name() if "fid" in self.settings.metrics else None,
            "summary": summary,
            "paired": report.paired_differences(units, paired_comparisons(self.configs)),
            "units": units,
            "environment": describe(self.device),
            "world_size": self.world,
            "wall_time_s": wall_time,
            "sampling_seconds": sum(unit["seconds"] for unit in units),
        }
        _write_json(self.out / "results.json", results)
        report.write_csv(self.out / "results.csv", units)
        report.write_markdown(self.out / "results.md", results, self.configs)
        report.write_plots(self.out, results, self.configs)
        self._write_gif_grids(study)
        return results

    def _write_gif_grids(self, study: list[Unit]) -> None:
        """samples.gif: one row per configuration of the components, lambda and momentum studies (and the image
        prior); samples-length.gif: the length study's longest videos; samples-conditional.gif: that study's rows.
        Each row is the configuration's first prompt and seed."""
        from . import report

        longest = max((self.frames_of(c) for c in self.configs if c.study == "length"), default=None)
        grids = {}
        for unit in study:
            config = unit.config
            if unit.prompt_index or unit.seed or (config.study == "length" and self.frames_of(config) != longest):
                continue
            name = {"length": "samples-length.gif", "conditional": "samples-conditional.gif"}.get(config.study,
                                                                                               "samples.gif")
            grids.setdefault(name, []).append((config.name, np.load(unit.path.with_suffix(".npz"))["grid_frames"]))
        for name, rows in grids.items():
            report.write_gif_grid(self.out / name, rows)

    def _reference_features(self, study: list[Unit]) -> torch.Tensor:
        if self.reference_folder is not None:
            return self.scorer.fid_features(_load_images(self.reference_folder))
        if self.scorer.reference_name is not None:
            return self.scorer.fid_features(self.scorer.reference_images())
        return torch.from_numpy(np.concatenate([_fid_features(unit) for unit in study if unit.config == IMAGE_PRIOR]))

    def _fid_reference_name(self) -> str:
        if self.reference_folder is not None:
            source = f"images in {self.reference_folder}"
        elif self.scorer.reference_name is not None:
            source = self.scorer.reference_name
        else:
            source = "image prior: per-frame independent samples of the same model and prompts"
        return f"{self.scorer.fid_name} vs {source}"


def _finished(unit: Unit) -> bool:
    """A unit whose files both read back (they are written atomically, so anything else was damaged from outside:
    the unit is computed again and its files replaced)."""
    try:
        record = json.loads(unit.path.read_text())
        with np.load(unit.path.with_suffix(".npz")) as arrays:
            for name in arrays.files:
                arrays[name]  # reads and checks every member
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return False
    return isinstance(record, dict) and isinstance(record.get("metrics"), dict)


def _fid_features(unit: Unit) -> np.ndarray:
    return np.load(unit.path.with_suffix(".npz"))["fid_features"]


def _save_npz(path, arrays) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def _load_images(folder: Path) -> torch.Tensor:
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB")) for p in _image_files(folder)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) under torchrun (gloo process group, used for one barrier), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


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
