"""Frames per second of whole video sampling: plain DDIM, ZS² (ours and the reference backend), Text2Video-Zero,
eager and compiled.

All run in one process on the same pipeline components, at the same model, resolution, frame
count, DDIM steps and guidance, each producing decoded frames (``output_type="np"``):

  * ``plain_ddim``: ``sample_video`` with both ZS² components off (independent per-frame sampling);
  * ``zs2``: ``sample_video`` with our default backend for the device ("triton" on CUDA, "torch" on CPU);
  * ``zs2_reference``: ``sample_video(backend="torch")``, the PyTorch reference ops (on CPU this is the
    same code as ``zs2``; the record says so);
  * ``text2video_zero``: diffusers' ``TextToVideoZeroPipeline`` (``TextToVideoZeroSDXLPipeline`` for SDXL)
    built from the same components with a DDIM scheduler, its t0/t1 scaled from its defaults (44, 47 of 50
    steps) to the step count and its motion field scaled to the latent size (module constants below);
  * ``plain_compiled``, ``zs2_compiled``, ``text2video_zero_compiled``: the same three with the UNet
    compiled (``sample_video(compile=...)``; Text2Video-Zero's UNet through the same ``torch.compile``
    options). Their warm-up call, which compiles, is reported as ``compile_s`` and excluded from the timing.

Implementations alternate within each round (A B C D A B C D ...) after one untimed warm-up round, so
slow drift (thermal, other jobs) hits all of them alike; the median over rounds is reported, with
``time_ratio_plain_ddim`` (the cost over eager plain DDIM), ``time_ratio_text2video_zero`` (against
Text2Video-Zero as diffusers ships it, eager) and, for compiled rows, ``time_ratio_compiled_baseline``
(against the compiled counterpart: plain_compiled, or text2video_zero_compiled for zs2_compiled).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

import zs2_kernels
from zs2_kernels.evaluation import text2video_zero
from zs2_kernels.evaluation.text2video_zero import text2video_zero_pipeline
from zs2_kernels.ops import resolve_backend
from zs2_kernels.sampling.compiling import COMPILE_MODES, compile_options, compiled
from zs2_kernels.seeds import SEED_LIMIT

from common import (
    add_output_argument,
    checked_device,
    default_output,
    make_record,
    refuse_out_of_range,
    run_environment,
    save_results,
    summarize_seconds,
)
from random_models import STYLES, random_pipeline

COMPILED_IMPLS = ("plain_compiled", "zs2_compiled", "text2video_zero_compiled")
#: Each compiled row's baseline for time_ratio_compiled_baseline (what compile alone buys is plain vs plain).
COMPILED_BASELINES = {"plain_compiled": "plain_ddim", "zs2_compiled": "text2video_zero_compiled",
                      "text2video_zero_compiled": "text2video_zero"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SEARCH = "exact"
#: Text2Video-Zero's default motion, 12 units of its 512-wide flow grid per frame, is 1.5 latent pixels per frame
#: at SD's 64-wide latents; the benchmark keeps those latent pixels at every latent size (speed, not looks).
T2VZ_LATENT_PIXELS_PER_FRAME = text2video_zero.DEFAULT_MOTION * 64 / 512


def text2video_zero_settings(steps: int, latent_height: int, latent_width: int) -> dict:
    """Its t0 < t1 < steps at the fractions of its defaults; motion in latent pixels as at 64²."""
    return {**text2video_zero.schedule(steps),
            "motion_field_strength_x": T2VZ_LATENT_PIXELS_PER_FRAME * 512 / latent_width,
            "motion_field_strength_y": T2VZ_LATENT_PIXELS_PER_FRAME * 512 / latent_height}


def build_runners(pipe, args, device: torch.device) -> dict:
    """impl name -> (backend label, note, zero-argument call returning sample_video's stats or None)."""
    ours = resolve_backend(device)
    common = dict(num_frames=args.frames, height=args.height, width=args.width, num_inference_steps=args.steps,
                  guidance_scale=args.guidance_scale, noise_lambda=args.noise_lambda, momentum=args.momentum,
                  search=SEARCH, seed=args.seed, output_type="np", progress=False)

    def zs2_call(**overrides):
        return lambda: zs2_kernels.sample_video(pipe, args.prompt, **{**common, **overrides}).stats

    def t2vz_call(t2vz):
        def call():
            generator = torch.Generator(device="cpu").manual_seed(args.seed)
            t2vz(args.prompt, video_length=args.frames, height=args.height, width=args.width,
                 num_inference_steps=args.steps, guidance_scale=args.guidance_scale, generator=generator,
                 output_type="np", **args.t2vz)
        return call

    t2vz = text2video_zero_pipeline(pipe)
    t2vz_note = (f"{type(t2vz).__name__}, same components, DDIM, "
                 + ", ".join(f"{k}={v:g}" for k, v in args.t2vz.items()))
    same = " (on CPU the default backend is this reference: same code as zs2)" if ours == "torch" else ""
    plain = dict(dependency_noise=False, momentum_attention=False)
    runners = {
        "plain_ddim": ("none", "sample_video(dependency_noise=False, momentum_attention=False)", zs2_call(**plain)),
        "zs2": (ours, "sample_video, default backend for the device", zs2_call(backend=ours)),
        "zs2_reference": ("torch", "sample_video(backend='torch')" + same, zs2_call(backend="torch")),
        "text2video_zero": ("diffusers", t2vz_note, t2vz_call(t2vz)),
    }
    if args.compile is None:
        return runners
    options = compile_options(args.compile)
    t2vz_compiled = text2video_zero_pipeline(pipe)
    t2vz_compiled.unet = compiled(pipe.unet, options)  # its own pipeline object: the UNet wrapper, shared weights
    label = f"compile={args.compile!r}: torch.compile({', '.join(f'{k}={v!r}' for k, v in options.items())})"
    return {**runners,
            "plain_compiled": ("none", f"plain DDIM, {label}", zs2_call(**plain, compile=options)),
            "zs2_compiled": (ours, f"ZS², {label}", zs2_call(backend=ours, compile=options)),
            "text2video_zero_compiled": ("diffusers", f"{t2vz_note}, UNet compiled alike",
                                         t2vz_call(t2vz_compiled))}


def model_label(args) -> str:
    """What the records call the model: the --model given, the random architecture, or the embedded default."""
    if args.random_model:
        return f"random-weight {args.random_model} (benchmarks/random_models.py)"
    return args.model or "embedded (zs2_kernels/embedded/digits-sd)"


def measure(runners: dict, device: torch.device, repeats: int, errors: dict) -> tuple[dict, dict, dict]:
    """Alternating rounds after one warm-up: (seconds per impl, stage timings per impl, warm-up seconds per impl).

    A failing impl is a result (its first error line in ``errors``), not the end of the run.
    """
    samples, stages, warmup = ({name: [] for name in runners} for _ in range(3))

    def timed(name):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        stats = runners[name][2]()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, stats

    for round_index in range(repeats + 1):  # round 0 is the warm-up (and compiles the compiled impls)
        for name in runners:
            if name in errors:
                continue
            try:
                seconds, stats = timed(name)
            except Exception as error:
                errors[name] = (str(error).strip().splitlines() or [type(error).__name__])[0][:500]
                print(f"{name:24s} ERROR {errors[name]}", flush=True)
                continue
            (samples[name] if round_index else warmup[name]).append(seconds)
            if round_index and stats is not None:
                stages[name].append(stats["timings"])
            print(f"round {round_index} {name:24s} {seconds:.3f} s", flush=True)
    return samples, stages, warmup


def load_benchmark_pipeline(args, device: torch.device):
    """The pipeline to measure (random-weight architecture or a real/embedded model), sizes filled into args."""
    if args.random_model:
        pipe = random_pipeline(args.random_model, device, DTYPES[args.dtype])
    else:
        pipe = zs2_kernels.load_pipeline(args.model, device=device, dtype=DTYPES[args.dtype])
    pipe.set_progress_bar_config(disable=True)
    factor = pipe.vae_scale_factor
    args.height = args.height or pipe.unet.config.sample_size * factor
    args.width = args.width or pipe.unet.config.sample_size * factor
    for name in ("height", "width"):
        if getattr(args, name) % factor:
            raise SystemExit(f"--{name} must be a multiple of the model's VAE factor {factor}, "
                             f"got {getattr(args, name)}")
    return pipe


def run(args) -> list[dict]:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # per-call warnings (prompt truncation, deprecations) would drown the log
    device = torch.device(args.device)
    environment = run_environment("sampler", device)
    pipe = load_benchmark_pipeline(args, device)
    factor = pipe.vae_scale_factor
    errors = {}
    try:
        args.t2vz = text2video_zero_settings(args.steps, args.height // factor, args.width // factor)
    except ValueError as error:
        args.t2vz = {}
        errors["text2video_zero"] = errors["text2video_zero_compiled"] = str(error)
    runners = build_runners(pipe, args, device)
    samples, stages, warmup = measure(runners, device, args.repeats, errors)

    settings = {"model": model_label(args),
                "model_class": type(pipe).__name__, "prompt": args.prompt, "frames": args.frames,
                "height": args.height, "width": args.width, "steps": args.steps,
                "guidance_scale": args.guidance_scale, "dtype": args.dtype, "noise_lambda": args.noise_lambda,
                "momentum": args.momentum, "search": SEARCH, "seed": args.seed, "repeats": args.repeats,
                "videos": 1, "text2video_zero": args.t2vz, "compile": args.compile}
    label = (f"{settings['model_class']} from {settings['model']}: {args.frames} frames of {args.height}x{args.width}, "
             f"{args.steps} DDIM steps, guidance {args.guidance_scale:g}, {args.dtype}, "
             f"median of {args.repeats} alternating rounds after 1 warm-up")
    records = {}
    for name, (backend, note, _) in runners.items():
        record = make_record(environment, impl=name, backend=backend, note=note, settings_label=label, **settings)
        if name in errors:
            record["error"] = errors[name]
        else:
            record.update(summarize_seconds(samples[name]), round_s=samples[name])
            record["frames_per_s"] = args.frames / record["median_s"]
            if name in COMPILED_IMPLS:
                record["compile_s"] = warmup[name][0]  # the first call: compiles, then samples once
            if stages[name]:
                record["stage_median_s"] = {stage: summarize_seconds([t[stage] for t in stages[name]])["median_s"]
                                            for stage in stages[name][0]}
        records[name] = record
    add_ratios(records)
    add_paired_ratios(records, samples)
    return list(records.values())


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """Median of ``values`` and a distribution-free confidence interval for it (order statistics: the k-th smallest
    and largest values, k the largest with P(Binomial(n, 1/2) < k) <= (1 - level) / 2); None bounds when n is too
    small for the level (fewer than 6 values at 95 %)."""
    ordered, n = sorted(values), len(values)
    tail, k = 0.0, 0
    while k < n and tail + math.comb(n, k) / 2 ** n <= (1 - level) / 2:
        tail += math.comb(n, k) / 2 ** n
        k += 1
    low, high = (ordered[k - 1], ordered[n - k]) if k else (None, None)
    return float(statistics.median(ordered)), low, high


def add_paired_ratios(records: dict, samples: dict) -> None:
    """Per-round ratios to plain DDIM (each round runs every impl once, in turn: a paired comparison that cancels
    slow drift), their median and its 95 % interval, ``paired_ratio_plain_ddim``."""
    base = samples.get("plain_ddim") or []
    for name, record in records.items():
        rounds = samples.get(name) or []
        if "median_s" in record and base and len(rounds) == len(base):
            median, low, high = median_interval([a / b for a, b in zip(rounds, base)])
            record["paired_ratio_plain_ddim"] = {"median": median, "ci95_low": low, "ci95_high": high,
                                                 "rounds": len(rounds)}
            record["paired_ratio_plain_ddim_text"] = (f"{median:.3f} [{low:.3f}, {high:.3f}]" if low is not None
                                                      else f"{median:.3f} (too few rounds for an interval)")


def add_ratios(records: dict) -> None:
    """Median-time ratios: to eager plain DDIM, to eager Text2Video-Zero, and compiled rows to their baseline."""
    def ratio(record, baseline):
        base = records.get(baseline, {})
        return record["median_s"] / base["median_s"] if "median_s" in record and "median_s" in base else None

    for name, record in records.items():
        for field, baseline in (("time_ratio_plain_ddim", "plain_ddim"),
                                ("time_ratio_text2video_zero", "text2video_zero"),
                                ("time_ratio_compiled_baseline", COMPILED_BASELINES.get(name))):
            value = ratio(record, baseline)
            if value is not None:
                record[field] = value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", default=None, help="pipeline folder or hub id (default: the embedded digits model)")
    model.add_argument("--random-model", choices=STYLES, default=None,
                       help="a random-weight pipeline of this architecture at its real size (benchmarks/"
                            "random_models.py): speed at real sizes without weights; its frames are noise")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="default fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default 16 on CUDA, 8 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50 on CUDA, 10 on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5 on CUDA, 3 on CPU)")
    parser.add_argument("--height", type=int, default=None, help="pixels (default: the model's native size)")
    parser.add_argument("--width", type=int, default=None, help="pixels (default: the model's native size)")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--noise-lambda", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.98)
    parser.add_argument("--prompt", default="a handwritten digit 3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES,
                        help="also time the compiled impls (plain_compiled, zs2_compiled, text2video_zero_compiled) "
                             "with this torch.compile mode; their compile time is reported apart")
    parser.add_argument("--smoke", action="store_true", help="2 frames, 3 steps, 1 round: checks the script runs")
    add_output_argument(parser, "sampler")
    args = parser.parse_args(argv)
    device = checked_device(parser, args.device)
    refuse_out_of_range(parser, args, {
        "frames": (1, math.inf), "steps": (1, math.inf), "repeats": (1, math.inf), "height": (8, math.inf),
        "width": (8, math.inf), "guidance_scale": (0, math.inf), "noise_lambda": (0, math.inf),
        "momentum": (0, 1), "seed": (0, SEED_LIMIT - 1)})
    on_cuda = device.type == "cuda"
    defaults = {"frames": 2, "steps": 3, "repeats": 1} if args.smoke else (
        {"frames": 16, "steps": 50, "repeats": 5} if on_cuda else {"frames": 8, "steps": 10, "repeats": 3})
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.dtype = args.dtype or ("fp16" if on_cuda else "fp32")
    args.out = args.out or default_output("sampler", device)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        records = run(args)
    except FileNotFoundError as error:  # the embedded model not built yet, or a wrong --model
        print(f"bench_sampler.py: {error}", file=sys.stderr)
        return 2
    json_path, markdown_path = save_results(args.out, records)
    for record in records:
        result = record.get("error") or (f"{record['frames_per_s']:.3g} frames/s, {record['median_s']:.3f} s, "
                                         f"x{record.get('time_ratio_plain_ddim', float('nan')):.3g} of plain DDIM")
        print(f"{record['impl']:24s} {result}")
    print(f"wrote {len(records)} records to {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
