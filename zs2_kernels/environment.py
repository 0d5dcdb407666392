"""Where a result came from: the code revision and the device, recorded by the ablation and the benchmarks."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch


def git_revision() -> str:
    """``git rev-parse HEAD`` of the checkout this package runs from, or "unknown" outside one."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


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
