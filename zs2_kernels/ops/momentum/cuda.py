"""The momentum EMA on the CUDA C++ backend: the binding of ``zs2_momentum_update`` (csrc/zs2_ops.h)."""

from __future__ import annotations

import torch

from .. import cuda_library as lib


def momentum_update(x: torch.Tensor, momentum: float, init: torch.Tensor | None = None, *,
                    return_state: bool = False):
    """EMA over dim 1 of x [G, F, N] (see ``reference.momentum_update``); init float32 [G, N] or None.

    Returns y, or ``(y, state)`` with the float32 running value after the last frame (F >= 1).
    """
    library, device = lib.prepare(x, *([] if init is None else [init]))
    code = lib.dtype_code("x", x)
    if x.dim() != 3:
        raise ValueError(f"x must be [G, F, N], got shape {tuple(x.shape)}")
    G, F, N = x.shape
    x = x.contiguous()
    if init is not None:
        lib.dtype_code("init", init, torch.float32)
        if tuple(init.shape) != (G, N):
            raise ValueError(f"init must have shape {(G, N)}, got {tuple(init.shape)}")
        init = init.contiguous()
    y = torch.empty_like(x)
    state = torch.empty(G, N, dtype=torch.float32, device=device) if return_state else None
    with torch.cuda.device(device):
        lib.check_status(library, library.zs2_momentum_update(
            x.data_ptr(), None if init is None else init.data_ptr(), y.data_ptr(),
            None if state is None else state.data_ptr(), G, F, N, float(momentum), code, lib.stream(device)))
    return (y, state) if return_state else y
