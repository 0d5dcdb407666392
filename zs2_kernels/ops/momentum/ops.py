"""The registered op ``zs2::momentum_update`` (:data:`update_op`): argument checks, the eager implementation by
backend, the fake kernel; the public functions over it are in ``api.py``."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._checks import check_float_tensor, check_number, check_same_device
from ..backend import resolve_backend
from ..registry import BackendTable, Op

IMPLEMENTATIONS = BackendTable(__package__, {"torch": ".reference", "triton": ".triton", "cuda": ".cuda"})


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
    update = IMPLEMENTATIONS.implementation(backend, "momentum_update")
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
        return update(x, momentum, init, return_state=True)
    return update(x, momentum, init), None


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
