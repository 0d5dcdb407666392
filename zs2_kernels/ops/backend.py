"""Which implementation runs an op: Triton kernels, the CUDA C++ library, or the PyTorch reference.

Default: "triton" for CUDA tensors (when triton is installed), "torch" elsewhere. Override per call
with ``backend=...`` or for the process with the environment variable ``ZS2_BACKEND``. Under
``TRITON_INTERPRET=1`` the Triton kernels also run on CPU tensors (that is how CI tests them).
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

BACKENDS = ("triton", "cuda", "torch")
ENV_VAR = "ZS2_BACKEND"


def triton_available() -> bool:
    """True when the triton package is importable (it is optional: the CPU path does not need it)."""
    if sys.modules.get("triton") is not None:
        return True
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def triton_interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_backend_name(backend: str | None = None) -> str | None:
    """The requested backend, ``backend`` or else ``$ZS2_BACKEND`` (None: neither), after checking it is one of
    :data:`BACKENDS`; the error names whichever gave it. Callers check this before any work (a typo in the
    environment variable is refused before the weights load, not after)."""
    requested = backend if backend is not None else (os.environ.get(ENV_VAR) or None)
    if requested is not None and requested not in BACKENDS:
        source = "backend" if backend is not None else ENV_VAR
        raise ValueError(f"{source} must be one of {BACKENDS}, got {requested!r}")
    return requested


def resolve_backend(device: torch.device, backend: str | None = None) -> str:
    """The backend for tensors on ``device``: the explicit ``backend``, else ``$ZS2_BACKEND``, else the default.

    An explicit request that cannot run on ``device`` raises; the environment variable is a
    preference that falls back to the reference where it cannot apply (e.g. CPU tensors).
    """
    explicit = backend is not None
    requested = check_backend_name(backend)
    on_cuda = device.type == "cuda"
    if requested is None:
        return "triton" if on_cuda and triton_available() else "torch"
    # The interpreter runs kernels on CPU tensors only (a meta tensor has no data to run on).
    if requested == "triton" and not (triton_available() and (on_cuda or (triton_interpreting()
                                                                          and device.type == "cpu"))):
        if explicit:
            why = "triton is not installed" if not triton_available() else f"tensors are on {device}"
            raise RuntimeError(f"backend='triton' cannot run: {why} (Triton needs CUDA tensors, or CPU tensors with "
                               "TRITON_INTERPRET=1)")
        return "torch"
    if requested == "cuda" and not on_cuda:
        if explicit:
            raise RuntimeError(f"backend='cuda' (the CUDA C++ library) needs CUDA tensors, got tensors on {device}")
        return "torch"
    return requested
