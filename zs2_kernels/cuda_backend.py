"""ctypes binding of the hand-written CUDA C++ backend (``csrc/zs2_ops.cu`` built as ``libzs2_cuda.so``).

The library has a plain C interface (device pointers, int64 sizes, a ``cudaStream_t`` as ``void*``), so it
does not depend on the torch C++ ABI; see csrc/README.md. It is loaded lazily: importing this module
neither opens the library nor touches CUDA. Kernels run on torch's current stream of the tensors' device,
so they are ordered with surrounding torch work and the calls never synchronise.

Location: ``zs2_kernels/_lib/libzs2_cuda.so`` (built by setup.py when nvcc is available), or the path in
the ``ZS2_CUDA_LIBRARY`` environment variable. The op layer validates user input; the checks here are
what the C side relies on (device, dtype, unit inner stride).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

ENV_VAR = "ZS2_CUDA_LIBRARY"
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_SIGNATURES = {
    "zs2_last_error": (ctypes.c_char_p, []),
    "zs2_cuda_runtime_version": (ctypes.c_int, []),
    "zs2_momentum_update": (ctypes.c_int, [_p, _p, _p, _p, _i64, _i64, _i64, ctypes.c_double, ctypes.c_int, _p]),
    "zs2_kl_sums_workspace_size": (_i64, [_i64, _i64, _i64]),
    "zs2_kl_sums": (ctypes.c_int, [_p, _i64, _p, _p, _p, _p, _i64, _i64, _i64, ctypes.c_int, _p]),
    "zs2_compose": (ctypes.c_int, [_p, _i64, _p, _p, _p, _p, _i64, _i64, _i64, ctypes.c_int, _p]),
}


def library_path() -> Path:
    """Where the library is looked for: ``$ZS2_CUDA_LIBRARY``, else ``zs2_kernels/_lib/libzs2_cuda.so``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "_lib" / "libzs2_cuda.so"


@functools.lru_cache(maxsize=None)
def _open(path: str) -> ctypes.CDLL:
    """Load the library once per path (tests switch paths through the environment variable)."""
    try:
        library = ctypes.CDLL(path)
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(library, name)
            function.restype = restype
            function.argtypes = argtypes
    except (OSError, AttributeError) as error:
        raise RuntimeError(f"could not load the CUDA C++ backend library {path}: {error}") from error
    return library


def _library() -> ctypes.CDLL:
    path = library_path()
    if not path.is_file():
        raise RuntimeError(
            f"the CUDA C++ backend library was not built (looked for {path}; "
            f"install with nvcc available, or set {ENV_VAR})"
        )
    return _open(str(path))


#: The oldest Linux driver of each CUDA major version (the floor of its minor-version compatibility).
MIN_LINUX_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580"}


def driver_version() -> int | None:
    """``cuDriverGetVersion`` of the NVIDIA driver (e.g. 13000 for CUDA 13.0), or None without a driver."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value


def driver_problem(library: ctypes.CDLL) -> str | None:
    """Why this driver cannot run ``library`` (built against a newer CUDA major version), or None when it can.

    The library links its CUDA runtime statically, so only the driver limits where it runs: a CUDA 13 build
    on a CUDA 12 driver loads fine and then fails every launch.
    """
    built = library.zs2_cuda_runtime_version()
    driver = driver_version()
    if driver is None:
        return "no NVIDIA driver found (libcuda.so.1 is missing)"
    if driver // 1000 >= built // 1000:
        return None
    major = built // 1000
    return (f"the CUDA C++ backend library was built with CUDA {major}.{built % 1000 // 10}, which needs a driver "
            f"for CUDA {major}.x (Linux driver >= {MIN_LINUX_DRIVER.get(major, 'of that release')}); this driver "
            f"supports CUDA {driver // 1000}.{driver % 1000 // 10}. Update the driver, or rebuild the library with "
            f"that CUDA's nvcc (python csrc/build.py {library_path()})")


def is_available() -> bool:
    """True when the library loads, torch sees a GPU and the driver supports the library's CUDA (no launch)."""
    try:
        library = _library()
    except RuntimeError:
        return False
    return torch.cuda.is_available() and driver_problem(library) is None


@functools.lru_cache(maxsize=None)
def _require_driver(path: str) -> None:
    """Raise RuntimeError saying what is needed when the driver cannot run the library at ``path`` (once per path)."""
    problem = driver_problem(_open(path))
    if problem:
        raise RuntimeError(problem)


def _require_cuda(*tensors: torch.Tensor) -> torch.device:
    if not torch.cuda.is_available() or any(not t.is_cuda for t in tensors):
        devices = ", ".join(str(t.device) for t in tensors)
        raise RuntimeError(f"the CUDA C++ backend needs CUDA tensors / a GPU (got tensors on {devices})")
    device = tensors[0].device
    if any(t.device != device for t in tensors):
        raise RuntimeError(f"the CUDA C++ backend needs all tensors on one device, got {[t.device for t in tensors]}")
    return device


def _dtype_code(name: str, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    if tensor.dtype not in _DTYPE_CODES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {tensor.dtype}")
    if dtype is not None and tensor.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {tensor.dtype}")
    return _DTYPE_CODES[tensor.dtype]


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (2-D) with unit stride along its last dim (the C side takes a row stride)."""
    return tensor if tensor.stride(-1) == 1 or tensor.shape[-1] <= 1 else tensor.contiguous()


def _check(library: ctypes.CDLL, status: int) -> None:
    if status != 0:
        raise RuntimeError(f"CUDA C++ backend: {library.zs2_last_error().decode(errors='replace')}")


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def momentum_update(x: torch.Tensor, momentum: float, init: torch.Tensor | None = None, *,
                    return_state: bool = False):
    """EMA over dim 1 of x [G, F, N] (see ``reference.momentum_update``); init float32 [G, N] or None.

    Returns y, or ``(y, state)`` with the float32 running value after the last frame (F >= 1).
    """
    library = _library()
    device = _require_cuda(x, *([] if init is None else [init]))
    _require_driver(library._name)
    code = _dtype_code("x", x)
    if x.dim() != 3:
        raise ValueError(f"x must be [G, F, N], got shape {tuple(x.shape)}")
    G, F, N = x.shape
    x = x.contiguous()
    if init is not None:
        _dtype_code("init", init, torch.float32)
        if tuple(init.shape) != (G, N):
            raise ValueError(f"init must have shape {(G, N)}, got {tuple(init.shape)}")
        init = init.contiguous()
    y = torch.empty_like(x)
    state = torch.empty(G, N, dtype=torch.float32, device=device) if return_state else None
    with torch.cuda.device(device):
        _check(library, library.zs2_momentum_update(
            x.data_ptr(), None if init is None else init.data_ptr(), y.data_ptr(),
            None if state is None else state.data_ptr(), G, F, N, float(momentum), code, _stream(device)))  # fmt: skip
    return (y, state) if return_state else y


def _check_frame_and_candidates(prev: torch.Tensor, candidates: torch.Tensor) -> int:
    """Check prev [B, D] and candidates [R, B, D] share a supported dtype; return its code."""
    code = _dtype_code("prev", prev)
    _dtype_code("candidates", candidates, prev.dtype)
    if prev.dim() != 2 or candidates.dim() != 3 or tuple(candidates.shape[1:]) != tuple(prev.shape):
        raise ValueError(f"need prev [B, D] and candidates [R, B, D], got {tuple(prev.shape)}, "
                         f"{tuple(candidates.shape)}")  # fmt: skip
    return code


def kl_sums(prev: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [B], C [B, R]) in float32 for prev [B, D] and candidates [R, B, D] (see ``reference.kl_sums``)."""
    library = _library()
    device = _require_cuda(prev, candidates)
    _require_driver(library._name)
    code = _check_frame_and_candidates(prev, candidates)
    R, B, D = candidates.shape
    prev = _rows(prev)
    candidates = candidates.contiguous()
    a_sum = torch.empty(B, dtype=torch.float32, device=device)
    c_sum = torch.empty(B, R, dtype=torch.float32, device=device)
    if D == 0:  # the mean of nothing, as torch computes it
        return a_sum.fill_(float("nan")), c_sum.fill_(float("nan"))
    # Per-chunk partial sums (large D only), from torch's caching allocator: stream-ordered like the kernels.
    workspace_size = library.zs2_kl_sums_workspace_size(R, B, D)
    workspace = torch.empty(workspace_size, dtype=torch.float32, device=device) if workspace_size > 0 else None
    with torch.cuda.device(device):
        _check(library, library.zs2_kl_sums(
            prev.data_ptr(), prev.stride(0), candidates.data_ptr(), a_sum.data_ptr(), c_sum.data_ptr(),
            None if workspace is None else workspace.data_ptr(), R, B, D, code, _stream(device)))  # fmt: skip
    return a_sum, c_sum


def compose(prev: torch.Tensor, candidates: torch.Tensor, index: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """out[b] = sqrt(alpha[b])·prev[b] + sqrt(1-alpha[b])·candidates[index[b], b] (see ``reference.compose``).

    ``index`` must lie in [0, R): a row with an out-of-range index comes out as NaN (no bounds check on
    the host, which would synchronise).
    """
    library = _library()
    device = _require_cuda(prev, candidates, index, alpha)
    _require_driver(library._name)
    code = _check_frame_and_candidates(prev, candidates)
    R, B, D = candidates.shape
    if tuple(index.shape) != (B,) or tuple(alpha.shape) != (B,):
        raise ValueError(f"index and alpha must have shape {(B,)}, got {tuple(index.shape)}, {tuple(alpha.shape)}")
    prev = _rows(prev)
    candidates = candidates.contiguous()
    index = index.to(torch.int64).contiguous()
    alpha = alpha.to(torch.float64).contiguous()
    out = torch.empty(B, D, dtype=prev.dtype, device=device)
    with torch.cuda.device(device):
        _check(library, library.zs2_compose(
            prev.data_ptr(), prev.stride(0), candidates.data_ptr(), index.data_ptr(), alpha.data_ptr(),
            out.data_ptr(), R, B, D, code, _stream(device)))  # fmt: skip
    return out
