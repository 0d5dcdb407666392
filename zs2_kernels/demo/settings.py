"""What every tab shares: the sampling knobs, the labels the page shows (and errors name), the README's examples.

The knobs' defaults are ``zs2-sample``'s, and the presets are the README's ``zs2-sample`` commands parsed by the
command line's own parser, so the page reproduces the documented examples without a second copy of their numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..cli import parse_keyframes, sample_parser

#: sample_video's argument names -> the labels of the fields that set them, so an error names the field a visitor
#: set ("Frames: num_frames must be ..."); the field also shows the argument name, which the Python API takes.
LABELS = {"prompt": "Prompt", "num_frames": "Frames", "num_inference_steps": "Steps", "guidance_scale": "Guidance",
          "noise_lambda": "λ", "search": "Search", "momentum": "μ", "seed": "Seed", "scheduler": "Scheduler",
          "frame_chunk": "Chunk", "dependency_noise": "Dependency noise", "momentum_attention": "Momentum attention",
          "strength": "Strength", "controlnet_conditioning_scale": "Guide strength", "control_video": "Guide video",
          "image": "Image", "video": "Video", "keyframes": "Keyframes"}
#: The frame count a text-to-video run takes when the command gives none (zs2-sample's).
DEFAULT_FRAMES = 16


@dataclass(frozen=True)
class Settings:
    """The knobs every tab shares: sample_video's arguments of the same names, with zs2-sample's defaults (a test
    holds them to its parser's). ``frame_chunk`` None (0 on the page) runs the whole video in one UNet call."""

    num_frames: int = DEFAULT_FRAMES
    num_inference_steps: int = 25
    guidance_scale: float = 4.0
    noise_lambda: float = 0.01
    search: str = "exact"
    momentum: float = 0.98
    seed: int = 0
    scheduler: str = "ddim"
    frame_chunk: int | None = None
    dependency_noise: bool = True
    momentum_attention: bool = True

    @classmethod
    def from_command(cls, args) -> Settings:
        """The settings of parsed ``zs2-sample`` arguments (``args``: its parser's namespace)."""
        return cls(num_frames=DEFAULT_FRAMES if args.frames is None else args.frames,
                   num_inference_steps=args.steps, guidance_scale=args.guidance, noise_lambda=args.noise_lambda,
                   search=args.search, momentum=args.momentum, seed=args.seed, scheduler=args.scheduler,
                   frame_chunk=args.chunk)

    def arguments(self) -> dict:
        """sample_video's keyword arguments."""
        return dataclasses.asdict(self)


#: Where the README's example inputs live in a source checkout (the README's set-up installs it editable).
EXAMPLES = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Preset:
    """One of the README's examples: the tab it belongs to and its ``zs2-sample`` arguments (without ``--out``)."""

    name: str
    tab: str  # "text", "guided", "image", "video" or "travel"
    command: tuple[str, ...]

    def parsed(self):
        return sample_parser().parse_args([*self.command, "--out", "preset.gif"])

    def settings(self) -> Settings:
        return Settings.from_command(self.parsed())

    def prompt(self) -> str:
        """The prompt, or for prompt travel the keyframes as the page's text form (one FRAME: TEXT per line)."""
        args = self.parsed()
        if args.prompt_at:
            return "\n".join(f"{frame}: {text}" for frame, text in parse_keyframes(args.prompt_at).items())
        return args.prompt[0]

    def upload(self) -> Path | None:
        """The example's input file (guide, image or video) where this checkout has it, else None."""
        args = self.parsed()
        given = args.control_video or args.image or args.video
        path = None if given is None else EXAMPLES / given
        return path if path is not None and path.is_file() else None

    def strength(self) -> float:
        return 0.8 if self.parsed().strength is None else self.parsed().strength


#: The README's examples, one or more per tab (their commands are the README's, checked by tests/test_demo.py).
PRESETS = (
    Preset("The README's first video: a handwritten 3", "text", ("--prompt", "a handwritten digit 3")),
    Preset("The README's guided 7 (guide: a sliding 7)", "guided",
           ("--prompt", "a handwritten digit seven", "--control-video", "benchmarks/results/guided-guide.gif",
            "--digit-condition")),
    Preset("The README's image-to-video 7", "image",
           ("--prompt", "a handwritten digit seven", "--image", "benchmarks/results/edit-image.png", "--frames",
            "12")),
    Preset("The README's 3 edited into an 8", "video",
           ("--prompt", "a handwritten digit eight", "--video", "benchmarks/results/edit-video.gif", "--strength",
            "0.8")),
    # python/travel_example.py's settings (the README's prompt-travel GIF).
    Preset("The README's travel from 1 to 7 (48 frames)", "travel",
           ("--prompt-at", "0:a handwritten digit 1", "--prompt-at", "47:a handwritten digit 7", "--frames", "48",
            "--steps", "20", "--seed", "1", "--chunk", "16")),
)


def presets(tab: str) -> list[Preset]:
    return [preset for preset in PRESETS if preset.tab == tab]
