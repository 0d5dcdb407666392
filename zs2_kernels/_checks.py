"""Argument validation shared by the public API: every error names the argument and the accepted range."""

from __future__ import annotations

import math

import torch

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
    """Return ``value`` as a float after checking it is a finite-or-inf real in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number in [{low}, {high}], got {value!r}")
    value = float(value)
    if math.isnan(value) or not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_int(name: str, value, low: int) -> int:
    """Return ``value`` after checking it is an int >= low."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return value


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype of a name of :data:`DTYPE_NAMES` or :data:`SHORT_DTYPE_NAMES`."""
    long = SHORT_DTYPE_NAMES.get(name, name)
    if long not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {[*DTYPE_NAMES, *SHORT_DTYPE_NAMES]}, got {name!r}")
    return DTYPE_NAMES[long]


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
