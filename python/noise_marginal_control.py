"""Step 0 of the long-video work: how much of ZS²'s drift from frame 0 comes from its noise chain not being N(0, I)?

Runs ZS² on the embedded model at several lengths with initial-noise variants, same prompts and seeds, all at
``--noise-lambda``:

* ``search``: the library's default chain (the committed control ran before 7798948, when it was the biased
  search: random stage + alpha solved from A and C, per-frame variance growing to ~1.28; see the results' note);
* ``standardised``: the same chain with every frame rescaled to zero mean and unit variance per video (the
  control the issue asks for: removes the marginal bias, keeps each frame's direction);
* ``anchor:A``: the library's chain with ``noise_anchor=A``; ``mu:M``: with momentum attention at mu = M.

and reports, per variant and length, consistency with frame 0, adjacent consistency, motion and prompt probability
(the digit scorer's; mean over videos with a 95% t-interval).

    python python/noise_marginal_control.py            # -> benchmarks/results/noise-marginal-control.json
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import zs2_kernels
import zs2_kernels.sampling.sampler as sampler_module
from zs2_kernels.evaluation import metrics
from zs2_kernels.evaluation.digits import digit_prompt

ROOT = Path(__file__).resolve().parents[1]


def standardised(noise: torch.Tensor) -> torch.Tensor:
    """Every frame of every video [V, F, ...] to zero mean and unit variance over its elements."""
    flat = noise.flatten(2)
    flat = (flat - flat.mean(-1, keepdim=True)) / flat.std(-1, keepdim=True)
    return flat.view_as(noise)


def interval(values) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0
    return [float(values.mean()), float(half)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["search", "standardised"])
    parser.add_argument("--noise-lambda", type=float, default=0.01, help="the chain's KL target (all variants)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "noise-marginal-control.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = zs2_kernels.load_pipeline(None, progress=False)
    scorer = metrics.DigitScorer()
    original = sampler_module.make_dependency_noise
    results = {"settings": {"lengths": args.lengths, "seeds": args.seeds, "digits": 10, "steps": 25,
                            "guidance": 4.0, "noise_lambda": args.noise_lambda, "frame_chunk": 16}, "rows": []}
    for variant in args.variants:
        def patched(shape, noise_lambda, **kwargs):
            noise, stats = original(shape, noise_lambda, **kwargs)
            return (standardised(noise) if variant == "standardised" else noise), stats

        sampler_module.make_dependency_noise = patched
        for frames in args.lengths:
            started, per_video = time.perf_counter(), []
            for digit in range(10):
                for seed in range(args.seeds):
                    prompt = digit_prompt(digit)
                    anchor = float(variant.split(":")[1]) if variant.startswith("anchor:") else 0.0
                    momentum = float(variant.split(":")[1]) if variant.startswith("mu:") else 0.98
                    out = zs2_kernels.sample_video(pipe, prompt, num_frames=frames, num_inference_steps=25,
                                                   guidance_scale=4.0, seed=1000 * digit + seed, output_type="np",
                                                   frame_chunk=min(frames, 16), progress=False, noise_anchor=anchor,
                                                   noise_lambda=args.noise_lambda, momentum=momentum)
                    video = metrics.to_uint8_chw(out.frames[0])
                    embeddings = scorer.embed(video)
                    per_video.append({**metrics.consistency_metrics(embeddings),
                                      **metrics.motion_metrics(video, embeddings),
                                      **scorer.prompt_metrics(video, prompt)})
            row = {"variant": variant, "frames": frames, "seconds": time.perf_counter() - started}
            for key in per_video[0]:
                row[key] = interval([v[key] for v in per_video])
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    sampler_module.make_dependency_noise = original
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
