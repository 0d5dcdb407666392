"""Argument validation shared by the public API: every error names the argument and the accepted range."""

from __future__ import annotations

import argparse
import math
import numbers
import sys

import torch

try:
    from numpy import bool_ as numpy_bool
except ImportError:  # numpy is optional for the library itself
    numpy_bool = bool

#: The float dtypes, by the names the command lines, settings and records use (one table for all of them).
DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: The short spellings the benchmarks use; the command lines accept them too.
SHORT_DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
FLOAT_DTYPES = tuple(DTYPE_NAMES.values())
#: The dependency noise model's search modes (zs2_kernels/DESIGN.md §1.1).
SEARCH_MODES = ("paper", "exact")


def check_float_tensor(name: str, value) -> None:
    """Raise TypeError unless ``value`` is a tensor of one of the supported float dtypes."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32, float16 or bfloat16, got {value.dtype}")


def check_number(name: str, value, low: float, high: float = math.inf) -> float:
    """Return ``value`` as a float after checking it is a finite-or-inf real in [low, high].

    Any real number type is accepted (NumPy scalars too), and a one-element tensor; bools are not numbers here.
    """
    if isinstance(value, (bool, numpy_bool)) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            if value.is_meta:
                raise ValueError(f"{name} is a tensor on the meta device: it holds no value")
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number in [{low}, {high}], got {value!r}")
    value = float(value)
    if math.isnan(value) or not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_int(name: str, value, low: int) -> int:
    """Return ``value`` as an int after checking it is an integer >= low (NumPy integers too; a symbolic
    size while ``torch.compile`` traces stays symbolic)."""
    if isinstance(value, (bool, numpy_bool)) or not isinstance(value, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"{name} must be an int >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return value if isinstance(value, torch.SymInt) else int(value)


def check_bool(name: str, value) -> bool:
    """Return ``value`` after checking it is a bool (a switch given "no" or 0 must not silently mean True)."""
    if not isinstance(value, (bool, numpy_bool)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype of a name of :data:`DTYPE_NAMES` or :data:`SHORT_DTYPE_NAMES`."""
    long = SHORT_DTYPE_NAMES.get(name, name)
    if long not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {[*DTYPE_NAMES, *SHORT_DTYPE_NAMES]}, got {name!r}")
    return DTYPE_NAMES[long]


def check_dtype(dtype) -> torch.dtype | None:
    """None, a float torch dtype, or its name ("float16", "fp16", ...) as a torch dtype; anything else raises."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in FLOAT_DTYPES):
        return dtype
    if isinstance(dtype, str):
        return dtype_from_name(dtype)
    raise TypeError(f"dtype must be None, torch.float32/float16/bfloat16 or one of their names, got {dtype!r}")


def check_device(device) -> torch.device:
    """``device`` as a torch.device that this machine can compute on; raises naming it otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device name (cpu, cuda, cuda:1, ...)") from None
    if parsed.type == "meta":
        raise ValueError("device 'meta' holds no data and cannot sample; use cpu or cuda")
    backend = getattr(torch, parsed.type, None)
    if parsed.type != "cpu" and not (backend is not None and hasattr(backend, "is_available")
                                     and backend.is_available()):
        raise ValueError(f"device {device!r} is not available on this machine"
                         f"{' (torch sees no CUDA GPU)' if parsed.type == 'cuda' else ''}")
    if parsed.index is not None and parsed.type != "cpu" and parsed.index >= backend.device_count():
        raise ValueError(f"device {device!r} does not exist: this machine has {backend.device_count()} "
                         f"{parsed.type} device(s)")
    return parsed


def check_search(noise_lambda, search, line_steps: int = 0) -> float:
    """Validate the KL target (finite, >= 0), the search mode and the line steps; returns lambda as a float."""
    noise_lambda = check_number("noise_lambda", noise_lambda, 0.0)
    if math.isinf(noise_lambda):
        raise ValueError("noise_lambda must be finite (use a large value such as 10 for independent frames)")
    if search not in SEARCH_MODES:
        raise ValueError(f"search must be one of {SEARCH_MODES}, got {search!r}")
    check_int("line_steps", line_steps, 0)
    return noise_lambda


def check_same_device(name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Raise ValueError if ``value`` and ``ref`` live on different devices."""
    if value.device != ref.device:
        raise ValueError(f"{name} is on {value.device} but {ref_name} is on {ref.device}; they must match")


def check_same_device_dtype(name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Raise ValueError/TypeError if ``value`` and ``ref`` differ in device or dtype."""
    check_same_device(name, value, ref_name, ref)
    if value.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {ref_name} has {ref.dtype}; they must match")


#: Modules whose frames stand between a user's call and the package's code (torch.no_grad's wrapper, contextlib).
_WRAPPER_MODULES = ("torch.utils._contextlib", "contextlib")


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside this package and the decorators
    around its functions (the user's line), however deep inside the package the warning is raised."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_globals.get("__name__", "").split(".")[0] == "zs2_kernels"
                                 or frame.f_globals.get("__name__") in _WRAPPER_MODULES):
        frame, level = frame.f_back, level + 1
    return level


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help showing each option's default, except None (the option's own text says what leaving it out does)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)
