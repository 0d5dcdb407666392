"""Command line: ``zs2-ablate`` (also ``python python/ablate.py``; ``torchrun --nproc-per-node N`` shards it)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys

from .._checks import DTYPE_NAMES, SHORT_DTYPE_NAMES, DefaultsHelpFormatter
from .ablation import Ablation
from .inception import FEATURE_LAYERS
from .planning import METRICS, SCORERS, STUDIES, AblationSettings, read_prompts

#: The defaults of the command line are the settings' own (one source).
DEFAULTS = {field.name: field.default for field in dataclasses.fields(AblationSettings)}
#: What the study imports beyond the sampler (the ``eval`` extra), by module: its package on the index.
EVAL_MODULES = {"torchmetrics": "torchmetrics", "scipy": "scipy", "sklearn": "scikit-learn",
                "matplotlib": "matplotlib"}


def missing_eval_packages() -> list[str]:
    """The evaluation's packages that are not installed (they are imported late: checked before any work)."""
    return [package for module, package in EVAL_MODULES.items() if importlib.util.find_spec(module) is None]


def ablate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zs2-ablate", description="ZS² ablation study: component isolation "
                                     "(with Text2Video-Zero), lambda sweep (both search modes), momentum sweep, "
                                     "video length (drift), prompt travel, conditional modes (embedded model).",
                                     formatter_class=DefaultsHelpFormatter)
    add = parser.add_argument
    add("--study", default=DEFAULTS["study"], choices=STUDIES + ("all",),
        help="all: every study (the conditional one only with the embedded model)")
    add("--model", default=DEFAULTS["model"], help="pipeline folder or hub id (default: embedded digits model)")
    add("--prompts", default=None, help="file with one prompt per line (default: per model)")
    for name, text in (("seeds", "seeds per prompt"), ("frames", "frames per video"), ("steps", "DDIM steps"),
                       ("height", "pixels (default: the model's)"), ("width", "pixels (default: the model's)"),
                       ("batch", "videos per sampler call")):
        add(f"--{name}", type=int, default=DEFAULTS[name], help=text)
    add("--lengths", default=",".join(map(str, DEFAULTS["lengths"])),
        help="frame counts of the length study, comma-separated (videos longer than 128 frames: first seed only)")
    add("--guidance", type=float, default=DEFAULTS["guidance"], help="classifier-free guidance scale")
    add("--metrics", default=",".join(DEFAULTS["metrics"]), help=f"comma-separated subset of {METRICS}")
    add("--clip-model", default=DEFAULTS["clip_model"], help="CLIP folder or hub id (needed for non-embedded models)")
    add("--inception-weights", default=DEFAULTS["inception_weights"],
        help="Inception weights for FID as .safetensors (convert the published .pth with `python -m "
             "zs2_kernels.evaluation.inception SRC.pth DST.safetensors`); omit to download when online")
    add("--fid-feature", type=int, default=DEFAULTS["fid_feature"], choices=FEATURE_LAYERS,
        help="Inception feature layer (default 2048; smaller for small runs)")
    add("--scorer", "--metric-backend", dest="scorer", default=DEFAULTS["scorer"], choices=SCORERS,
        help="digits: offline digit classifier (default for the embedded model); clip: CLIP + Inception")
    add("--reference-images", default=DEFAULTS["reference_images"], help="folder of real images for FID")
    add("--out", required=True, help="output folder (results.*, plots, samples.gif, units/)")
    add("--device", default=DEFAULTS["device"],
        help="cpu, cuda, cuda:1, ... (default: cuda if available; under torchrun each rank its own GPU)")
    add("--dtype", default=DEFAULTS["dtype"], choices=[*DTYPE_NAMES, *SHORT_DTYPE_NAMES],
        help="of the model's weights (default: as stored)")
    add("--no-progress", action="store_true", help="no progress bars")
    return parser


def parse_lengths(text: str) -> tuple[int, ...]:
    """'8,16,32' -> (8, 16, 32); anything else is refused naming --lengths."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--lengths must be comma-separated frame counts such as 8,16,32, got {text!r}") from None


def ablate_main(argv=None) -> int:
    args = ablate_parser().parse_args(argv)
    missing = missing_eval_packages()
    if missing:
        print(f"zs2-ablate: error: the ablation study needs {', '.join(missing)} (not installed): "
              "pip install 'zs2_kernels[eval]' (in a checkout: pip install -e '.[eval]')", file=sys.stderr)
        return 2
    try:
        settings = AblationSettings(
            out=args.out, study=args.study, model=args.model,
            prompts=read_prompts(args.prompts) if args.prompts else None, seeds=args.seeds, frames=args.frames,
            steps=args.steps, guidance=args.guidance, height=args.height, width=args.width,
            metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()), clip_model=args.clip_model,
            inception_weights=args.inception_weights, reference_images=args.reference_images,
            fid_feature=args.fid_feature, scorer=args.scorer, device=args.device, dtype=args.dtype,
            batch=args.batch, lengths=parse_lengths(args.lengths))
        ablation = Ablation(settings)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError, MemoryError) as error:
        print(f"zs2-ablate: error: {error}", file=sys.stderr)
        return 2
    before = _figures(ablation.out)
    try:
        results = ablation.run(progress=not args.no_progress)
    except KeyboardInterrupt:  # every finished unit is on disk (written atomically): a rerun resumes from them
        print(f"zs2-ablate: interrupted; the finished units are kept in {ablation.out}/units: run the same command "
              "again to resume", file=sys.stderr)
        return 130
    if results is not None:
        after = _figures(ablation.out)
        written = sorted(name for name, stamp in after.items() if before.get(name) != stamp)
        older = sorted(set(after) - set(written))
        print(f"wrote {ablation.out}/results.md, results.json, results.csv, {', '.join(written)} "
              f"({len(results['units'])} units, {results['wall_time_s']:.0f} s)"
              + (f"; {', '.join(older)} there are from an earlier run with other settings" if older else ""))
    return 0


def _figures(folder) -> dict:
    """The figures and GIFs in ``folder`` (name -> modification time and size), to tell which a run wrote."""
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.suffix in (".png", ".gif")}


if __name__ == "__main__":
    sys.exit(ablate_main())
