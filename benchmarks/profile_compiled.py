"""Where compiled ZS² spends its time against compiled plain sampling: torch.profiler tables of one sampling call
with one denoising step (one compiled UNet call, plus prompt encoding, the initial noise and decoding) per variant.

    python benchmarks/profile_compiled.py --out benchmarks/results/compiled-profile-cpu.md

Each variant is compiled and warmed up first (two calls), then profiled over ``--calls`` calls; the table lists the
operators with the most self time. Run on a quiet machine; it writes Markdown only (the timed comparison is
bench_sampler.py --compile).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

VARIANTS = {"plain_compiled": dict(dependency_noise=False, momentum_attention=False), "zs2_compiled": {}}


def profile(pipe, options: dict, calls: int, frames: int, rows: int) -> str:
    """The profiler's table (self CPU time, top ``rows``) of ``calls`` one-step calls after two warm-up calls."""
    import zs2_kernels

    def call():
        zs2_kernels.sample_video(pipe, "a handwritten digit 3", num_frames=frames, num_inference_steps=1, seed=0,
                                 progress=False, compile=True, **options)

    call()
    call()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(calls):
            call()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    import zs2_kernels

    pipe = zs2_kernels.load_pipeline(None, progress=False)
    lines = ["# Compiled sampling profiles (CPU)", "",
             f"Embedded model, {args.frames} frames, one DDIM step per call, guidance 7.5, {args.calls} calls after "
             f"two warm-up calls; torch {torch.__version__}, {torch.get_num_threads()} thread(s) "
             f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}). Self CPU time per operator.", ""]
    for name, options in VARIANTS.items():
        lines += [f"## {name}", "", "```", profile(pipe, options, args.calls, args.frames, args.rows), "```", ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
