"""Throughput of the ZS² ops, ours side by side with the paper-style references, at real model shapes.

Ops:
  * ``momentum_update``: the EMA over frames behind temporal momentum attention, on the self-attention
    layer input of a real UNet, x [G, F, tokens, channels] with G = 2·B (classifier-free guidance).
  * ``dependency_noise_chain``: the whole initial-noise chain of F frames (per frame: batched KL check
    over R candidates, line stage, compose), latents [B, F, 4, h, w];
  * ``kl_sums``: the batched KL check alone (``zs2::kl_sums``: A, E and every C_r of R candidates).

Implementations (``impl`` in the records):
  * ``zs2``: ours through the public API (``backend="triton"`` on CUDA, the default ``"torch"`` path on
    CPU). For the chain this includes drawing the candidates (in-kernel Philox on Triton, a CPU
    ``torch.Generator`` on "torch").
  * ``zs2_predrawn`` (chain only): our ops fed the same pre-drawn candidates as the literal reference, so
    the comparison with it excludes random-number generation.
  * ``cuda``: the CUDA C++ library backend (GPU only, when built); pre-drawn candidates for the chain.
  * ``reference_loop`` / ``reference_matrix``: the eager per-frame loop and the paper's lower-triangular
    matrix form of the EMA; ``reference_literal``: the paper's search as written (full-tensor KL per
    candidate and per line step, float64), and for ``kl_sums`` its random stage (one statistic per candidate).
  * ``compile_loop`` / ``compile_matrix`` / ``compile_literal``: ``torch.compile`` (dynamic shapes) of the
    same references, in a private temporary Inductor cache (cold-start compiles). The first call of each
    record (where any compile happens) is capped by ``--compile-timeout``; a timeout or compile failure
    becomes a record with an ``error`` field.

Bytes moved (analytic, the algorithm's minimum traffic, the same figure for every impl of an op, so
GB/s compares like with like; s = bytes per element):
  * EMA: 2·G·F·N·s (read x once, write y once; N = tokens·channels).
  * chain: B·D·4·(1 + (F-1)·(R+4)) (fp32; D = latent elements per frame): write frame 0, then per frame
    the KL check reads the previous frame and R candidates (R+1), compose reads the previous frame and
    the chosen candidate (2) and writes the new frame (1). ``zs2`` on Triton regenerates its candidates
    instead of reading them, so its effective GB/s can exceed the copy roofline.
  * kl_sums: B·D·4·(R+1) (fp32): the frame and the R candidates read once.

The roofline reference is ``dst.copy_(src)`` of the same number of bytes moved (read + write), measured
in the same run with the same timer (``copy_gbps``; ``pct_of_copy_bw`` = GB/s / copy GB/s).
Timing: ``triton.testing.do_bench`` median/p20/p80 on CUDA; wall-clock median/p20/p80 over
``--repeats`` calls after one warm-up call on CPU.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch

import zs2_kernels
from zs2_kernels.ops import cuda_library, resolve_backend
from zs2_kernels.ops.momentum import reference as momentum_reference
from zs2_kernels.ops.noise import compose_op, kl_sums_op, search_frame_op
from zs2_kernels.ops.noise import reference as noise_reference

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

MOMENTUM = 0.98
NOISE_LAMBDA = 0.01
SEARCH = "exact"
CANDIDATES = 10
LINE_STEPS = 15

#: Self-attention (attn1) layer inputs, tokens x channels: SD1.5 at 512² and SDXL at 1024².
LAYERS = {
    "sd15-512": [(4096, 320), (1024, 640), (256, 1280), (64, 1280)],
    "sdxl-1024": [(4096, 640), (1024, 1280)],
}
#: Initial-noise latents per frame: SD1.5 at 512² and SDXL at 1024².
LATENTS = [(4, 64, 64), (4, 128, 128)]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    """One (op, shape, dtype) to measure every implementation on."""

    op: str
    shape: tuple[int, ...]
    dtype: str
    label: str
    fields: dict


def momentum_cases(layers, batches, frames, dtypes) -> list[Case]:
    """x [2·B, F, tokens, channels] for every layer, batch, frame count and dtype."""
    cases = []
    for (model, sizes), batch, num_frames, dtype in itertools.product(layers, batches, frames, dtypes):
        for tokens, channels in sizes:
            shape = (2 * batch, num_frames, tokens, channels)
            cases.append(Case("momentum_update", shape, dtype, f"{model} {tokens}x{channels} B={batch} F={num_frames}",
                              {"model_layer": f"{model}:{tokens}x{channels}", "batch": batch, "guidance_groups":
                               2 * batch, "frames": num_frames, "momentum": MOMENTUM}))
    return cases


def chain_cases(latents, batches, frames) -> list[Case]:
    """Noise chains [B, F, *latent] in float32 (the chain is computed in fp32 whatever the output dtype).

    Batch-major order: a dynamic-shape compile specialises B = 1, so all B = 1 shapes share one compile.
    """
    cases = []
    for batch, latent, num_frames in itertools.product(batches, latents, frames):
        label = f"{'x'.join(map(str, latent))} B={batch} F={num_frames}"
        cases.append(Case("dependency_noise_chain", (batch, num_frames, *latent), "fp32", label,
                          {"latent": list(latent), "batch": batch, "frames": num_frames, "noise_lambda": NOISE_LAMBDA,
                           "search": SEARCH, "candidates": CANDIDATES, "line_steps": LINE_STEPS}))
    return cases


def kl_cases(latents, batches) -> list[Case]:
    """The batched KL check alone: A and every C_r of R candidates [R, B, *latent] against one frame, float32."""
    return [Case("kl_sums", (CANDIDATES, batch, *latent), "fp32",
                 f"{'x'.join(map(str, latent))} B={batch} R={CANDIDATES}",
                 {"latent": list(latent), "batch": batch, "candidates": CANDIDATES})
            for batch, latent in itertools.product(batches, latents)]


def build_cases(preset: str, dtypes: list[str]) -> list[Case]:
    """The shapes of a preset: "full" (GPU), "cpu" (a subset that finishes in minutes), "smoke" (seconds)."""
    if preset == "smoke":
        return (momentum_cases([("tiny", [(16, 8)])], [1], [4], dtypes)
                + chain_cases([(4, 8, 8)], [1], [4]) + kl_cases([(4, 8, 8)], [1]))
    if preset == "cpu":
        return (momentum_cases([("sd15-512", LAYERS["sd15-512"])], [1], [8, 16], dtypes)
                + momentum_cases([("sdxl-1024", [(1024, 1280)])], [1], [16], dtypes)
                + chain_cases(LATENTS, [1], [16]) + chain_cases(LATENTS[:1], [4], [16]) + kl_cases(LATENTS, [1]))
    return (momentum_cases(list(LAYERS.items()), [1, 4], [8, 16, 64], dtypes)
            + chain_cases(LATENTS, [1, 4], [16]) + kl_cases(LATENTS, [1, 4]))


def bytes_moved(case: Case) -> int:
    """Analytic minimum traffic of the op (module docstring)."""
    if case.op == "momentum_update":
        return 2 * math.prod(case.shape) * DTYPES[case.dtype].itemsize
    if case.op == "kl_sums":
        count, batch, *latent = case.shape
        return batch * math.prod(latent) * 4 * (count + 1)
    batch, num_frames, *latent = case.shape
    return batch * math.prod(latent) * 4 * (1 + (num_frames - 1) * (CANDIDATES + 4))


# --------------------------------------------------------------------------- implementations
def chain_from_candidates(first, candidates, backend):
    """Our frame chain (``dependency_noise``'s loop over the zs2 ops) on pre-drawn candidates [R, B, D] per frame.

    Same inputs as ``reference.dependency_noise_literal``, so the comparison excludes random-number generation.
    """
    frames = [first]
    for frame, frame_candidates in enumerate(candidates, start=1):
        count = frame_candidates.shape[0]
        index, coefficients, _ = search_frame_op(frames[-1], frame_candidates, count, None, frame, NOISE_LAMBDA,
                                                  SEARCH, LINE_STEPS, backend)
        frames.append(compose_op(frames[-1], frame_candidates, index, coefficients, count, None, frame, backend))
    return torch.stack(frames, dim=1)


def literal_chain(search_frame, first, candidates):
    """``reference.dependency_noise_literal``'s chain with a given per-frame search (a compiled one): [B, F, D] f64."""
    frames = [first.double()]
    for frame_candidates in candidates:
        frames.append(search_frame(frames[-1], frame_candidates, NOISE_LAMBDA, SEARCH, LINE_STEPS)[2])
    return torch.stack(frames, dim=1)


@dataclass(frozen=True)
class Impl:
    """One implementation of an op: ``bind(inputs)`` returns the zero-argument call that is timed."""

    name: str
    backend: str
    bind: Callable[[dict], Callable[[], object]]
    compiled: bool = False
    note: str | None = None


def momentum_impls(device: torch.device, ours: str, compile_fn) -> list[Impl]:
    """Ours, the CUDA C++ backend (when usable), the eager loop and matrix forms, and their compiled versions."""
    impls = [Impl("zs2", ours, lambda a: lambda: zs2_kernels.momentum_update(a["x"], MOMENTUM, backend=ours))]
    if device.type == "cuda" and cuda_library.is_available():
        impls.append(Impl("cuda", "cuda", lambda a: lambda: zs2_kernels.momentum_update(a["x"], MOMENTUM,
                                                                                         backend="cuda")))
    impls += [
        Impl("reference_loop", "eager", lambda a: lambda: momentum_reference.momentum_update(a["x"], MOMENTUM)),
        Impl("reference_matrix", "eager", lambda a: lambda: momentum_reference.momentum_matrix_form(a["x"], MOMENTUM)),
    ]
    matrix, loop = compile_fn(momentum_reference.momentum_matrix_form), compile_fn(momentum_reference.momentum_update)
    impls += [Impl("compile_matrix", "inductor", lambda a: lambda: matrix(a["x"], MOMENTUM), compiled=True),
              Impl("compile_loop", "inductor", lambda a: lambda: loop(a["x"], MOMENTUM), compiled=True)]
    return impls


def chain_impls(device: torch.device, ours: str, compile_fn) -> list[Impl]:
    """Ours (public API, and on pre-drawn candidates), the CUDA C++ backend, the literal reference and its compile."""
    rng = "in-kernel Philox candidates" if ours == "triton" else "candidates drawn from a CPU torch.Generator"

    def public(a):
        return lambda: zs2_kernels.dependency_noise(a["shape"], NOISE_LAMBDA, search=SEARCH,
                                                    random_candidates=CANDIDATES, line_steps=LINE_STEPS, seed=0,
                                                    device=device, backend=ours)

    impls = [Impl("zs2", ours, public, note=f"public API, includes RNG ({rng})"),
             Impl("zs2_predrawn", ours, lambda a: lambda: chain_from_candidates(a["first"], a["candidates"], ours),
                  note="pre-drawn candidates")]
    if device.type == "cuda" and cuda_library.is_available():
        impls.append(Impl("cuda", "cuda", lambda a: lambda: chain_from_candidates(a["first"], a["candidates"],
                                                                                  "cuda"), note="pre-drawn candidates"))
    search_frame = compile_fn(noise_reference.search_frame_literal)
    impls += [
        Impl("reference_literal", "eager", lambda a: lambda: noise_reference.dependency_noise_literal(
            a["first"], a["candidates"], NOISE_LAMBDA, SEARCH, LINE_STEPS), note="float64, per-candidate loops"),
        Impl("compile_literal", "inductor", lambda a: lambda: literal_chain(search_frame, a["first"], a["candidates"]),
             compiled=True, note="torch.compile of the per-frame literal search"),
    ]
    return impls


def literal_kl_check(prev, candidates):
    """The paper's random stage as written: one full-tensor statistic per candidate, [B, R] float32."""
    return torch.stack([noise_reference.kl_statistic(candidate, prev) for candidate in candidates], dim=1)


def kl_impls(device: torch.device, ours: str, compile_fn) -> list[Impl]:
    """The batched KL check (``zs2::kl_sums``) against the per-candidate statistic of the paper, and its compile."""
    impls = [Impl("zs2", ours, lambda a: lambda: kl_sums_op(a["prev"], a["candidates"], ours))]
    if device.type == "cuda" and cuda_library.is_available():
        impls.append(Impl("cuda", "cuda", lambda a: lambda: kl_sums_op(a["prev"], a["candidates"], "cuda")))
    compiled = compile_fn(literal_kl_check)
    impls += [Impl("reference_literal", "eager", lambda a: lambda: literal_kl_check(a["prev"], a["candidates"]),
                   note="one full-tensor kl_div per candidate"),
              Impl("compile_literal", "inductor", lambda a: lambda: compiled(a["prev"], a["candidates"]),
                   compiled=True)]
    return impls


#: The paper-style eager baseline each op's speedups are measured against.
REFERENCE_IMPL = {"momentum_update": "reference_matrix", "dependency_noise_chain": "reference_literal",
                  "kl_sums": "reference_literal"}


def make_inputs(case: Case, device: torch.device) -> dict:
    """Seeded inputs of a case (pre-drawn chain candidates included), drawn on the device: the largest are GBs."""
    generator = torch.Generator(device=device).manual_seed(0)
    if case.op == "momentum_update":
        return {"x": torch.randn(case.shape, generator=generator, device=device, dtype=DTYPES[case.dtype])}
    if case.op == "kl_sums":
        count, batch, *latent = case.shape
        dim = math.prod(latent)
        return {"prev": torch.randn(batch, dim, generator=generator, device=device),
                "candidates": torch.randn(count, batch, dim, generator=generator, device=device)}
    batch, num_frames, *latent = case.shape
    dim = math.prod(latent)
    return {"shape": case.shape, "first": torch.randn(batch, dim, generator=generator, device=device),
            "candidates": [torch.randn(CANDIDATES, batch, dim, generator=generator, device=device)
                           for _ in range(num_frames - 1)]}


# --------------------------------------------------------------------------- timing
class CompileTimeout(BaseException):
    """Raised by the alarm inside a compiling call; a BaseException so compiler code does not swallow it."""


def call_with_timeout(fn: Callable[[], object], seconds: float, sync: Callable[[], None]) -> float:
    """Run ``fn`` once (it may compile) under a SIGALRM cap; returns its wall time in seconds."""
    def expire(signum, frame):
        raise CompileTimeout(f"compile exceeded the {seconds:g} s cap (--compile-timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Timer:
    """Median/p20/p80 in milliseconds: ``do_bench`` on CUDA, wall clock over repeats after a warm-up on CPU."""

    def __init__(self, device: torch.device, repeats: int):
        self.device = device
        self.repeats = repeats

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def measure(self, fn: Callable[[], object], repeats: int | None = None) -> dict:
        if self.device.type == "cuda":
            from triton.testing import do_bench

            median, p20, p80 = do_bench(fn, quantiles=[0.5, 0.2, 0.8])
            return {"median_ms": median, "p20_ms": p20, "p80_ms": p80, "timer": "triton.testing.do_bench"}
        fn()
        samples = []
        for _ in range(repeats or self.repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        seconds = summarize_seconds(samples)
        return {"median_ms": 1e3 * seconds["median_s"], "p20_ms": 1e3 * seconds["p20_s"],
                "p80_ms": 1e3 * seconds["p80_s"], "timer": f"wall-clock, {len(samples)} repeats after 1 warm-up"}


def copy_gbps(timer: Timer, total_bytes: int, cache: dict) -> float:
    """GB/s of ``dst.copy_(src)`` moving ``total_bytes`` (half read, half written), measured once per size."""
    if total_bytes not in cache:
        src = torch.empty(max(total_bytes // 2, 1), dtype=torch.uint8, device=timer.device).random_(0, 255)
        dst = torch.empty_like(src)
        cache[total_bytes] = 2 * src.numel() / (timer.measure(lambda: dst.copy_(src))["median_ms"] * 1e6)
        del src, dst
    return cache[total_bytes]


# --------------------------------------------------------------------------- driver
def measure_impl(impl: Impl, inputs: dict, total_bytes: int, timer: Timer, args, copy_cache: dict) -> dict:
    """Timing fields of one impl on one case; raises when it fails (the caller records the error)."""
    fn = impl.bind(inputs)
    fields = {}
    if impl.compiled:
        try:
            fields["first_call_s"] = call_with_timeout(fn, args.compile_timeout, timer.sync)
        except (Exception, CompileTimeout) as error:
            raise CompileFailed(f"{type(error).__name__}: {error}") from None
    slow_reference = impl.backend == "eager" or impl.compiled
    fields.update(timer.measure(fn, args.reference_repeats if slow_reference else None))
    fields["gbps"] = total_bytes / (fields["median_ms"] / 1e3) / 1e9
    fields["copy_gbps"] = copy_gbps(timer, total_bytes, copy_cache)
    fields["pct_of_copy_bw"] = 100 * fields["gbps"] / fields["copy_gbps"]
    return fields


def allow_recompiles() -> None:
    """Room for one compile per dtype and frame count, and an error (not a silent eager fallback) beyond it."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # older torch has only the second name
        if hasattr(config, name):
            setattr(config, name, 256)
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True


class CompileFailed(RuntimeError):
    """torch.compile of a reference timed out or failed; later shapes of the same impl are skipped."""


def run(args) -> list[dict]:
    """Measure every case; each case's records are appended to ``args.out`` as soon as they exist (a run
    cut short keeps what it measured)."""
    device = torch.device(args.device)
    ours = resolve_backend(device)
    environment = run_environment("ops", device)
    timer = Timer(device, args.repeats)
    allow_recompiles()

    def compile_fn(fn):
        return torch.compile(fn, dynamic=True)

    impls = {"momentum_update": momentum_impls(device, ours, compile_fn),
             "dependency_noise_chain": chain_impls(device, ours, compile_fn),
             "kl_sums": kl_impls(device, ours, compile_fn)}
    records, copy_cache, gave_up = [], {}, {}
    for case in [c for c in build_cases(args.shapes, args.dtypes) if c.op in args.ops]:
        inputs = make_inputs(case, device)
        total_bytes = bytes_moved(case)
        case_records = []
        for impl in impls[case.op]:
            record = make_record(environment, op=case.op, impl=impl.name, backend=impl.backend,
                                 shape=list(case.shape), shape_label=case.label, dtype=case.dtype, **case.fields,
                                 bytes_moved=total_bytes, megabytes_moved=total_bytes / 1e6, note=impl.note)
            if (case.op, impl.name) in gave_up:
                record["error"] = f"skipped: its compile failed or timed out at {gave_up[case.op, impl.name]}"
            else:
                try:
                    record.update(measure_impl(impl, inputs, total_bytes, timer, args, copy_cache))
                except Exception as error:  # a failing impl is a result (an "error" record), not the end of the run
                    if isinstance(error, CompileFailed):
                        gave_up[case.op, impl.name] = case.label
                    record["error"] = (str(error).strip().splitlines() or [type(error).__name__])[0][:500]
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            case_records.append(record)
            status = record.get("error") or f"{record['median_ms']:.4g} ms, {record['gbps']:.3g} GB/s"
            print(f"{case.op:24s} {case.label:36s} {case.dtype:5s} {impl.name:18s} {status}", flush=True)
        add_speedups(case_records, REFERENCE_IMPL[case.op])
        save_results(args.out, case_records)
        records += case_records
        del inputs
    return records


def add_speedups(case_records: list[dict], reference_impl: str) -> None:
    """``speedup_vs_reference`` = reference median / impl median, within one (op, shape, dtype) of one run."""
    base = next((r for r in case_records if r["impl"] == reference_impl and "median_ms" in r), None)
    for record in case_records:
        record["reference_impl"] = reference_impl
        if base is not None and "median_ms" in record:
            record["speedup_vs_reference"] = base["median_ms"] / record["median_ms"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: cuda when available)")
    shapes = parser.add_mutually_exclusive_group()
    shapes.add_argument("--full-shapes", dest="shapes", action="store_const", const="full",
                        help="every model shape, batch and frame count (default on CUDA)")
    shapes.add_argument("--cpu-shapes", dest="shapes", action="store_const", const="cpu",
                        help="a subset that finishes in a few minutes on CPU (default on CPU)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 2 repeats: checks the script runs")
    parser.add_argument("--dtypes", default=None,
                        help="comma-separated subset of fp32,fp16,bf16 for momentum_update "
                             "(default: all on CUDA, fp32 on CPU)")
    parser.add_argument("--ops", default=",".join(REFERENCE_IMPL),
                        help=f"comma-separated subset of {','.join(REFERENCE_IMPL)} (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="CPU timed calls per record (default 5; smoke 2)")
    parser.add_argument("--reference-repeats", type=int, default=None,
                        help="CPU timed calls for the slow eager/compiled references (default 3; smoke 1)")
    parser.add_argument("--compile-timeout", type=float, default=None,
                        help="cap in seconds on a compiling call (default 600 on CUDA, 90 on CPU, 10 with --smoke)")
    add_output_argument(parser, "ops")
    args = parser.parse_args(argv)
    device = checked_device(parser, args.device)
    refuse_out_of_range(parser, args, {"repeats": (1, math.inf), "reference_repeats": (1, math.inf),
                                       "compile_timeout": (1e-3, math.inf)})
    on_cuda = device.type == "cuda"
    if args.smoke:
        args.shapes = "smoke"
    elif args.shapes is None:
        args.shapes = "full" if on_cuda else "cpu"
    args.dtypes = (args.dtypes or ("fp16,bf16,fp32" if on_cuda else "fp32")).split(",")
    unknown = [d for d in args.dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"--dtypes must be a comma-separated subset of {list(DTYPES)}, got {unknown}")
    args.ops = args.ops.split(",")
    unknown = [op for op in args.ops if op not in REFERENCE_IMPL]
    if unknown:
        parser.error(f"--ops must be a comma-separated subset of {list(REFERENCE_IMPL)}, got {unknown}")
    if args.repeats is None:
        args.repeats = 2 if args.smoke else 5
    if args.reference_repeats is None:
        args.reference_repeats = 1 if args.smoke else 3
    if args.compile_timeout is None:
        args.compile_timeout = 10.0 if args.smoke else (600.0 if on_cuda else 90.0)
    args.out = args.out or default_output("ops", device)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # A private Inductor cache: compile times are cold-start, and a compile cut short by the timeout
    # cannot leave half-written artifacts in the user's shared cache.
    with tempfile.TemporaryDirectory(prefix="zs2-bench-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        records = run(args)
    print(f"wrote {len(records)} records to {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
