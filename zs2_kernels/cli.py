"""Command line: ``zs2-sample`` (also ``python python/sample.py``) makes a video with ZS².

Every argument, the output paths and the model's configs (resolution, memory) are checked before any
weights load; bad input exits 2 with one line per problem found (the sampling numbers are checked in one pass
that stops at the first bad one), a failed run exits 1 with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ._checks import DTYPE_NAMES, SEARCH_MODES, SHORT_DTYPE_NAMES, DefaultsHelpFormatter, check_device, dtype_from_name
from .ops.backend import check_backend_name
from .sampling.compiling import COMPILE_MODES
from .sampling.schedulers import SCHEDULERS, check_steps

MIN_WRITTEN_SIDE = 256  # small models (the embedded one makes 32x32) are upscaled so the video is viewable
#: sample_video's argument names and the flags that set them, so a refusal names the flag the user typed.
FLAGS = {"num_frames": "--frames", "num_inference_steps": "--steps", "guidance_scale": "--guidance",
         "noise_lambda": "--lambda", "momentum": "--momentum", "frame_chunk": "--chunk", "negative_prompt":
         "--negative-prompt", "prompt": "--prompt", "search": "--search", "seed": "--seed", "height": "--height",
         "width": "--width", "strength": "--strength", "noise_anchor": "--anchor"}


def sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zs2-sample", description=__doc__,
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder or hub id (default: the embedded digits model)")
    parser.add_argument("--prompt", action="append", help="text prompt (required); repeat for several videos")
    parser.add_argument("--prompt-at", action="append", metavar="FRAME:TEXT",
                        help="prompt travel: the prompt from this frame on, e.g. --prompt-at 0:'a cat' --prompt-at "
                             "47:'a dog' (frame 0 required); frames between keyframes blend their prompts; one "
                             "video, instead of --prompt")
    parser.add_argument("--negative-prompt", default=None, help="negative prompt, used for every prompt")
    parser.add_argument("--frames", type=int, default=None,
                        help="default 16, or the length of the control video or of the video to edit")
    parser.add_argument("--steps", type=int, default=25, help="scheduler steps")
    parser.add_argument("--scheduler", choices=list(SCHEDULERS), default="ddim",
                        help="dpm++ (DPM++ 2M) and unipc give good videos in ~20 steps; euler-a draws its per-step "
                             "noise as dependency chains too")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale (<= 1: none)")
    parser.add_argument("--lambda", dest="noise_lambda", type=float, default=0.01, help="KL target of the noise chain")
    parser.add_argument("--anchor", dest="noise_anchor", type=float, default=0.0,
                        help="in [0, 1): every frame's noise keeps at least this correlation with frame 0's (long "
                             "videos stay closer to frame 0); 0: unanchored")
    parser.add_argument("--momentum", type=float, default=0.98, help="mu of temporal momentum attention")
    parser.add_argument("--search", choices=SEARCH_MODES, default="exact",
                        help="how the noise chain hits --lambda: exact (solved) or paper (the published line search)")
    parser.add_argument("--seed", type=int, default=0, help="in [0, 2**63)")
    parser.add_argument("--height", type=int, default=None,
                        help="pixels, a multiple of the model's downscale factor (default: the model's native size, "
                             "or the control video's)")
    parser.add_argument("--width", type=int, default=None, help="pixels, as --height")
    parser.add_argument("--chunk", type=int, default=None, help="UNet frames per call (bounds memory)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=[*DTYPE_NAMES, *SHORT_DTYPE_NAMES], default=None,
                        help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--control-video", default=None,
                        help="guide video (.gif, .mp4 or a folder of PNGs) for ControlNet guidance, resized to the "
                             "video's size")
    parser.add_argument("--controlnet", default=None,
                        help="ControlNet folder or hub id (default with the embedded model: its digit ControlNet)")
    parser.add_argument("--digit-condition", action="store_true",
                        help="turn the control video's frames into the embedded ControlNet's condition first "
                             "(zs2_kernels.embedded.digit_condition): guide with plain digit frames")
    parser.add_argument("--image", default=None,
                        help="image-to-video: frame 0 (an image file, resized to the video's size), kept exactly")
    parser.add_argument("--video", default=None,
                        help="video-to-video: the video to edit (.gif, .mp4 or a folder of PNGs, resized)")
    parser.add_argument("--strength", type=float, default=None,
                        help="with --video: how far it is noised before denoising, in (0, 1] (default 0.8)")
    parser.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES,
                        help="run the UNet with torch.compile (optionally a mode). The first run of a model and "
                             "size compiles (~1 minute for the embedded model on a 2-core CPU, where one video "
                             "takes ~1.5 s), and a compile lives only as long as the process: it pays back in "
                             "a Python session that makes many videos (sample_video(compile=True)), or for long "
                             "videos and large models, not for one short video from the command line")
    parser.add_argument("--fps", type=int, default=8, help="frames per second of the written .gif/.mp4")
    parser.add_argument("--out", help="(required) .gif, .mp4, or a new folder name for PNG frames; a file you name "
                        "is replaced, only once the new video is complete (the old one is kept on any failure); "
                        "with several --prompt, one per prompt named with _0, _1, ... before the extension "
                        "(out/v.gif: out/v_0.gif, out/v_1.gif), names you did not write, which must not exist yet")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _output_paths(out: Path, count: int) -> list[Path]:
    """``out`` for one video; for several, ``<stem>_0<suffix>``, ``<stem>_1<suffix>``, ... beside it: names the user did
    not type, so any that exists already is refused (``out`` itself is replaced, atomically, as documented)."""
    if count == 1:
        return [out]
    paths = [out.with_name(f"{out.stem}_{index}{out.suffix}") for index in range(count)]
    existing = [str(path) for path in paths if path.exists() or path.is_symlink()]
    if existing:
        raise FileExistsError(f"with {count} prompts the videos are written to {paths[0].name}, {paths[1].name}, ...; "
                              f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} and would be "
                              "replaced: move it away or choose another --out")
    return paths


def named_problem(message: str, names: dict, default: str) -> str:
    """``message`` prefixed with what the user set: ``names`` maps sample_video's argument names to flags (or a front
    end's field labels); a message starting with one of those names gets its flag, any other gets ``default``."""
    named = next((flag for name, flag in names.items() if message.startswith(name + " ")), default)
    return f"{named}: {message}"


class _Refusals:
    """Problems found before any work, each named by its flag; all are reported together."""

    def __init__(self, flags: dict = FLAGS):
        self.messages = []
        self.flags = flags  # sample_video's argument names -> the flags that set them in this run

    def check(self, flag, check):
        """``check()``'s result, or None after recording its error under ``flag`` (or the flag it names)."""
        try:
            return check()
        except (ValueError, TypeError, OSError, MemoryError) as error:
            self.messages.append(named_problem(str(error), self.flags, flag))
            return None

    def report(self) -> int:
        for message in self.messages:
            print(f"zs2-sample: error: {message}", file=sys.stderr)
        return 2 if self.messages else 0


def _check_before_loading(args, refusals: _Refusals):
    """Everything but the weights: arguments, output paths, the model's configs (resolution, memory).

    Returns (output paths, device, dtype, (height, width)), or None with the problems in ``refusals``.
    """
    from .loading import read_model_config, resolve_model_location
    from .sampling.memory import check_fits, estimate_memory
    from .sampling.shapes import check_resolution
    from .video_io import check_fps, check_output_path

    location = refusals.check("--model", lambda: resolve_model_location(args.model))
    if args.prompt_at and args.prompt:
        refusals.messages.append("--prompt-at: one video's prompt travel, instead of --prompt (not with it)")
    elif args.prompt_at:
        args.prompt = refusals.check("--prompt-at", lambda: [parse_keyframes(args.prompt_at)])
    elif not args.prompt:
        refusals.messages.append("--prompt: required (a text prompt; repeat for several videos)")
    if args.out is None:
        refusals.messages.append("--out: required (.gif, .mp4, or a new folder name for PNG frames)")
    else:
        refusals.check("--out", lambda: check_output_path(args.out))
    # The other flags are checked too, so one run reports every problem (the numbered paths need --out and --prompt).
    out_ok = args.out is not None and args.prompt and not any(m.startswith("--out") for m in refusals.messages)
    paths = refusals.check("--out", lambda: [check_output_path(p) for p in _output_paths(Path(args.out),
                                                                                           len(args.prompt))]) \
        if out_ok else None
    refusals.check("--fps", lambda: [check_fps(args.fps, path) for path in paths or [None]])
    for flag, given, what in (("--video", args.video, "video"), ("--image", args.image, "image"),
                              ("--control-video", args.control_video, "control video")):
        if given is not None and not Path(given).exists():
            refusals.messages.append(f"{flag}: {what} {given} does not exist")
    for flag, given in (("--video", args.video), ("--image", args.image), ("--control-video", args.control_video)):
        if given is not None and paths and any(Path(given).resolve() == Path(path).resolve() for path in paths):
            refusals.messages.append(f"--out: {given} is also the {flag} input; writing there would replace it")
    if args.control_video is None and (args.controlnet is not None or args.digit_condition):
        refusals.messages.append("--controlnet/--digit-condition: need --control-video")
    _check_edit_flags(args, refusals)
    device = refusals.check("--device", lambda: check_device(args.device or ("cuda" if _has_cuda() else "cpu")))
    if args.frames is None and args.control_video is None and args.video is None:
        args.frames = 16
    # With a control video and no --frames, its length is the frame count (read once the size is known).
    frames = 1 if args.frames is None else args.frames
    refusals.check(refusals.flags["prompt"], lambda: _request(args, num_frames=frames))
    refusals.check("ZS2_BACKEND", check_backend_name)
    if refusals.messages:
        return None
    config = refusals.check("--model", lambda: read_model_config(location))
    if config is None:
        return None
    if refusals.check("--steps", lambda: check_steps(args.steps, config["scheduler"], "--steps")) is None \
            and refusals.messages:
        return None
    factor = config["vae_scale_factor"]
    size = refusals.check("--height", lambda: check_resolution(factor, config["unet"]["sample_size"] * factor,
                                                               args.height, args.width))
    if size is None:
        return None
    for flag, path, read in (("--control-video", args.control_video, _control_video), ("--image", args.image, _image),
                             ("--video", args.video, _video)):
        if path is not None and refusals.check(flag, lambda: read(args, size)) is None:
            return None
    if args.control_video is not None:
        refusals.check("--controlnet", lambda: _check_controlnet(args.controlnet, location, config))
    dtype = dtype_from_name(args.dtype or ("float16" if device.type == "cuda" else "float32"))
    upscale = written_upscale(size)
    # Written frames: the upscaled uint8 pixels and about two more copies inside the GIF/MP4 writer.
    output = 3 * 3 * size[0] * upscale * size[1] * upscale
    estimate = estimate_memory(config["unet"], config["vae"], videos=len(args.prompt), frames=args.frames,
                               height=size[0], width=size[1], chunk=args.chunk, guidance=args.guidance > 1.0,
                               dtype=dtype, weights=config["weights"], output_per_frame=output)
    refusals.check("--frames", lambda: check_fits(estimate, device, "--frames", "--chunk", "one per --prompt",
                                                  "--height/--width"))
    if refusals.messages:
        return None
    request = refusals.check(refusals.flags["prompt"], lambda: _request(
        args, num_frames=args.frames, height=size[0], width=size[1], device=device, dtype=dtype,
        progress=not args.no_progress, control_video=getattr(args, "control", None), controlnet=args.controlnet,
        image=getattr(args, "image_frame", None), video=getattr(args, "video_frames", None), strength=args.strength))
    return None if request is None else (paths, request)


def _request(args, **given):
    """The sampling request of the command line's flags; ``given``: what the preflight worked out (frames, size,
    device, the frames read from files, ...)."""
    from .sampling.request import SampleRequest

    return SampleRequest(prompt=args.prompt, negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
                         guidance_scale=args.guidance, noise_lambda=args.noise_lambda, momentum=args.momentum,
                         search=args.search, noise_anchor=args.noise_anchor, frame_chunk=args.chunk, seed=args.seed,
                         scheduler=args.scheduler, compile=args.compile or False, **given)


def _clip(args, path, size, what: str):
    """A video (.gif, .mp4, PNG folder) read and resized; --frames defaults to its length, another one is refused."""
    from .video_io import read_video

    frames = read_video(path, size, what)
    if args.frames is None:
        args.frames = len(frames)
    if len(frames) != args.frames:
        raise ValueError(f"it has {len(frames)} frames but --frames is {args.frames}")
    return frames


def _control_video(args, size):
    """The guide video (made a digit condition with --digit-condition)."""
    frames = _clip(args, args.control_video, size, "control video")
    if args.digit_condition:
        import torch

        from .embedded import digit_condition

        frames = digit_condition(torch.from_numpy(frames).movedim(-1, 1)).movedim(1, -1).numpy()
    args.control = frames
    return frames


def _check_controlnet(controlnet, location: str, config: dict) -> None:
    """--controlnet's config.json against the UNet's config, or, without --controlnet, that the model has a ControlNet
    of its own (a ControlNet pipeline) or is the embedded one (its digit ControlNet): all before any weights load."""
    from .embedded import embedded_model_path
    from .loading import _hub_folder
    from .sampling.control import check_fits_unet, read_controlnet_config

    if controlnet is not None:
        check_fits_unet(read_controlnet_config(controlnet), config["unet"],
                        2 ** (len(config["vae"]["block_out_channels"]) - 1))
    elif Path(location).resolve() != embedded_model_path().resolve():
        folder = Path(location) if Path(location).is_dir() else _hub_folder(location)
        if "controlnet" not in json.loads((folder / "model_index.json").read_text()):
            raise ValueError("needed with this --model (a ControlNet folder or hub id fitting its UNet): only the "
                             "embedded model and ControlNet pipelines have a ControlNet of their own")


def _check_edit_flags(args, refusals: _Refusals) -> None:
    """--image, --video and --strength: which go together."""
    from .sampling.editing import check_strength

    if args.image is not None and args.video is not None:
        refusals.messages.append("--image/--video: give one (image-to-video or video-to-video), not both")
    if args.control_video is not None and (args.image is not None or args.video is not None):
        refusals.messages.append("--image/--video: cannot be combined with --control-video yet")
    if args.strength is not None:
        if args.video is None:
            refusals.messages.append("--strength: needs --video")
        else:
            refusals.check("--strength", lambda: check_strength(args.strength, args.steps))


def _image(args, size):
    """The image of image-to-video, read and resized: one frame."""
    from .video_io import read_video

    frames = read_video(args.image, size, "image")
    if len(frames) != 1:
        raise ValueError(f"{args.image} has {len(frames)} frames; give one image (for a video to edit: --video)")
    args.image_frame = frames[0]
    return frames


def _video(args, size):
    """The video to edit."""
    args.video_frames = _clip(args, args.video, size, "video")
    return args.video_frames


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def parse_keyframes(values: list[str]) -> dict:
    """--prompt-at FRAME:TEXT values as sample_video's {frame: text} dict."""
    keyframes = {}
    for value in values:
        frame, separator, text = value.partition(":")
        if not separator or not frame.strip().isdigit() or not text.strip():
            raise ValueError(f"expected FRAME:TEXT with FRAME an int >= 0 and a non-empty TEXT, got {value!r}")
        if int(frame) in keyframes:
            raise ValueError(f"frame {int(frame)} is given twice")
        keyframes[int(frame)] = text
    return keyframes


def written_upscale(size) -> int:
    """The integer factor that brings a video of ``size`` (height, width) to at least MIN_WRITTEN_SIDE pixels."""
    return max(1, -(-MIN_WRITTEN_SIDE // max(size)))


def stats_summary(stats: dict) -> dict:
    """sample_video's stats in brief: the backend and noise settings, the means of the per-pair statistics, and the
    seconds per stage (what the command line prints, and the demo's stats panel shows)."""
    summary = {key: stats[key] for key in ("backend", "device", "dtype", "search", "noise_lambda", "noise_anchor")
               if key in stats}
    for key in ("achieved_kl", "alpha", "correlation", "correlation_first"):
        if key in stats:
            values = np.asarray(stats[key], dtype=np.float64)
            summary[f"{key}_mean"] = round(float(values.mean()), 6) if values.size else None
    summary["seconds"] = {k: round(v, 3) for k, v in stats["timings"].items()}
    return summary


def sample_main(argv=None) -> int:
    args = sample_parser().parse_args(argv)
    refusals = _Refusals({**FLAGS, "prompt": "--prompt-at" if args.prompt_at else "--prompt"})
    checked = _check_before_loading(args, refusals)
    if checked is None:
        return refusals.report()
    paths, request = checked

    from .sampling.sampler import sample
    from .video_io import write_video

    try:
        result = sample(args.model, request)
    except (ValueError, TypeError, OSError, MemoryError, FloatingPointError) as error:
        print(f"zs2-sample: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zs2-sample: interrupted while sampling; nothing was written", file=sys.stderr)
        return 130
    upscale = written_upscale((request.height, request.width))
    for path, video in zip(paths, result.frames):
        try:
            write_video(np.asarray(video), path, fps=args.fps, upscale=upscale)
        except (ValueError, OSError) as error:
            print(f"zs2-sample: error: writing {path} failed: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # the write is atomic: the path holds what it held before
            print(f"zs2-sample: interrupted while writing {path}, which was left as it was", file=sys.stderr)
            return 130
        print(f"wrote {path} ({video.shape[0]} frames, {video.shape[2]}x{video.shape[1]} px, upscaled x{upscale})")
    print("noise statistics:", json.dumps(stats_summary(result.stats)))
    return 0


if __name__ == "__main__":
    sys.exit(sample_main())
