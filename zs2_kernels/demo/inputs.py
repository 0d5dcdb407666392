"""Uploads read within limits, and prompt travel's text form.

A page takes files from anyone who can reach it, so an upload is checked before it is decoded: its size in bytes,
its frame count and the memory its decoded frames would take (a small MP4 can hold thousands of 4K frames). Only then
is it read by :func:`zs2_kernels.video_io.read_video`, the one conversion every input of this package goes through.
Errors are ValueErrors naming the field and the upload by its file name (not the server's temporary path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cli import parse_keyframes
from ..video_io import FFMPEG_SUFFIXES, read_video

#: At most this many frames per video (the frame sliders' maximum; uploads with more are refused).
MAX_FRAMES = 128
#: Uploads larger than this are refused (also given to Gradio, which refuses them while uploading).
MAX_UPLOAD_BYTES = 20 * 2**20
#: An upload's frames, decoded at their own size as 8-bit RGB, may take at most this much memory.
MAX_DECODED_BYTES = 512 * 2**20


def _amount(size: float) -> str:
    """A number of bytes for people: 3 significant digits in bytes, KiB, MiB or GiB."""
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} GiB"


def _probe(path: Path, what: str, stop_after: int) -> tuple[int, int, int]:
    """(frames, height, width) of an image or video file, found without keeping its frames; counting stops after
    ``stop_after`` frames."""
    try:
        if path.suffix.lower() in FFMPEG_SUFFIXES:
            import imageio.v3 as iio

            frames, shape = 0, (0, 0)
            for frame in iio.imiter(path, plugin="FFMPEG"):
                frames, shape = frames + 1, frame.shape[:2]
                if frames >= stop_after:
                    break
            return frames, *shape
        from PIL import Image

        with Image.open(path) as image:
            return min(getattr(image, "n_frames", 1), stop_after), image.height, image.width
    except Exception as error:  # every decoder's errors (PIL's bomb check is not an OSError): the file is refused
        reason = str(error).splitlines()[0].replace(str(path), path.name) if str(error) else type(error).__name__
        raise ValueError(f"cannot read {what} {path.name}: not an image or video this app reads (.gif, .png, .jpg, "
                         f".mp4, .webm, ...): {reason}") from None


def read_upload(path, size: tuple[int, int], what: str, *, max_frames: int = MAX_FRAMES,
                max_bytes: int = MAX_UPLOAD_BYTES) -> np.ndarray:
    """An uploaded image or video as float32 frames [F, H, W, 3] in [0, 1], resized to ``size`` (height, width).

    Refused (ValueError naming the upload by its file name; ``what`` names the input in read errors) when missing,
    over ``max_bytes``, over ``max_frames`` frames, too large once decoded, or not an image or video."""
    if path is None or not str(path).strip():
        raise ValueError("upload a file first")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"the upload {path.name} is gone (uploads are kept for an hour): upload it again")
    given = path.stat().st_size
    if given > max_bytes:
        raise ValueError(f"{path.name} has {_amount(given)}; uploads may have at most {_amount(max_bytes)}")
    frames, height, width = _probe(path, what, max_frames + 1)
    if frames > max_frames:
        raise ValueError(f"{path.name} has more than {max_frames} frames; at most {max_frames}")
    decoded = frames * height * width * 3
    if decoded > MAX_DECODED_BYTES:
        raise ValueError(f"{path.name} has {frames} frames of {width}x{height} pixels ({_amount(decoded)} decoded, "
                         f"at most {_amount(MAX_DECODED_BYTES)}): upload fewer or smaller frames")
    try:
        return read_video(path, size, what)
    except (ValueError, OSError) as error:
        raise ValueError(str(error).replace(str(path), path.name)) from None


def parse_travel(text: str) -> dict:
    """The page's prompt-travel text, one ``FRAME: TEXT`` per line (blank lines skipped), as sample_video's
    ``{frame: text}`` dict (the command line's ``--prompt-at`` parser; the space after the colon is not part of the
    text)."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    if not lines:
        raise ValueError("keyframes: give one FRAME: TEXT per line, starting at frame 0 (e.g. 0: a handwritten "
                         "digit 1)")
    try:
        return {frame: text.strip() for frame, text in parse_keyframes(lines).items()}
    except ValueError as error:
        raise ValueError(f"keyframes: {error} (one FRAME: TEXT per line)") from None
