"""The README's editing examples on the embedded model, from held-out digits (never seen in training):

* image-to-video: a held-out 7 is frame 0 of a 12-frame ZS² video of "a handwritten digit seven", beside the plain
  ZS² video of the same prompt and seed;
* video-to-video: a held-out 3 sliding and turning over 12 frames (python/guided_example.py's motion) edited into
  "a handwritten digit eight" at strength 0.8, with ZS² and with per-frame editing (both components off).

    python python/edit_example.py     # -> benchmarks/results/edit-image.png, edit-video.gif (the inputs),
                                      #    image-to-video-7.gif (ZS² from the image | plain ZS²),
                                      #    video-to-video-3-to-8.gif (input | ZS² edit | per-frame edit)

The same from the command line, with the inputs written here:
    zs2-sample --prompt "a handwritten digit seven" --image benchmarks/results/edit-image.png --frames 12 \\
        --out i2v.gif
    zs2-sample --prompt "a handwritten digit eight" --video benchmarks/results/edit-video.gif --strength 0.8 \\
        --out v2v.gif
"""


import imageio.v3 as iio
import numpy as np
import torch

import zs2_kernels
from zs2_kernels.evaluation.digits import load_digit_split
from zs2_kernels.video_io import to_uint8, write_video

from guided_example import FRAMES, example_arguments, sliding_digit


def main() -> None:
    args = example_arguments(__doc__)
    split = load_digit_split()
    held_out = split.test_images * 0.5 + 0.5
    seven, three = held_out[split.test_labels == 7][0], held_out[split.test_labels == 3][0]
    settings = dict(num_inference_steps=args.steps, guidance_scale=4.0, seed=0)

    prompt = "a handwritten digit seven"
    ours = zs2_kernels.sample_video(None, prompt, image=seven, num_frames=FRAMES, **settings).frames[0]
    plain = zs2_kernels.sample_video(None, prompt, num_frames=FRAMES, **settings).frames[0]
    iio.imwrite(args.out / "edit-image.png", to_uint8(seven.expand(3, -1, -1).permute(1, 2, 0).numpy()[None])[0])
    write_video(np.concatenate([ours, plain], axis=2), args.out / "image-to-video-7.gif", fps=6, upscale=8)

    video = sliding_digit(three[None]).expand(-1, 3, -1, -1)  # [FRAMES, 3, 32, 32] in [0, 1]
    edit = dict(video=video, strength=0.8, **settings)
    edited = zs2_kernels.sample_video(None, "a handwritten digit eight", **edit).frames[0]
    per_frame = zs2_kernels.sample_video(None, "a handwritten digit eight", dependency_noise=False,
                                         momentum_attention=False, **edit).frames[0]
    given = video.permute(0, 2, 3, 1).numpy()
    write_video(given, args.out / "edit-video.gif", fps=6, upscale=8)
    write_video(np.concatenate([given, edited, per_frame], axis=2), args.out / "video-to-video-3-to-8.gif", fps=6,
                upscale=8)
    names = ("edit-image.png", "image-to-video-7.gif", "edit-video.gif", "video-to-video-3-to-8.gif")
    print("wrote", ", ".join(str(args.out / name) for name in names))


if __name__ == "__main__":
    torch.set_num_threads(1)  # the same pixels on every machine (CPU float32 convolutions split sums by thread count)
    main()
