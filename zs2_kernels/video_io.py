"""Writing videos: .gif, .mp4 or a folder of PNGs, atomically (a failure leaves no partial output, and
nothing that was there before is removed); reading frames (a guide video, an image, a video to edit)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from ._atomic import atomic_write, signals_deferred
from ._checks import check_int

VIDEO_SUFFIXES = (".gif", ".mp4")


def _protected(path: Path) -> bool:
    """The current folder, one of its ancestors (``/`` included) or the home folder: never an output folder."""
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    return resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve()


def _check_writable_folder(folder: Path, path: Path) -> None:
    """Raise unless a file can really be created in ``folder`` (permission bits do not bind root; /proc, ...)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"the folder of output path {path} does not exist: {folder}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(f"cannot write output path {path}: cannot create files in {folder} "
                              f"({error.strerror or error})") from None


def check_output_path(path) -> Path:
    """Validate an output path before any work, and return it.

    A .gif/.mp4 file (replaced if it exists) or a PNG folder that does not exist yet or is empty, in an
    existing writable folder. Never the current folder, its ancestors or the home folder, a non-empty
    folder, or an existing entry of the other kind: an output never removes anything it did not create.
    A symbolic link is followed: the returned path is where it points, so the output replaces the link's
    target and the link stays (a folder cannot be renamed onto a link).
    """
    if not str(path).strip():
        raise ValueError("output path is empty")
    if str(path).endswith(("/", "\\")) and Path(path).suffix:
        raise ValueError(f"output path {path} ends with a separator (a folder) but has a video extension; "
                         f"write the file {str(path).rstrip('/')} or name a folder without extension")
    path = Path(path).expanduser()
    if path.is_symlink():
        path = path.resolve()
    if path.suffix and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"output path {path} has unsupported extension {path.suffix!r}; use .gif, .mp4, or a "
                         "folder name without extension for PNG frames")
    if _protected(path):
        raise ValueError(f"output path {path} is the current folder, one of its parents or the home folder; "
                         "name a new folder for PNG frames")
    if path.suffix and path.exists() and not path.is_file():
        raise ValueError(f"output path {path} exists and is not a file; a {path.suffix} video replaces only a file")
    if not path.suffix and path.exists():
        if not path.is_dir():
            raise ValueError(f"output path {path} exists and is not a folder; PNG frames go to a new folder")
        if any(path.iterdir()):
            raise ValueError(f"output folder {path} is not empty; PNG frames go to a new or empty folder "
                             "(nothing in it is deleted)")
    _check_writable_folder(path.parent, path)
    return path


#: The fastest GIF: its frame delays are whole hundredths of a second, and browsers and players stretch delays
#: under 2/100 s (a 100 fps GIF's delay of 1 or 0) to their default of about 10 fps.
MAX_GIF_FPS = 50


def check_fps(fps, path=None) -> int:
    """Frames per second of a written video: an int >= 1, at most :data:`MAX_GIF_FPS` for a ``path`` ending .gif."""
    fps = check_int("fps", fps, 1)
    if path is not None and Path(path).suffix.lower() == ".gif" and fps > MAX_GIF_FPS:
        raise ValueError(f"fps must be in [1, {MAX_GIF_FPS}] for a GIF (its frame delays are whole 1/100 s and "
                         f"players stretch shorter ones), got {fps}; write .mp4 for a faster video")
    return fps


def to_uint8(frames: np.ndarray, upscale: int = 1) -> np.ndarray:
    """[F, H, W, C] floats in [0, 1] (or uint8, kept) to uint8 RGB [F, H, W, 3] (grey repeated), nearest-neighbour
    upscaled by an integer factor."""
    pixels = frames if frames.dtype == np.uint8 else (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    if upscale > 1:
        pixels = pixels.repeat(upscale, axis=1).repeat(upscale, axis=2)
    return pixels


def write_video(frames: np.ndarray, path, *, fps: int = 8, upscale: int = 1) -> Path:
    """Write one video [F, H, W, C] (floats in [0, 1]) to ``path``; the final name appears only when complete.

    GIF and PNG data are encoded in memory and written with plain file writes, so a full disk raises one OSError
    (imageio's own writer raised it again from a destructor, as an "Exception ignored" traceback); MP4 goes
    through :func:`_encode_mp4`, which checks ffmpeg's exit status.
    """
    path = check_output_path(path)
    fps = check_fps(fps, path)
    pixels = to_uint8(frames, upscale)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        data = encode_gif(pixels, fps)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    elif suffix == ".mp4":
        atomic_write(path, lambda tmp: _encode_mp4(pixels, fps, tmp))
    else:
        def write_frames(folder):
            for index, frame in enumerate(pixels):
                (Path(folder) / f"frame_{index:04d}.png").write_bytes(_encode(frame, ".png"))

        atomic_write(path, write_frames, folder=True)
    return path


def _encode(pixels: np.ndarray, extension: str, **options) -> bytes:
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", pixels, extension=extension, **options)


def encode_gif(pixels: np.ndarray, fps: int) -> bytes:
    """uint8 frames [F, H, W, 3] as the bytes of a looping GIF at ``fps`` frames per second."""
    return _encode(pixels, ".gif", duration=1000 / fps, loop=0)


def _encode_mp4(pixels: np.ndarray, fps: int, path) -> None:
    """uint8 frames [F, H, W, 3] to an H.264 MP4 at ``path`` with imageio-ffmpeg's ffmpeg (imageio's own defaults:
    CRF 25, yuv420p, sides padded to even). ffmpeg's exit status is checked: imageio ignores it, and a full disk
    gave a truncated file that looked written. Whatever interrupts the write (an error, Ctrl-C, SIGTERM), ffmpeg
    is killed and waited for before the caller removes the temporary file: it cannot write it again afterwards."""
    import signal
    import subprocess

    import imageio_ffmpeg

    frames, height, width, _ = pixels.shape
    even = [] if height % 2 == 0 and width % 2 == 0 else ["-vf", f"scale={width + width % 2}:{height + height % 2}"]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-vcodec", "rawvideo",
               "-s", f"{width}x{height}", "-pix_fmt", "rgb24", "-r", str(fps), "-i", "-", "-an", "-vcodec", "libx264",
               "-pix_fmt", "yuv420p", "-crf", "25", *even, "-f", "mp4", str(path)]
    process = None
    try:
        with signals_deferred():  # a signal delivered inside Popen would leave ffmpeg running, with no handle
            # Its own session: a Ctrl-C at the terminal reaches Python, which stops ffmpeg, not ffmpeg mid-file.
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, start_new_session=True)
        _, errors = process.communicate(np.ascontiguousarray(pixels).tobytes())
    except BaseException:
        if process is not None:
            process.kill()
            process.wait()
        raise
    if process.returncode:
        lines = errors.decode(errors="replace").strip().splitlines()
        how = (f"was killed by {signal.Signals(-process.returncode).name}" if process.returncode < 0
               else f"failed (exit {process.returncode})")
        raise OSError(f"ffmpeg {how}: {lines[-1] if lines else 'no message'}")


def frames_tensor(value, name: str):
    """Frames given as a tensor (channels first), an array (channels last; uint8 scaled by 1/255), a PIL image, a list
    of PIL images or a list of such lists, as a CPU tensor with channels at dim -3 (float32 unless a tensor was given,
    which keeps its dtype); ``name`` is the argument named when the type is wrong. Shapes and ranges: the caller's."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.is_meta:
            raise ValueError(f"{name} is on the meta device: it holds no data")
        return value.detach().cpu()
    if hasattr(value, "convert"):
        value = [value]
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        videos = [frames_tensor(list(item), name) for item in value]
        if len({video.shape for video in videos}) > 1:
            raise ValueError(f"{name}'s videos must have the same number of frames and size, got (frames, channels, "
                             f"height, width) {[tuple(video.shape) for video in videos]}")
        return torch.stack(videos)
    if isinstance(value, (list, tuple)):
        if not value or not all(hasattr(image, "convert") for image in value):
            raise TypeError(f"{name} as a list must hold PIL images (or lists of them, one per video)")
        sizes = sorted({image.size[::-1] for image in value})
        if len(sizes) > 1:
            raise ValueError(f"{name}'s PIL images must all have the same size, got (height, width) "
                             f"{', '.join(map(str, sizes))}")
        value = np.stack([image_to_rgb8(image) for image in value])
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a tensor, an array or PIL images, got {type(value).__name__}")
    if value.ndim < 3:
        raise ValueError(f"{name}: arrays are channels last, [H, W, C] or [(V,) F, H, W, C]; got shape {value.shape} "
                         "(a greyscale image: add a channel axis, value[..., None])")
    array = value.astype(np.float32) / 255.0 if value.dtype == np.uint8 else value
    return torch.from_numpy(np.ascontiguousarray(array)).float().movedim(-1, -3)


#: Containers read through ffmpeg; every other file is read as an image (or an image sequence: GIF, APNG, TIFF).
FFMPEG_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv")


def read_video(path, size: tuple[int, int], what: str = "video") -> np.ndarray:
    """The frames of a video file, an image file (one frame, or each page/frame of a GIF, APNG or TIFF) or a folder
    of PNGs in name order (case-insensitive ``.png``; numbers in names by value: frame_2.png before frame_10.png), as
    float32 [F, H, W, 3] in [0, 1], resized to ``size`` = (height, width): a guide video for ``control_video``, the
    image of image-to-video, the video to edit. Every image goes through :func:`image_to_rgb8`. ``what`` names the
    input in errors."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        files = sorted((file for file in path.iterdir() if file.suffix.lower() == ".png" and file.is_file()),
                       key=_natural_key)
        if not files:
            raise FileNotFoundError(f"{what} folder {path} holds no .png frames")
        frames = [_read_frames(file, what)[0] for file in files]
    elif path.is_file():
        frames = _read_frames(path, what)
    elif path.exists():
        raise ValueError(f"{what} {path} is not a regular file or folder (a device, pipe or socket): give a video "
                         "file or a folder of .png frames")
    else:
        raise FileNotFoundError(f"{what} {path} does not exist")
    height, width = size
    resized = [np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR)) for frame in frames]
    return np.stack(resized).astype(np.float32) / 255.0


def _read_frames(path: Path, what: str) -> list[np.ndarray]:
    """The frames of one file as uint8 RGB arrays [H, W, 3]; a file that cannot be read raises ValueError naming
    ``what`` and the reason."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise ValueError(f"cannot read {what} {path}: it is empty (no frames)")
    try:
        if path.suffix.lower() in FFMPEG_SUFFIXES:
            import imageio.v3 as iio

            return [np.ascontiguousarray(np.asarray(frame)[..., :3]) for frame in iio.imiter(path, plugin="FFMPEG")]
        with Image.open(path) as image:
            return [image_to_rgb8(frame) for frame in ImageSequence.Iterator(image)]
    except UnidentifiedImageError:
        with open(path, "rb") as file:
            tiff = file.read(4) in (b"II*\x00", b"MM\x00*")
        reason = ("its pixel data cannot be decoded (such as a floating-point RGB TIFF): save it as an 8- or 16-bit "
                  "PNG or a JPEG" if tiff
                  else "its contents are not an image or video (.gif, .mp4, .png, .jpg, ...), whatever its name")
        raise ValueError(f"cannot read {what} {path}: {reason}") from None
    except (OSError, ValueError, RuntimeError) as error:  # decoders raise these for damaged or unsupported data
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot read {what} {path}: {reason}") from None


def image_to_rgb8(image) -> np.ndarray:
    """A PIL image of any mode as uint8 RGB [H, W, 3]: the one conversion every read image goes through.

    PIL's own conversion to RGB is right for the 8-bit modes (CMYK, YCbCr, LAB, HSV, palette, greyscale; alpha is
    dropped) but clips 16- and 32-bit integer greyscale at 255 and float greyscale too: those are scaled instead
    (integers above 255 by 255/65535; floats in [0, 1] by 255, other floats taken as 0-255 and clipped).
    """
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image)
        if values.dtype.kind == "f":
            if not np.isfinite(values).all():
                raise ValueError("the image has NaN or infinite pixel values")
            scale = 255.0 if values.min() >= 0 and values.max() <= 1 else 1.0
            grey = np.round(np.clip(values * scale, 0, 255)).astype(np.uint8)
        else:
            grey = _eight_bit(values)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def _eight_bit(values: np.ndarray) -> np.ndarray:
    """Integer greyscale as 8 bits: 16-bit data (uint16, or wider integers above 255) scaled by 255/65535."""
    if values.dtype == np.uint16 or values.max() > 255:
        return np.round(values.astype(np.float32).clip(0, 65535) / 257.0).astype(np.uint8)
    return values.clip(0, 255).astype(np.uint8)


def _natural_key(path: Path) -> list:
    """Sort key of a file name with its digit runs compared as numbers: frame_2.png before frame_10.png (the split
    alternates text and digits, so equal positions always hold the same type)."""
    return [int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", path.name))]
