"""Time and peak memory of video sampling against video length, with and without frame chunking.

For every video length (default 8, 16, 32, 64, 128 frames), two implementations, each unchunked and chunked:

  * ``zs2``: ``zs2_kernels.sample_video(num_frames=N, frame_chunk=None or K, output_type="latent")``;
  * ``text2video_zero``: diffusers' ``TextToVideoZeroPipeline`` (``bench_sampler.py``'s components, DDIM, t0/t1
    and motion field), unchunked: one call of N frames; chunked: diffusers' documented long-video recipe, calls
    of at most K frames, each re-including frame 0 (its cross-frame attention anchor, recomputed every call)
    and restarting the same seed, so K - 1 new frames per call.

Both stop at the latents (no VAE decode, which costs the same per frame for both and has its own chunking).

Peak memory is the growth over the loaded model during the timed video(s). CUDA: ``max_memory_allocated``
after ``reset_peak_memory_stats``, minus the memory allocated before the call (all points in this process).
CPU: the peak resident set (VmHWM, reset through /proc/self/clear_refs) minus the resident set before the call,
each point in a fresh process (forked from a server that has only imported the libraries) that loads the model
and samples one tiny warm-up video first: torch and the weights would dominate otherwise, and memory freed by
earlier points would hide later growth.

Goals, evaluated from the measurements and recorded (never asserted): time linear in frames (least-squares
seconds per frame, R², and the per-frame time of the longest video over the shortest's); with chunking, the
peak of the longest video <= 1.2x the peak of one chunk (frames = K); ZS² faster than the Text2Video-Zero
chunk recipe at every length. A sanity check: unchunked, the longest video must peak clearly (>= 2x) above the
chunked one, or the measurement is not seeing activations.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import multiprocessing
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import zs2_kernels
from zs2_kernels.evaluation import text2video_zero
from zs2_kernels.seeds import SEED_LIMIT

from bench_sampler import DTYPES, SEARCH, model_label, text2video_zero_pipeline, text2video_zero_settings
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

IMPLS = ("zs2", "text2video_zero")
NOISE_LAMBDA, MOMENTUM = 0.01, 0.98
#: The untimed warm-up video of each point (lazy initialisation must not count as the point's memory or time).
WARMUP_FRAMES, WARMUP_STEPS = 2, 2
#: Goal and sanity thresholds (benchmarks/README.md).
LINEAR_MIN_R2, LINEAR_MAX_PER_FRAME_RATIO = 0.99, 1.2
CHUNK_PEAK_MAX_RATIO = 1.2
SANITY_MIN_RATIO = 2.0
MIB = 2**20


def text2video_zero_video(t2vz, args, frames: int, chunk: int | None, steps: int) -> tuple[torch.Tensor, int]:
    """Text2Video-Zero latents [frames, c, h, w] (unchunked, or by the chunk recipe) and the number of calls."""
    settings = text2video_zero_settings(steps, args.height // args.vae_factor, args.width // args.vae_factor)
    video = text2video_zero.sample(t2vz, args.prompt, frames=frames, height=args.height, width=args.width,
                                   steps=steps, guidance=args.guidance_scale, seed=args.seed, chunk=chunk,
                                   output_type="latent", **settings)
    return video, len(text2video_zero.chunk_frame_ids(frames, chunk))


def video_call(pipe, args, impl: str, frames: int, chunk: int | None, steps: int):
    """A zero-argument call sampling one video's latents; it returns the number of pipeline calls made."""
    if impl == "zs2":
        def call():
            """One ZS² video, one pipeline call."""
            zs2_kernels.sample_video(pipe, args.prompt, num_frames=frames, frame_chunk=chunk, height=args.height,
                                     width=args.width, num_inference_steps=steps, guidance_scale=args.guidance_scale,
                                     noise_lambda=NOISE_LAMBDA, momentum=MOMENTUM, search=SEARCH, seed=args.seed,
                                     output_type="latent", progress=False)
            return 1
        return call
    t2vz = text2video_zero_pipeline(pipe)
    return lambda: text2video_zero_video(t2vz, args, frames, chunk, steps)[1]


def _status_bytes(key: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes."""
    with open("/proc/self/status") as handle:
        return int(re.search(rf"^{key}:\s+(\d+) kB", handle.read(), re.MULTILINE).group(1)) * 1024


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Without it the timed video would reuse the pages the warm-up freed without raising the resident set, and
    its peak would read low by up to the warm-up's own footprint.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


class ResidentSetMeter:
    """CPU: this process's peak resident set (VmHWM) over its resident set when reset (Linux /proc)."""

    method = ("CPU: peak resident set (VmHWM) minus the resident set before the call, in a fresh process "
              "after loading the model, one warm-up video and malloc_trim")

    def reset(self) -> int:
        """Start a measurement; returns the baseline (the resident set now, in bytes)."""
        release_free_memory()
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current resident set
        self.base = _status_bytes("VmRSS")
        return self.base

    def peak(self) -> int:
        """Bytes of the peak resident set since the reset above the baseline."""
        return _status_bytes("VmHWM") - self.base


class CudaMeter:
    """CUDA: ``max_memory_allocated`` since the reset over the memory allocated at the reset."""

    method = "CUDA: torch.cuda.max_memory_allocated minus memory_allocated before the call (reset per point)"

    def __init__(self, device: torch.device):
        """Measure on this CUDA device."""
        self.device = device

    def reset(self) -> int:
        """Start a measurement; returns the baseline (the bytes allocated now)."""
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)
        return self.base

    def peak(self) -> int:
        """Bytes of the allocator's peak since the reset above the baseline."""
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self.base


def measure_point(pipe, args, impl: str, frames: int, chunk: int | None, meter) -> dict:
    """One warm-up video, then ``args.repeats`` timed videos of ``frames`` frames: wall times and peak memory."""
    video_call(pipe, args, impl, WARMUP_FRAMES, chunk, WARMUP_STEPS)()
    call = video_call(pipe, args, impl, frames, chunk, args.steps)
    baseline = meter.reset()
    samples = []
    for _ in range(args.repeats):
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)
        start = time.perf_counter()
        calls = call()
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)
        samples.append(time.perf_counter() - start)
    return {"samples_s": samples, "calls": calls, "peak_bytes": meter.peak(), "baseline_bytes": baseline}


def load_model(args):
    """The pipeline the benchmark measures, on ``args.device`` in ``args.dtype``, progress bars off."""
    if args.random_model:
        pipe = random_pipeline(args.random_model, torch.device(args.device), DTYPES[args.dtype])
    else:
        pipe = zs2_kernels.load_pipeline(args.model, device=args.device, dtype=DTYPES[args.dtype])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def first_line(error: BaseException) -> str:
    """An exception as one short line for an ``error`` field."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:500]


def preload_libraries() -> None:
    """Import what every measuring process needs; run once in the fork server, so each point starts with it."""
    from diffusers import StableDiffusionPipeline, TextToVideoZeroPipeline  # noqa: F401
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextModel  # noqa: F401
    from transformers.utils import logging as transformers_logging

    quiet()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def quiet() -> None:
    """Silence what would repeat on every call or point: diffusers' warnings, Text2Video-Zero's torch warnings."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    for message in ("torch.meshgrid", "Default grid_sample"):
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def _point_in_child(connection, args, impl: str, frames: int, chunk: int | None) -> None:
    """Fresh process: load the model, measure one point, send the result (or the error) back."""
    try:
        result = measure_point(load_model(args), args, impl, frames, chunk, ResidentSetMeter())
    except Exception as error:  # reported as the point's error record
        result = {"error": first_line(error)}
    connection.send(result)
    connection.close()


class FreshProcessMeasurer:
    """CPU: every point in its own process, forked from a server that imported the libraries once."""

    method = ResidentSetMeter.method

    def __init__(self):
        """Set the fork server up (it starts with the first point)."""
        self.context = multiprocessing.get_context("forkserver")
        # The server imports this script as a module (which preloads the libraries), so the children start with
        # them; each child re-runs this script's top level as __mp_main__, all of it imported already by then.
        # The server's sys.path comes from PYTHONPATH (Python 3.11 ignores the sys.path it is handed).
        here = str(Path(__file__).resolve().parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
        self.context.set_forkserver_preload([Path(__file__).stem])

    def __call__(self, args, impl: str, frames: int, chunk: int | None, timeout: float | None) -> dict:
        """Measure one point in a new process, killing it after ``timeout`` seconds (None: no limit)."""
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(target=_point_in_child, args=(sender, args, impl, frames, chunk), daemon=True)
        process.start()
        sender.close()
        try:
            if receiver.poll(timeout):
                result = receiver.recv()
            else:
                process.kill()
                result = {"error": f"cut off: --time-cap ran out {timeout:.1f} s into this point"}
        except EOFError:
            result = None
        process.join()
        if result is None:
            result = {"error": f"the measuring process died (exit code {process.exitcode}; out of memory?)"}
        return result


class InProcessMeasurer:
    """CUDA: every point in this process on one loaded pipeline, peaks from the CUDA allocator's statistics."""

    method = CudaMeter.method

    def __init__(self, pipe):
        """Measure on this loaded pipeline."""
        self.pipe = pipe

    def __call__(self, args, impl: str, frames: int, chunk: int | None, timeout: float | None) -> dict:
        """Measure one point here (``timeout`` cannot interrupt it: the cap is checked between points)."""
        try:
            return measure_point(self.pipe, args, impl, frames, chunk, CudaMeter(self.pipe.device))
        except Exception as error:  # out of memory at long unchunked videos is a result
            torch.cuda.empty_cache()
            return {"error": first_line(error)}


def chunking(impl: str, chunk: int | None) -> str:
    """How a point is chunked, for tables and plots."""
    return "none" if chunk is None else f"frame_chunk={chunk}" if impl == "zs2" else f"recipe, {chunk}/call"


def label_of(record: dict) -> tuple[str, str]:
    """A record's (impl, chunking)."""
    return record["impl"], record["chunking"]


def point_record(environment: dict, settings: dict, impl: str, frames: int, chunk: int | None, result: dict) -> dict:
    """The record of one (impl, frames, chunking) point, measured or not (then with its ``error``)."""
    record = make_record(environment, impl=impl, frames=frames, frame_chunk=chunk, chunking=chunking(impl, chunk),
                         **settings)
    if "error" in result:
        record["error"] = result["error"]
        return record
    record.update(summarize_seconds(result["samples_s"]), samples_s=result["samples_s"], calls=result["calls"],
                  peak_bytes=result["peak_bytes"], baseline_bytes=result["baseline_bytes"],
                  peak_mib=result["peak_bytes"] / MIB, baseline_mib=result["baseline_bytes"] / MIB)
    record["seconds_per_frame"] = record["median_s"] / frames
    return record


def run_settings(pipe, args, method: str) -> dict:
    """What every record of the run holds besides the environment: the model and every sampling setting."""
    t2vz = text2video_zero_settings(args.steps, args.height // args.vae_factor, args.width // args.vae_factor)
    settings = {"model": model_label(args), "model_class": type(pipe).__name__, "prompt": args.prompt,
                "height": args.height, "width": args.width, "steps": args.steps, "guidance_scale": args.guidance_scale,
                "dtype": args.dtype, "noise_lambda": NOISE_LAMBDA, "momentum": MOMENTUM, "search": SEARCH,
                "seed": args.seed, "repeats": args.repeats, "chunk": args.chunk, "output_type": "latent",
                "text2video_zero": t2vz, "memory_method": method, "machine_note": args.note}
    settings["settings_label"] = (
        f"{settings['model_class']} from {settings['model']}: {args.height}x{args.width}, {args.steps} DDIM steps, "
        f"guidance {args.guidance_scale:g}, {args.dtype}, latents only (no decode); median of {args.repeats} timed "
        f"video(s) per point after a warm-up video. Peak memory: {method}." + (f" {args.note}" if args.note else ""))
    return settings


def run_points(args, measure, environment: dict, settings: dict) -> list[dict]:
    """Measure every point in order (short videos first), saving each record as soon as it is measured."""
    points = [(impl, frames, chunk) for frames in sorted(set(args.frames)) for impl in args.impls
              for chunk in (None, args.chunk)]
    start, records, failed = time.perf_counter(), [], set()
    for impl, frames, chunk in points:
        remaining = None if args.time_cap is None else args.time_cap - (time.perf_counter() - start)
        if (impl, chunk) in failed:
            result = {"error": "skipped: a shorter video of this impl and chunking failed"}
        elif remaining is not None and remaining <= 0:
            result = {"error": f"skipped: --time-cap of {args.time_cap:g} s reached"}
        else:
            result = measure(args, impl, frames, chunk, remaining)
            if "error" in result and not result["error"].startswith("cut off"):
                failed.add((impl, chunk))
        record = point_record(environment, settings, impl, frames, chunk, result)
        save_results(args.out, [record])
        records.append(record)
        outcome = record.get("error") or (f"{record['median_s']:.3f} s ({record['seconds_per_frame'] * 1e3:.1f} "
                                          f"ms/frame), peak {record['peak_mib']:.1f} MiB")
        print(f"{impl:16s} {record['chunking']:20s} {frames:4d} frames: {outcome}", flush=True)
    return records


def measured_series(records: list[dict]) -> dict:
    """(impl, frame_chunk) -> the measured records of that series, by frame count."""
    series: dict = {}
    for record in records:
        if "median_s" in record:
            series.setdefault((record["impl"], record["frame_chunk"]), []).append(record)
    return {key: sorted(rows, key=lambda r: r["frames"]) for key, rows in series.items()}


def linear_fit(frames, seconds) -> dict:
    """Least-squares seconds = intercept + slope * frames, its R², and the per-frame time ratio longest/shortest."""
    frames, seconds = np.asarray(frames, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    slope, intercept = np.polyfit(frames, seconds, 1)
    residual = float(np.sum((seconds - (intercept + slope * frames)) ** 2))
    total = float(np.sum((seconds - seconds.mean()) ** 2))
    return {"seconds_per_frame_fit": float(slope), "intercept_s": float(intercept),
            "r2": 1.0 - residual / total if total > 0 else 1.0,
            "per_frame_ratio": float((seconds[-1] / frames[-1]) / (seconds[0] / frames[0]))}


def verdict(met: bool | None) -> str:
    """The table's word for a goal: met, NOT met, or not evaluated (too few measured points)."""
    return "not evaluated" if met is None else "met" if met else "NOT met"


def goal_record(environment: dict, settings: dict, goal: str, impl: str, chunking: str, met: bool | None,
                **fields) -> dict:
    """One goal's record (benchmark ``scaling_goals``): what was measured, the target, the verdict."""
    return make_record(environment, **settings, benchmark="scaling_goals", goal=goal, impl=impl, chunking=chunking,
                       met=met, verdict=verdict(met), **fields)


def linearity_goals(environment: dict, settings: dict, series: dict) -> list[dict]:
    """Time linear in frames, per (impl, chunking): R² of a straight-line fit and the per-frame time ratio."""
    goals = []
    for rows in series.values():
        if len(rows) < 3:
            goals.append(goal_record(environment, settings, "time linear in frames", *label_of(rows[0]), None,
                                     value_label=f"{len(rows)} lengths measured (3 needed)", target=""))
            continue
        fit = linear_fit([r["frames"] for r in rows], [r["median_s"] for r in rows])
        met = fit["r2"] >= LINEAR_MIN_R2 and fit["per_frame_ratio"] <= LINEAR_MAX_PER_FRAME_RATIO
        label = (f"{fit['seconds_per_frame_fit'] * 1e3:.4g} ms/frame + {fit['intercept_s']:.3g} s, "
                 f"R² {fit['r2']:.4f}; s/frame at {rows[-1]['frames']} / at {rows[0]['frames']} frames: "
                 f"{fit['per_frame_ratio']:.3g}x")
        goals.append(goal_record(environment, settings, "time linear in frames", *label_of(rows[0]), met,
                                 value_label=label,
                                 target=f"R² >= {LINEAR_MIN_R2}, per-frame ratio <= {LINEAR_MAX_PER_FRAME_RATIO}",
                                 detail="least squares over every measured length", **fit))
    return goals


def memory_goals(environment: dict, settings: dict, series: dict, chunk: int, impls) -> list[dict]:
    """Per impl: chunked peak of the longest video against one chunk's, and the unchunked/chunked sanity check."""
    goals = []
    for impl in impls:
        chunked, unchunked = series.get((impl, chunk), []), series.get((impl, None), [])
        one = next((r for r in chunked if r["frames"] == chunk), None)
        longest = chunked[-1] if chunked and chunked[-1]["frames"] > chunk else None
        ratio = longest["peak_bytes"] / one["peak_bytes"] if one and longest and one["peak_bytes"] > 0 else None
        goals.append(goal_record(
            environment, settings, "chunked peak of the longest video vs one chunk", impl, chunking(impl, chunk),
            None if ratio is None else ratio <= CHUNK_PEAK_MAX_RATIO, peak_ratio=ratio,
            value_label="" if ratio is None else (f"{longest['peak_mib']:.4g} MiB at {longest['frames']} frames / "
                                                  f"{one['peak_mib']:.4g} MiB at {chunk} = {ratio:.3g}x"),
            target=f"<= {CHUNK_PEAK_MAX_RATIO}x", detail="" if ratio else f"needs chunked points at {chunk} "
                                                                       f"frames and longer"))
        both = {r["frames"]: r for r in unchunked if r["frames"] > chunk}
        pair = next(((both[r["frames"]], r) for r in reversed(chunked) if r["frames"] in both), None)
        ratio = pair[0]["peak_bytes"] / pair[1]["peak_bytes"] if pair and pair[1]["peak_bytes"] > 0 else None
        met = None if ratio is None else ratio >= SANITY_MIN_RATIO
        goals.append(goal_record(
            environment, settings, "sanity: memory sees activations (unchunked vs chunked peak)", impl,
            f"none vs {chunking(impl, chunk)}", met, peak_ratio=ratio, target=f">= {SANITY_MIN_RATIO}x",
            value_label="" if ratio is None else (f"{pair[0]['peak_mib']:.4g} / {pair[1]['peak_mib']:.4g} MiB at "
                                                  f"{pair[0]['frames']} frames = {ratio:.3g}x"),
            detail=("" if met else "the peaks do not grow with the activations: do not trust them" if met is False
                    else f"needs unchunked and chunked points longer than {chunk} frames")))
    return goals


def speed_goals(environment: dict, settings: dict, series: dict, chunk: int) -> list[dict]:
    """ZS² (chunked, then unchunked) against the Text2Video-Zero chunk recipe: time ratio at every length."""
    recipe = {r["frames"]: r for r in series.get(("text2video_zero", chunk), [])}
    goals = []
    for ours in (chunk, None):
        rows = [r for r in series.get(("zs2", ours), []) if r["frames"] in recipe]
        ratios = {r["frames"]: r["median_s"] / recipe[r["frames"]]["median_s"] for r in rows}
        goals.append(goal_record(
            environment, settings, "ZS² faster than the Text2Video-Zero chunk recipe at every length", "zs2",
            chunking("zs2", ours),
            all(v < 1 for v in ratios.values()) if ratios else None,
            time_ratios={str(k): v for k, v in ratios.items()}, target="time ratio < 1 at every length",
            value_label="time zs2 / recipe: " + ", ".join(f"{k}: {v:.3g}x" for k, v in ratios.items()),
            detail=f"against text2video_zero, recipe of {chunk} frames per call"))
    return goals


def evaluate_goals(environment: dict, settings: dict, records: list[dict], chunk: int, impls) -> list[dict]:
    """Every goal and the sanity check, from the measured points (recorded, met or not)."""
    series = measured_series(records)
    goals = linearity_goals(environment, settings, series) + memory_goals(environment, settings, series, chunk, impls)
    if set(IMPLS) <= set(impls):
        goals += speed_goals(environment, settings, series, chunk)
    return goals


def plot(records: list[dict], path: Path, title: str) -> Path | None:
    """Time and peak memory against frames, one line per (impl, chunking), as a PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib; the JSON and markdown are written)")
        return None
    series = measured_series(records)
    if not series:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = {"zs2": "tab:blue", "text2video_zero": "tab:orange"}
    for (impl, chunk), rows in series.items():
        style = dict(color=colors.get(impl), linestyle="-" if chunk is None else "--", marker="o",
                     label=f"{impl}, {rows[0]['chunking']}")
        frames = [r["frames"] for r in rows]
        axes[0].plot(frames, [r["median_s"] for r in rows], **style)
        axes[1].plot(frames, [max(r["peak_mib"], 1e-3) for r in rows], **style)
    lengths = sorted({r["frames"] for rows in series.values() for r in rows})
    for axis, label in zip(axes, ("wall time of one video (s)", "peak memory over the loaded model (MiB)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(lengths, [str(n) for n in lengths])
        axis.set_xlabel("frames")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=9, wrap=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run(args) -> tuple[list[dict], list[dict], dict]:
    """Load the model, measure every point (saved as measured), then evaluate and save the goals."""
    preload_libraries()  # quiet too: no per-call warnings, no loading bars
    device = torch.device(args.device)
    environment = run_environment("scaling", device)
    pipe = load_model(args)
    args.vae_factor = pipe.vae_scale_factor
    size = pipe.unet.config.sample_size
    args.height, args.width = (size, size) if isinstance(size, int) else tuple(size)
    args.height, args.width = args.height * args.vae_factor, args.width * args.vae_factor
    measure = InProcessMeasurer(pipe) if device.type == "cuda" else FreshProcessMeasurer()
    settings = run_settings(pipe, args, measure.method)
    del pipe  # on CPU each point loads its own; on CUDA the measurer holds it
    records = run_points(args, measure, environment, settings)
    goals = evaluate_goals(environment, settings, records, args.chunk, args.impls)
    save_results(args.out, goals)
    return records, goals, settings


def parse_args(argv=None):
    """The command line, every number checked before any work (smoke and device defaults filled in)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", default=None, help="pipeline folder or hub id (default: the embedded digits model)")
    model.add_argument("--random-model", choices=STYLES, default=None,
                       help="a random-weight pipeline of this architecture at its real size (e.g. sd15 on a GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="default fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--frames", type=int, nargs="+", default=None,
                        help="video lengths (default 8 16 32 64 128; --smoke: 2 4)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="frames per chunk: ZS²'s frame_chunk, Text2Video-Zero's frames per call (default 8; "
                             "--smoke: 2)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 10; --smoke: 2)")
    parser.add_argument("--repeats", type=int, default=1, help="timed videos per point (default 1)")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS), help="default: both")
    parser.add_argument("--time-cap", type=float, default=None,
                        help="seconds for the whole run: points past it are skipped (error records), a point "
                             "running over it is cut off on CPU; each point is saved as soon as it is measured")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--prompt", default="a handwritten digit 3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="a remark stored in every record (e.g. 'shared machine')")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--smoke", action="store_true", help="2 and 4 frames, chunk 2, 2 steps: checks the script")
    add_output_argument(parser, "scaling")
    args = parser.parse_args(argv)
    device = checked_device(parser, args.device)
    # Text2Video-Zero needs t0 < t1 < steps, so at least 2 steps.
    refuse_out_of_range(parser, args, {
        "frames": (1, math.inf), "chunk": (2, math.inf), "steps": (2, math.inf), "repeats": (1, math.inf),
        "time_cap": (0, math.inf), "guidance_scale": (0, math.inf), "seed": (0, SEED_LIMIT - 1)})
    if device.type == "cpu" and not Path("/proc/self/clear_refs").exists():
        parser.error("--device cpu: peak memory is read from /proc/self (Linux only)")
    defaults = {"frames": [2, 4], "chunk": 2, "steps": 2} if args.smoke else {
        "frames": [8, 16, 32, 64, 128], "chunk": 8, "steps": 10}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.device = str(device)
    args.dtype = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    args.out = args.out or default_output("scaling", device)
    return args


def main(argv=None) -> int:
    """Run the benchmark, print every point and goal, write the JSON, markdown and PNG."""
    args = parse_args(argv)
    try:
        records, goals, settings = run(args)
    except FileNotFoundError as error:  # the embedded model not built yet, or a wrong --model
        print(f"bench_scaling.py: {error}", file=sys.stderr)
        return 2
    for goal in goals:
        print(f"{goal['verdict']:13s} {goal['goal']} [{goal['impl']}, {goal['chunking']}]: {goal['value_label']}")
    png = None if args.no_plot else plot(records, args.out.with_suffix(".png"), settings["settings_label"])
    print(f"wrote {len(records) + len(goals)} records to {args.out} and {args.out.with_suffix('.md')}"
          + (f"; plot {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
elif __name__ in (Path(__file__).stem, "__mp_main__"):  # the fork server or its children (FreshProcessMeasurer)
    preload_libraries()
