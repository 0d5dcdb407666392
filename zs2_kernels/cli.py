"""Command line: ``zs2-sample`` (also ``python python/sample.py``) makes a video with ZS²."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ._checks import DTYPE_NAMES, SEARCH_MODES, SHORT_DTYPE_NAMES, dtype_from_name

MIN_WRITTEN_SIDE = 256  # small models (the embedded one makes 32x32) are upscaled so the video is viewable


def sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zs2-sample", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder or hub id (default: the embedded digits model)")
    parser.add_argument("--prompt", action="append", required=True, help="text prompt; repeat for several videos")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale (<= 1: none)")
    parser.add_argument("--lambda", dest="noise_lambda", type=float, default=0.01, help="KL target of the noise chain")
    parser.add_argument("--momentum", type=float, default=0.98, help="mu of temporal momentum attention")
    parser.add_argument("--search", choices=SEARCH_MODES, default="exact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None, help="UNet frames per call (bounds memory)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=[*DTYPE_NAMES, *SHORT_DTYPE_NAMES], default=None,
                        help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--out", required=True, help=".gif, .mp4, or a folder name for PNG frames")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _output_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{index}{out.suffix}") for index in range(count)]


def sample_main(argv=None) -> int:
    import torch

    from .sampler import sample_video
    from .video_io import check_output_path, write_video

    args = sample_parser().parse_args(argv)
    try:
        out = check_output_path(args.out)
    except (ValueError, OSError) as error:
        print(f"zs2-sample: error: --out: {error}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype_from_name(args.dtype or ("float16" if device.startswith("cuda") else "float32"))
    try:
        result = sample_video(args.model, args.prompt, negative_prompt=args.negative_prompt, num_frames=args.frames,
                              height=args.height, width=args.width, num_inference_steps=args.steps,
                              guidance_scale=args.guidance, noise_lambda=args.noise_lambda, momentum=args.momentum,
                              search=args.search, frame_chunk=args.chunk, seed=args.seed, device=device, dtype=dtype,
                              progress=not args.no_progress)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"zs2-sample: error: {error}", file=sys.stderr)
        return 2
    videos = result.frames
    upscale = max(1, -(-MIN_WRITTEN_SIDE // max(videos.shape[2:4])))
    for path, video in zip(_output_paths(out, len(videos)), videos):
        write_video(np.asarray(video), path, fps=args.fps, upscale=upscale)
        print(f"wrote {path} ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]} px, upscaled x{upscale})")
    stats = result.stats
    summary = {key: stats[key] for key in ("backend", "device", "dtype", "search", "noise_lambda") if key in stats}
    for key in ("achieved_kl", "alpha", "correlation"):
        if key in stats:
            values = np.asarray(stats[key], dtype=np.float64)
            summary[f"{key}_mean"] = round(float(values.mean()), 6) if values.size else None
    summary["seconds"] = {k: round(v, 3) for k, v in stats["timings"].items()}
    print("noise statistics:", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(sample_main())
