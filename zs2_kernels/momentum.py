"""Public temporal-momentum update: the recursive EMA over frames behind momentum attention."""

from __future__ import annotations

import torch

from . import ops
from ._checks import check_float_tensor, check_number
from .backend import resolve_backend


def momentum_update(x: torch.Tensor, momentum: float, *, init: torch.Tensor | None = None,
                    backend: str | None = None, return_state: bool = False):
    """EMA along dim 1 of ``x`` [G, F, ...]: y_0 = x_0, y_f = mu·y_{f-1} + (1-mu)·x_f.

    Args:
        x: float32/float16/bfloat16 tensor with at least 2 dims, frames on dim 1.
        momentum: mu in [0, 1]. 0 returns x; 1 repeats frame 0 (or ``init``) on every frame.
        init: the running value after the previous chunk's last frame, shape ``x.shape[:1] + x.shape[2:]``;
            then y_0 = mu·init + (1-mu)·x_0. Pass the ``state`` returned by the previous chunk (float32):
            a video processed chunk by chunk then equals the video processed whole bit for bit, in every
            dtype. (x's dtype is accepted too, but the rounded value no longer continues exactly.)
        backend: "triton", "cuda" or "torch" (default: see :mod:`zs2_kernels.backend`).
        return_state: also return the state to pass as the next chunk's ``init``.

    Returns y, a new tensor of x's shape and dtype (accumulated in float32); with ``return_state``,
    ``(y, state)``: the float32 running value after the last frame, shape ``x.shape[:1] + x.shape[2:]``.
    """
    check_float_tensor("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must have shape [G, F, ...] (at least 2 dims), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x must not be empty (every dim >= 1), got shape {tuple(x.shape)}")
    momentum = check_number("momentum", momentum, 0.0, 1.0)
    state_shape = x.shape[:1] + x.shape[2:]
    if init is not None:
        check_float_tensor("init", init)  # its dtype (float32 or x's) and device: checked by the op
        if init.shape != state_shape:
            raise ValueError(f"init must have shape {tuple(state_shape)} (x's shape without dim 1), "
                             f"got {tuple(init.shape)}")
    y, state = ema_frames(x, momentum, init, resolve_backend(x.device, backend), return_state)
    return (y, state) if return_state else y


def ema_frames(x: torch.Tensor, momentum: float, init: torch.Tensor | None, backend: str,
               return_state: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The EMA of :func:`momentum_update` without its argument checks (the attention processor's hot path).

    Returns ``(y, state)``, state None unless ``return_state``. The op validates and makes inputs contiguous.
    """
    groups, frames = x.shape[:2]
    flat_init = None if init is None else init.reshape(groups, -1)
    y, state = ops.call("momentum_update", x.reshape(groups, frames, -1), momentum, flat_init, backend,
                        return_state)
    return y.view(x.shape), state.view(x.shape[:1] + x.shape[2:]) if return_state else None
