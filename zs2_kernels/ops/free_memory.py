"""Free memory on a device, and the refusal of an op's allocation that cannot fit.

At the ops layer so the public ops check their own allocations (a 65 GB noise chain ran silently for minutes
before failing); :mod:`zs2_kernels.sampling.memory` estimates whole sampling runs on top of it.
"""

from __future__ import annotations

import os

import torch

GIB = 2**30


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on ``device`` (host RAM for the CPU), or None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def check_free_memory(needed: int, device: torch.device, what: str, advice: str) -> None:
    """Raise MemoryError saying ``what`` needs ``needed`` bytes, what ``device`` has free, and ``advice``."""
    free = available_memory(device)
    if free is not None and needed > free:
        raise MemoryError(f"{what} needs about {needed / GIB:.2f} GiB but {device} has {free / GIB:.2f} GiB free; "
                          f"{advice}")
