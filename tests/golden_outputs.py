"""Golden outputs: hashes of the latents every sampling mode makes on the embedded model, one thread, CPU.

A refactor must not change a single bit of what the library computes. ``tests/test_golden_outputs.py`` compares
the hashes with ``tests/data/golden-latents.json``, recorded with the torch CI pins (2.13.0, CPU build); other torch
builds round differently and skip the comparison. After a change meant to alter outputs, record them again:

    python tests/golden_outputs.py --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

GOLDEN = Path(__file__).resolve().parent / "data" / "golden-latents.json"
#: The torch build the golden hashes were recorded with (CI's pin).
TORCH_BUILD = "2.13.0+cpu"
PROMPT = "a handwritten digit 3"
COMMON = dict(num_inference_steps=3, seed=0, output_type="latent", progress=False)


def moving_square(frames: int, size: int = 32) -> np.ndarray:
    """uint8 [F, size, size, 3]: a white square moving right, the guide and input video of the modes below."""
    video = np.zeros((frames, size, size, 3), np.uint8)
    for f in range(frames):
        video[f, 8:24, 4 + 3 * f:20 + 3 * f] = 255
    return video


def _video_mode(pipe) -> torch.Tensor:
    import zs2_kernels

    with zs2_kernels.video_mode(pipe, 4, seed=0):
        return pipe(prompt=[PROMPT] * 4, num_inference_steps=3, output_type="latent").images


def cases() -> dict:
    """name -> a function of the embedded pipeline returning the latents of that mode."""
    import zs2_kernels
    from zs2_kernels.embedded import digit_condition

    guide = digit_condition(torch.from_numpy(moving_square(4)).movedim(-1, 1).float() / 255)
    return {
        "text_to_video": lambda pipe: zs2_kernels.sample_video(pipe, PROMPT, num_frames=4, **COMMON).frames,
        "chunked": lambda pipe: zs2_kernels.sample_video(pipe, PROMPT, num_frames=5, frame_chunk=2, **COMMON).frames,
        "two_videos_paper_search": lambda pipe: zs2_kernels.sample_video(
            pipe, [PROMPT, "the number 7"], num_frames=3, search="paper", noise_lambda=0.1, momentum=0.5,
            **COMMON).frames,
        "guided": lambda pipe: zs2_kernels.sample_video(pipe, PROMPT, control_video=guide, **COMMON).frames,
        "image_to_video": lambda pipe: zs2_kernels.sample_video(pipe, PROMPT, image=moving_square(1)[0],
                                                                num_frames=4, **COMMON).frames,
        "video_to_video": lambda pipe: zs2_kernels.sample_video(pipe, PROMPT, video=moving_square(4), strength=0.7,
                                                                **COMMON).frames,
        "stochastic_scheduler": lambda pipe: zs2_kernels.sample_video(pipe, PROMPT, num_frames=4,
                                                                      scheduler="euler-a", **COMMON).frames,
        "video_mode": _video_mode,
    }


def digest(tensor: torch.Tensor) -> str:
    array = tensor.detach().cpu().contiguous()
    header = f"{tuple(array.shape)} {array.dtype}".encode()
    return hashlib.sha256(header + array.numpy().tobytes()).hexdigest()


def compute() -> dict:
    """name -> sha256 of that mode's latents, on one thread (as the ablation runs its units)."""
    import zs2_kernels
    from zs2_kernels.evaluation.running import one_thread

    pipe = zs2_kernels.load_pipeline(progress=False)
    pipe.set_progress_bar_config(disable=True)
    with one_thread():
        return {name: digest(run(pipe)) for name, run in cases().items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"record the hashes in {GOLDEN.name}")
    args = parser.parse_args(argv)
    if torch.__version__ != TORCH_BUILD:
        print(f"golden outputs are recorded with torch {TORCH_BUILD}, this is {torch.__version__}", file=sys.stderr)
        return 2
    hashes = compute()
    if args.write:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"torch": TORCH_BUILD, "hashes": hashes}, indent=1) + "\n")
    print(json.dumps(hashes, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
