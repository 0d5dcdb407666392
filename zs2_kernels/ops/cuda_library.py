"""The hand-written CUDA C++ backend library (``csrc/zs2_ops.cu`` built as ``libzs2_cuda.so``): loading it,
checking the driver can run it, and what every binding (``momentum/cuda.py``, ``noise/cuda.py``) needs.

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
    "zs2_cubin_archs": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int), ctypes.c_int]),
    "zs2_momentum_update": (ctypes.c_int, [_p, _p, _p, _p, _i64, _i64, _i64, ctypes.c_double, ctypes.c_int, _p]),
    "zs2_kl_sums_workspace_size": (_i64, [_i64, _i64, _i64]),
    "zs2_kl_sums": (ctypes.c_int, [_p, _i64, _p, _p, _p, _p, _p, _i64, _i64, _i64, ctypes.c_int, _p]),
    "zs2_compose": (ctypes.c_int, [_p, _i64, _p, _p, _p, _p, _i64, _i64, _i64, ctypes.c_int, _p]),
}


def library_path() -> Path:
    """Where the library is looked for: ``$ZS2_CUDA_LIBRARY``, else ``zs2_kernels/_lib/libzs2_cuda.so``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "_lib" / "libzs2_cuda.so"


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


def load() -> ctypes.CDLL:
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


def cubin_archs(library: ctypes.CDLL) -> list[int]:
    """The archs ``library`` holds cubins for (80 for sm_80); empty when the build did not record them."""
    archs = (ctypes.c_int * 32)()
    count = library.zs2_cubin_archs(archs, len(archs))
    return list(archs[:min(count, len(archs))])


def _cuda(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def driver_problem(library: ctypes.CDLL, capability: tuple[int, int]) -> str | None:
    """Why this driver cannot run ``library`` on a GPU of compute ``capability``, or None when it can.

    The library links its CUDA runtime statically, so only the driver limits where it runs. Cubins run on a
    driver of the same CUDA major version (minor version compatibility): a CUDA 13 build on a CUDA 12 driver
    loads fine and then fails every launch. A GPU no cubin runs on (newer than the library's archs) gets the
    PTX JIT-compiled by the driver, which rejects PTX from a newer CUDA, minor version included: a CUDA 13.1
    build on a 13.0 driver fails every launch there.
    """
    built = library.zs2_cuda_runtime_version()
    driver = driver_version()
    if driver is None:
        return "no NVIDIA driver found (libcuda.so.1 is missing)"
    major = built // 1000
    rebuild = f"rebuild the library with the nvcc of CUDA {_cuda(driver)} (python csrc/build.py {library_path()})"
    if driver // 1000 < major:
        return (f"the CUDA C++ backend library was built with CUDA {_cuda(built)}, which needs a driver for CUDA "
                f"{major}.x (Linux driver >= {MIN_LINUX_DRIVER.get(major, 'of that release')}); this driver "
                f"supports CUDA {_cuda(driver)}. Update the driver, or {rebuild}")
    archs = cubin_archs(library)
    gpu_major, gpu_minor = capability
    if driver < built and not any(arch // 10 == gpu_major and arch % 10 <= gpu_minor for arch in archs):
        cubins = ", ".join(f"sm_{arch}" for arch in archs) or "none recorded"
        return (f"this GPU (sm_{gpu_major}{gpu_minor}) has no cubin in the CUDA C++ backend library (cubins: "
                f"{cubins}), so the driver must JIT-compile the library's PTX, which CUDA {_cuda(built)} wrote; "
                f"this driver supports CUDA {_cuda(driver)} and rejects newer PTX. Update the driver to one for "
                f"CUDA >= {_cuda(built)}, or {rebuild}")
    return None


def is_available() -> bool:
    """True when the library loads, torch sees a GPU and the driver can run the library on the current GPU
    (no launch)."""
    try:
        library = load()
    except RuntimeError:
        return False
    return torch.cuda.is_available() and driver_problem(library, torch.cuda.get_device_capability()) is None


@functools.lru_cache(maxsize=None)
def require_driver(path: str, capability: tuple[int, int]) -> None:
    """Raise RuntimeError saying what is needed when the driver cannot run the library at ``path`` on a GPU of
    compute ``capability`` (checked once per pair)."""
    problem = driver_problem(_open(path), capability)
    if problem:
        raise RuntimeError(problem)


def require_cuda(*tensors: torch.Tensor) -> torch.device:
    if not torch.cuda.is_available() or any(not t.is_cuda for t in tensors):
        devices = ", ".join(str(t.device) for t in tensors)
        raise RuntimeError(f"the CUDA C++ backend needs CUDA tensors / a GPU (got tensors on {devices})")
    device = tensors[0].device
    if any(t.device != device for t in tensors):
        raise RuntimeError(f"the CUDA C++ backend needs all tensors on one device, got {[t.device for t in tensors]}")
    return device


def dtype_code(name: str, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    if tensor.dtype not in _DTYPE_CODES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {tensor.dtype}")
    if dtype is not None and tensor.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {tensor.dtype}")
    return _DTYPE_CODES[tensor.dtype]


def rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (2-D) with unit stride along its last dim (the C side takes a row stride)."""
    return tensor if tensor.stride(-1) == 1 or tensor.shape[-1] <= 1 else tensor.contiguous()


def check_status(library: ctypes.CDLL, status: int) -> None:
    if status != 0:
        raise RuntimeError(f"CUDA C++ backend: {library.zs2_last_error().decode(errors='replace')}")


def stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def prepare(*tensors: torch.Tensor) -> tuple[ctypes.CDLL, torch.device]:
    """The loaded library and the tensors' CUDA device, after checking both can run (what a binding does first)."""
    library = load()
    device = require_cuda(*tensors)
    require_driver(library._name, torch.cuda.get_device_capability(device))
    return library, device
