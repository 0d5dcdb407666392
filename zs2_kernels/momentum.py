"""Public temporal-momentum update: the recursive EMA over frames behind momentum attention."""

from __future__ import annotations

import torch

from . import ops
from ._checks import check_float_tensor, check_number, check_same_device_dtype
from .backend import resolve_backend


def momentum_update(x: torch.Tensor, momentum: float, *, init: torch.Tensor | None = None,
                    backend: str | None = None) -> torch.Tensor:
    """EMA along dim 1 of ``x`` [G, F, ...]: y_0 = x_0, y_f = mu·y_{f-1} + (1-mu)·x_f.

    Args:
        x: float32/float16/bfloat16 tensor with at least 2 dims, frames on dim 1.
        momentum: mu in [0, 1]. 0 returns x; 1 repeats frame 0 (or ``init``) on every frame.
        init: the running value after the previous chunk's last frame, shape ``x.shape[:1] + x.shape[2:]``;
            then y_0 = mu·init + (1-mu)·x_0, so a long video processed chunk by chunk gives the same
            result as processed whole.
        backend: "triton", "cuda" or "torch" (default: see :mod:`zs2_kernels.backend`).

    Returns a new tensor of x's shape and dtype (accumulated in float32).
    """
    check_float_tensor("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must have shape [G, F, ...] (at least 2 dims), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x must not be empty (every dim >= 1), got shape {tuple(x.shape)}")
    momentum = check_number("momentum", momentum, 0.0, 1.0)
    state_shape = x.shape[:1] + x.shape[2:]
    if init is not None:
        check_float_tensor("init", init)
        check_same_device_dtype("init", init, "x", x)
        if init.shape != state_shape:
            raise ValueError(f"init must have shape {tuple(state_shape)} (x's shape without dim 1), "
                             f"got {tuple(init.shape)}")
    return ema_frames(x, momentum, init, resolve_backend(x.device, backend))


def ema_frames(x: torch.Tensor, momentum: float, init: torch.Tensor | None, backend: str) -> torch.Tensor:
    """The EMA of :func:`momentum_update` on already-validated inputs (the attention processor's hot path)."""
    groups, frames = x.shape[:2]
    flat = x.reshape(groups, frames, -1).contiguous()
    flat_init = None if init is None else init.reshape(groups, -1).contiguous()
    return ops.call("momentum_update", flat, momentum, flat_init, backend).view(x.shape)
