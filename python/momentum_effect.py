"""Where momentum attention acts: per self-attention layer, the relative change of its output between mu = 0 and
mu = 0.98 (zs2_kernels.evaluation.mechanism), for the embedded model and for Stable Diffusion 1.5's architecture
with random weights (architecture only: random weights say where the mechanism can act and how the change scales
with token count, not what a trained SD1.5 does).

    python python/momentum_effect.py            # -> benchmarks/results/momentum-effect.{json,md}
    python python/momentum_effect.py --no-sd15  # the embedded model only (seconds)
"""

import argparse
import json
import sys
from pathlib import Path

import torch

import zs2_kernels
from zs2_kernels.evaluation.mechanism import momentum_effect

ROOT = Path(__file__).resolve().parents[1]


def table(title: str, effect: dict[str, float]) -> list[str]:
    lines = [f"## {title}", "", "| self-attention layer | relative change of its output |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in effect.items()]
    return lines + [f"| **mean** | **{sum(effect.values()) / len(effect):.4f}** |", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "momentum-effect")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--no-sd15", action="store_true", help="skip the random-weight SD1.5 architecture")
    args = parser.parse_args()
    settings = dict(momentum=0.98, num_frames=args.frames, timestep=500, seed=0)
    results = {"settings": settings, "models": {}}
    embedded = zs2_kernels.load_pipeline(None, progress=False)
    results["models"]["embedded digits model (trained)"] = momentum_effect(embedded, "a handwritten digit 3",
                                                                           **settings)
    if not args.no_sd15:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from random_models import random_pipeline

        sd15 = random_pipeline("sd15", torch.device("cpu"), torch.float32)
        results["models"]["SD1.5 architecture, random weights, 512x512 (architecture only)"] = momentum_effect(
            sd15, "a horse galloping on a street", **settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Momentum attention, layer by layer", "",
             f"Relative change ||out(mu={settings['momentum']}) - out(mu=0)|| / ||out(mu=0)|| of each self-attention "
             f"layer's output on one UNet call: {args.frames} frames of dependency noise (lambda 0.01, seed 0) at "
             "timestep 500, no guidance. Made by `python python/momentum_effect.py`.", ""]
    for title, effect in results["models"].items():
        lines += table(title, effect)
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
