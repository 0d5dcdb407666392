"""Where a result came from: the code revision and the device, recorded by the ablation and the benchmarks."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import subprocess
from pathlib import Path

import torch


def git_revision() -> str:
    """The code revision: ``$ZS2_GIT_REVISION`` when set, else ``git rev-parse HEAD`` of this package's checkout
    with "+dirty" when tracked files differ from it, or "unknown" outside a checkout.

    The override is for copies whose .git does not match the files (a tree shipped to a GPU machine).
    """
    if os.environ.get("ZS2_GIT_REVISION"):
        return os.environ["ZS2_GIT_REVISION"]
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + "+dirty" if changed else head) or "unknown"


def device_name(device: torch.device) -> str:
    """Human name of the device: the GPU's name, or the CPU model (``/proc/cpuinfo``) on CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except ImportError:
        return None


def describe(device: torch.device) -> dict:
    """The run environment every result records: device, thread counts, library versions, code revision, time."""
    return {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        **{name: _version(name) for name in ("torch", "triton", "diffusers", "transformers")},
        "git_revision": git_revision(),
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
