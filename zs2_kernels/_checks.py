"""Argument validation shared by the public API: every error names the argument and the accepted range."""

from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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


def check_same_device_dtype(name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Raise ValueError/TypeError if ``value`` and ``ref`` differ in device or dtype."""
    if value.device != ref.device:
        raise ValueError(f"{name} is on {value.device} but {ref_name} is on {ref.device}; they must match")
    if value.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {ref_name} has {ref.dtype}; they must match")
