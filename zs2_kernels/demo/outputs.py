"""A run's results as files and as the stats panel's contents.

The files (an H.264 MP4, which the page plays and Chromium decodes, and a GIF to download) are written with
:func:`zs2_kernels.video_io.write_video`, atomically, into a private temporary folder: one sub-folder per run, removed
once newer runs have replaced it (Gradio serves copies from its own cache, which ``delete_cache`` empties) and all of
them when the app closes.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..cli import stats_summary, written_upscale
from ..video_io import write_video

#: Frames per second of the written videos (zs2-sample's default).
FPS = 8
#: The stats panel's names of sample_video's timing stages, in run order.
STAGES = {"load": "load (checks)", "encode_prompt": "encode prompt", "encode_edit": "encode image/video",
          "initial_noise": "initial noise", "denoise": "denoise", "decode": "decode", "total": "total"}
#: The stats panel's names of the per-pair statistics' means.
MEANS = {"achieved_kl_mean": "mean achieved KL", "alpha_mean": "mean alpha",
         "correlation_mean": "mean noise correlation of adjacent frames"}


class ResultFolder:
    """A private temporary folder of result files: :meth:`write` puts each run's videos in a sub-folder of its own
    and removes the sub-folders of runs more than ``keep`` runs old; :meth:`close` removes everything."""

    def __init__(self, keep: int = 4):
        self.root = Path(tempfile.mkdtemp(prefix="zs2-demo-"))
        self.keep = keep
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def write(self, frames: np.ndarray, name: str) -> tuple[Path, Path]:
        """One video [F, H, W, 3] in [0, 1] as ``<name>.mp4`` and ``<name>.gif`` (upscaled to be viewable, as
        zs2-sample writes it)."""
        with self._lock:
            folder = self.root / f"run-{next(self._numbers):06d}"
            folder.mkdir()
        upscale = written_upscale(frames.shape[1:3])
        mp4, gif = (write_video(frames, folder / f"{name}{suffix}", fps=FPS, upscale=upscale)
                    for suffix in (".mp4", ".gif"))
        self._prune()
        return mp4, gif

    def _prune(self) -> None:
        with self._lock:
            runs = sorted(self.root.glob("run-*"))
            for old in runs[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def stats_table(stats: dict) -> str:
    """The stats panel: a Markdown table of the backend, the run's settings, the noise statistics' means and the
    seconds per stage."""
    summary = stats_summary(stats)
    rows = [("backend", summary.get("backend")), ("device", summary.get("device")), ("dtype", summary.get("dtype")),
            ("scheduler", stats.get("scheduler")),
            ("frames", f"{stats['num_frames']} of {stats['width']}x{stats['height']} px"),
            ("steps run", stats.get("steps_run", stats.get("num_inference_steps"))),
            ("initial noise", stats.get("initial_noise"))]
    rows += [(key, summary[key]) for key in ("search", "noise_lambda") if key in summary]
    rows += [(label, f"{summary[key]:.6f}") for key, label in MEANS.items() if summary.get(key) is not None]
    rows.append(("seconds per stage", ", ".join(f"{label} {summary['seconds'][stage]:.3f}"
                                                for stage, label in STAGES.items() if stage in summary["seconds"])))
    return "| stat | value |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def pair_curve(stats: dict, key: str) -> list[tuple[int, float]]:
    """(pair, value) of a per-frame-pair statistic ("achieved_kl", "alpha") of the first video; pair i is frames
    (i, i + 1). Empty when the run has none (dependency noise off, or noise given)."""
    values = stats.get(key)
    if not values:
        return []
    first = np.asarray(values, dtype=np.float64).reshape(len(values), -1)[0]
    return [(pair, float(value)) for pair, value in enumerate(first)]
