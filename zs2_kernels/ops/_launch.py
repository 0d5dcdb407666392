"""What every Triton launcher shares: launch on the tensors' CUDA device.

Triton launches on the *current* CUDA device and stream, not on the device of its arguments: a kernel
given tensors on cuda:1 while cuda:0 is current fails ("cannot access pointer"), or with peer access
races on the wrong GPU. Every launcher therefore enters ``device_guard(tensor)``.
"""

from __future__ import annotations

import contextlib

import torch


def device_guard(tensor: torch.Tensor):
    """``torch.cuda.device(tensor.device)`` for CUDA tensors; a no-op for CPU tensors (the interpreter)."""
    if tensor.is_cuda:
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()
