"""Writing videos: .gif, .mp4 or a folder of PNGs, atomically (a failure leaves no partial output)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._atomic import atomic_write

VIDEO_SUFFIXES = (".gif", ".mp4")


def check_output_path(path) -> Path:
    """Validate an output path before any work: a .gif/.mp4 file or a PNG folder (no suffix) in an existing folder."""
    path = Path(path).expanduser()
    if path.suffix and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"output path {path} has unsupported extension {path.suffix!r}; use .gif, .mp4, or a "
                         "folder name without extension for PNG frames")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"the folder of output path {path} does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"the folder of output path {path} is not writable: {parent}")
    return path


def to_uint8(frames: np.ndarray, upscale: int = 1) -> np.ndarray:
    """[F, H, W, C] floats in [0, 1] to uint8 RGB, nearest-neighbour upscaled by an integer factor."""
    pixels = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    if upscale > 1:
        pixels = pixels.repeat(upscale, axis=1).repeat(upscale, axis=2)
    return pixels


def write_video(frames: np.ndarray, path, *, fps: int = 8, upscale: int = 1) -> Path:
    """Write one video [F, H, W, C] (floats in [0, 1]) to ``path``; the final name appears only when complete."""
    import imageio.v3 as iio

    path = check_output_path(path)
    pixels = to_uint8(frames, upscale)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        atomic_write(path, lambda tmp: iio.imwrite(tmp, pixels, extension=".gif", duration=1000 / fps, loop=0))
    elif suffix == ".mp4":
        # imageio-ffmpeg pads frames to multiples of 16 unless told otherwise; libx264 needs even sizes.
        atomic_write(path, lambda tmp: iio.imwrite(tmp, pixels, extension=".mp4", plugin="FFMPEG", fps=fps,
                                                   macro_block_size=2))
    else:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            for index, frame in enumerate(pixels):
                iio.imwrite(staging / f"frame_{index:04d}.png", frame)
            if path.exists():
                shutil.rmtree(path)
            os.replace(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return path
