"""Temporal momentum: the recursive EMA over frames behind momentum attention (zs2_kernels/DESIGN.md §1.2).

    y_0 = x_0   (or mu·init + (1 - mu)·x_0 with a carried state),    y_f = mu·y_{f-1} + (1 - mu)·x_f

accumulated in float32 whatever the input dtype. Here: the public :func:`momentum_update`, the op
``zs2::momentum_update`` (:data:`update_op`) and :func:`ema_frames`, the attention processor's hot path.
Backends (one module each, the same ``momentum_update`` function): ``reference`` (PyTorch, the CPU path and
the oracle), ``triton`` and ``cuda`` (the CUDA C++ library).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._checks import check_float_tensor, check_number, check_same_device
from ..backend import resolve_backend
from ..registry import BackendTable, Op

IMPLEMENTATIONS = BackendTable(__name__, {"torch": ".reference", "triton": ".triton", "cuda": ".cuda"})


def _check(x: Tensor, momentum: float, init: Optional[Tensor]) -> None:
    """Raise ValueError/TypeError naming the bad argument of ``zs2::momentum_update``."""
    check_float_tensor("x", x)
    if x.dim() != 3 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty [G, F, N] tensor, got shape {tuple(x.shape)}")
    check_number("momentum", momentum, 0.0, 1.0)
    if init is None:
        return
    check_float_tensor("init", init)
    if init.dtype not in (x.dtype, torch.float32):
        raise TypeError(f"init must be float32 (the carried state) or x's dtype {x.dtype}, got {init.dtype}")
    check_same_device("init", init, "x", x)
    if not all(isinstance(size, int) for size in init.shape):
        return  # a carried state traced with sizes left unknown (see ema_frames): checked when the op runs
    if init.numel() == 0:
        return  # no carried state
    if init.shape not in ((x.shape[0], x.shape[2]), (x.shape[0] * x.shape[2],)):
        raise ValueError(f"init must have shape {(x.shape[0], x.shape[2])} ([G, N] of x [G, F, N]) or be that "
                         f"flattened, got {tuple(init.shape)}")


def _update_eager(x: Tensor, momentum: float, init: Optional[Tensor], backend: str,
                  return_state: bool = False) -> tuple[Tensor, Optional[Tensor]]:
    """EMA along dim 1 of x [G, F, N], continuing from ``init`` [G, N] (a previous chunk's state) if given.

    Returns ``(y, state)``: state is the float32 running value after the last frame [G, N] when
    ``return_state``, else None (not computed: it costs a write per element of a frame). Autograd-free:
    inputs are detached, no gradient flows. mu = 0 and mu = 1 are exact copies whatever the values
    (the update formula would turn 0·inf into NaN there); every backend agrees on them.
    """
    module = IMPLEMENTATIONS[backend]
    _check(x, momentum, init)
    resolve_backend(x.device, backend)  # raises when this backend cannot run on x's device
    x = x.detach().contiguous()
    if init is not None and init.numel() == 0:
        init = None
    if init is not None:  # float32: exact; the kernels read the state in float32
        init = init.detach().to(torch.float32).contiguous().view(x.shape[0], x.shape[2])
    if momentum in (0.0, 1.0):
        return _copy_frames(x, momentum, init, return_state)
    if return_state:
        return module.momentum_update(x, momentum, init, return_state=True)
    return module.momentum_update(x, momentum, init), None


def _copy_frames(x: Tensor, momentum: float, init: Optional[Tensor],
                 return_state: bool) -> tuple[Tensor, Optional[Tensor]]:
    """The EMA at mu = 0 (y = x) and mu = 1 (every frame is init, or frame 0): copies, no arithmetic."""
    if momentum == 0.0:
        y, last = x.clone(), x[:, -1]
    else:
        last = x[:, 0] if init is None else init
        y = last.to(x.dtype).unsqueeze(1).expand(x.shape).contiguous()
    return y, last.to(torch.float32, copy=True) if return_state else None


def _update(x: Tensor, momentum: float, init: Optional[Tensor], backend: str,
            return_state: bool = False) -> tuple[Tensor, Tensor]:
    """The registered op: as the eager call, with an empty float32 tensor for a state not asked for."""
    y, state = _update_eager(x, momentum, init, backend, return_state)
    return y, x.new_empty(0, dtype=torch.float32) if state is None else state


update_op = Op("momentum_update", _update, eager=_update_eager)


@update_op.register_fake
def _(x, momentum, init, backend, return_state=False):
    _check(x, momentum, init)  # a raw call on meta tensors refuses what the real op refuses
    state_shape = (x.shape[0], x.shape[2]) if return_state else (0,)
    return x.new_empty(x.shape), x.new_empty(state_shape, dtype=torch.float32)


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
    The op is autograd-free: no gradient flows through it (inputs that require grad are detached).
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


def ema_frames(x: Tensor, momentum: float, init: Tensor | None, backend: str,
               return_state: bool) -> tuple[Tensor, Tensor | None]:
    """The EMA of :func:`momentum_update` without its argument checks (the attention processor's hot path).

    Returns ``(y, state)``, state None unless ``return_state``. The op validates and makes inputs contiguous.
    A one-dimensional ``init`` is taken as the flat state [G·N] (the op reshapes it), and an empty one means no
    carried state: a compiled caller passes its carried state as a flat tensor in every chunk, the first one's
    empty, with a size the graph leaves unknown (``torch._dynamo.decorators.mark_unbacked``), so the first chunk
    and the later ones share one graph.
    """
    groups, frames = x.shape[:2]
    flat_init = init if init is None or init.dim() == 1 else init.reshape(groups, -1)
    y, state = update_op(x=x.reshape(groups, frames, -1), momentum=momentum, init=flat_init, backend=backend,
                         return_state=return_state)
    return y.view(x.shape), state.view(x.shape[:1] + x.shape[2:]) if return_state else None
