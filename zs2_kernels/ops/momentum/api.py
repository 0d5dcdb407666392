"""The momentum family's public functions: :func:`momentum_update` (checked, any shape [G, F, ...]) and
:func:`ema_frames` (the attention processor's hot path, over the op without the public checks)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..._checks import check_float_tensor, check_number
from ..backend import resolve_backend
from .ops import update_op
from .traced import ema_unrolled


def momentum_update(x: Tensor, momentum: float, *, init: Tensor | None = None, backend: str | None = None,
                    return_state: bool = False):
    """EMA along dim 1 of ``x`` [G, F, ...]: y_0 = x_0, y_f = mu·y_{f-1} + (1-mu)·x_f.

    Args:
        x: float32/float16/bfloat16 tensor with at least 2 dims, frames on dim 1.
        momentum: mu in [0, 1]. 0 returns x; 1 repeats frame 0 (or ``init``) on every frame (both exactly,
            also for non-finite values). Elsewhere inf/NaN propagate as the formula says (mu·inf = inf).
        init: the running value after the previous chunk's last frame, shape ``x.shape[:1] + x.shape[2:]``;
            then y_0 = mu·init + (1-mu)·x_0. Pass the ``state`` returned by the previous chunk (float32):
            a video processed chunk by chunk then equals the video processed whole bit for bit, in every
            dtype. (x's dtype is accepted too, but the rounded value no longer continues exactly.)
        backend: "triton", "cuda" or "torch" (default: see :mod:`zs2_kernels.ops.backend`).
        return_state: also return the state to pass as the next chunk's ``init``.

    Returns y, a new tensor of x's shape and dtype (accumulated in float32); with ``return_state``,
    ``(y, state)``: the float32 running value after the last frame, shape ``x.shape[:1] + x.shape[2:]``.
    The op is autograd-free: no gradient flows through it (inputs that require grad are detached, with a warning
    when gradients are being recorded: a loss through y would silently not reach x).
    """
    check_float_tensor("x", x)
    if torch.is_grad_enabled() and (x.requires_grad or (init is not None and init.requires_grad)):
        warnings.warn("momentum_update is autograd-free: x (or init) requires grad, but no gradient flows through "
                      "the result (it is computed from detached inputs)", stacklevel=2)
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


def ema_frames(x: Tensor, momentum: float, init: Tensor | None, backend: str,
               return_state: bool) -> tuple[Tensor, Tensor | None]:
    """The EMA of :func:`momentum_update` without its argument checks (the attention processor's hot path):
    eagerly the registered op on ``backend``, while torch.compile traces the unrolled form of ``traced.py``.

    Returns ``(y, state)``, state None unless ``return_state``. The op validates and makes inputs contiguous.
    A one-dimensional ``init`` is taken as the flat state [G·N] (the op reshapes it), and an empty one means no
    carried state: a compiled caller passes its carried state as a flat tensor in every chunk, the first one's
    empty, with a size the graph leaves unknown (``torch._dynamo.decorators.mark_unbacked``), so the first chunk
    and the later ones share one graph.
    """
    groups, frames = x.shape[:2]
    flat_init = init if init is None or init.dim() == 1 else init.reshape(groups, -1)
    if torch.compiler.is_compiling():  # plain tensor operations Inductor fuses with their neighbours (traced.py)
        y, state = ema_unrolled(x.reshape(groups, frames, -1), momentum, flat_init, return_state)
    else:
        y, state = update_op(x=x.reshape(groups, frames, -1), momentum=momentum, init=flat_init, backend=backend,
                             return_state=return_state)
    return y.view(x.shape), state.view(x.shape[:1] + x.shape[2:]) if return_state else None
