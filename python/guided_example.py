"""The README's guided example: a held-out handwritten 7 sliding and turning over 12 frames steers a ZS² video of
the embedded model through its shipped ControlNet. Writes the guide GIF and the guide beside the output.

    python python/guided_example.py            # -> benchmarks/results/guided-guide.gif, guided-digit-7.gif

The same from the command line, with the guide written here:
    zs2-sample --prompt "a handwritten digit seven" --control-video benchmarks/results/guided-guide.gif \\
        --digit-condition --out guided.gif
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import zs2_kernels
from zs2_kernels.embedded import digit_condition
from zs2_kernels.evaluation.digits import load_digit_split
from zs2_kernels.video_io import write_video

FRAMES = 12


def sliding_digit(image: torch.Tensor) -> torch.Tensor:
    """[FRAMES, 1, 32, 32] in [0, 1]: ``image`` moving from left to right while turning by 30 degrees."""
    t = torch.linspace(0, 1, FRAMES)
    angle, shift = (t - 0.5) * math.radians(30), (t - 0.5) * 0.6
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros(FRAMES)
    theta = torch.stack([torch.stack([cos, -sin, -shift], 1), torch.stack([sin, cos, zero], 1)], 1)
    frames = image.expand(FRAMES, -1, -1, -1)
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    return F.grid_sample(frames, grid, padding_mode="zeros", align_corners=False)


def example_arguments(doc: str) -> argparse.Namespace:
    """--out (default benchmarks/results) and --steps (default 25), what the README's example scripts take."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "benchmarks" / "results")
    parser.add_argument("--steps", type=int, default=25)
    return parser.parse_args()


def main() -> None:
    args = example_arguments(__doc__)
    split = load_digit_split()
    seven = split.test_images[split.test_labels == 7][0:1] * 0.5 + 0.5  # held out: never seen in training
    guide = sliding_digit(seven)
    video = zs2_kernels.sample_video(None, "a handwritten digit seven", control_video=digit_condition(guide),
                                     num_inference_steps=args.steps, guidance_scale=4.0, seed=0).frames[0]
    guide_rgb = guide.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()
    write_video(guide_rgb, args.out / "guided-guide.gif", fps=6, upscale=8)
    write_video(np.concatenate([guide_rgb, video], axis=2), args.out / "guided-digit-7.gif", fps=6, upscale=8)
    print(f"wrote {args.out / 'guided-guide.gif'} and {args.out / 'guided-digit-7.gif'} (guide | ZS² video)")


if __name__ == "__main__":
    main()
