"""Command line: ``zs2-ablate`` (also ``python python/ablate.py``; ``torchrun --nproc-per-node N`` shards it)."""

from __future__ import annotations

import argparse
import sys

from .ablation import METRICS, STUDIES, Ablation, AblationSettings, read_prompts
from .inception import FEATURE_LAYERS


def ablate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zs2-ablate", description="ZS² ablation study: component isolation, "
                                     "lambda sweep (both search modes), momentum sweep.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--study", default="all", choices=STUDIES + ("all",))
    parser.add_argument("--model", default=None, help="pipeline folder or hub id (default: embedded digits model)")
    parser.add_argument("--prompts", default=None, help="file with one prompt per line (default: per model)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated subset of {METRICS}")
    parser.add_argument("--clip-model", default=None, help="CLIP folder or hub id (needed for non-embedded models)")
    parser.add_argument("--inception-weights", default=None,
                        help="Inception weights for FID as .safetensors (convert the published .pth with "
                             "`python -m zs2_kernels.evaluation.inception SRC.pth DST.safetensors`); omit to download when online")
    parser.add_argument("--fid-feature", type=int, default=2048, choices=FEATURE_LAYERS,
                        help="Inception feature layer (smaller for small runs)")
    parser.add_argument("--metric-backend", default=None, choices=("digits", "clip"),
                        help="digits: offline digit classifier (default for the embedded model); clip: CLIP + Inception")
    parser.add_argument("--reference-images", default=None, help="folder of real images for FID")
    parser.add_argument("--out", required=True, help="output folder (results.*, plots, samples.gif, units/)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--batch", type=int, default=4, help="videos per sampler call")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def ablate_main(argv=None) -> int:
    args = ablate_parser().parse_args(argv)
    try:
        settings = AblationSettings(
            out=args.out, study=args.study, model=args.model,
            prompts=read_prompts(args.prompts) if args.prompts else None, seeds=args.seeds, frames=args.frames,
            steps=args.steps, guidance=args.guidance, height=args.height, width=args.width,
            metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()), clip_model=args.clip_model,
            inception_weights=args.inception_weights, reference_images=args.reference_images,
            fid_feature=args.fid_feature, metric_backend=args.metric_backend, device=args.device, dtype=args.dtype, batch=args.batch)
        ablation = Ablation(settings)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as error:
        print(f"zs2-ablate: error: {error}", file=sys.stderr)
        return 2
    results = ablation.run(progress=not args.no_progress)
    if results is not None:
        print(f"wrote {ablation.out}/results.md, results.json, results.csv, plots and samples.gif "
              f"({len(results['units'])} units, {results['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(ablate_main())
