"""The README's prompt-travel example: one 48-frame video of the embedded model whose prompt travels from "a
handwritten digit 1" (frame 0) to "a handwritten digit 7" (frame 47), beside a hard cut at frame 24.

    python python/travel_example.py            # -> benchmarks/results/prompt-travel-1-to-7.gif (travel | cut)

The travelling video from the command line:
    zs2-sample --prompt-at "0:a handwritten digit 1" --prompt-at "47:a handwritten digit 7" --frames 48 --out t.gif
"""

import argparse
from pathlib import Path

import numpy as np

import zs2_kernels
from zs2_kernels.video_io import write_video

ONE, SEVEN = "a handwritten digit 1", "a handwritten digit 7"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "benchmarks" / "results")
    args = parser.parse_args()
    common = dict(num_frames=48, num_inference_steps=20, guidance_scale=4.0, seed=1, frame_chunk=16)
    pipe = zs2_kernels.load_pipeline(None, progress=False)
    travel = zs2_kernels.sample_video(pipe, {0: ONE, 47: SEVEN}, **common).frames[0]
    cut = zs2_kernels.sample_video(pipe, {0: ONE, 23: ONE, 24: SEVEN}, **common).frames[0]
    path = write_video(np.concatenate([travel, cut], axis=2), args.out / "prompt-travel-1-to-7.gif", fps=8,
                       upscale=4)
    print(f"wrote {path} (prompt travel | hard cut at frame 24)")


if __name__ == "__main__":
    main()
