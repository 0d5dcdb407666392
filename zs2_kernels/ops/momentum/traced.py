"""The momentum EMA as plain tensor operations for compiled graphs: what ``ema_frames`` runs while torch.compile
traces (eager calls keep the registered op and its kernels).

The registered op is opaque to Inductor: every self-attention layer paid a dispatcher call and a copy in and out
of it. Unrolled over a chunk's frames (F is static in a graph: one graph per chunk length), the recursion is
pointwise work over [G, N] that Inductor fuses into one kernel with the layout copy before it and the casts after
it. It is the reference recursion op for op (``torch.add(x_f·(1 - mu), y_{f-1}, alpha=mu)`` in float32), so
dynamo's eager backend reproduces the eager video bit for bit; Inductor's code rounds alike up to fused
multiply-adds.

The carried state arrives as the processor keeps it: absent, a flat float32 [G·N], or (the first chunk of a
compiled step) an empty tensor whose size the graph leaves unknown. Branching on that size would specialise the
graph, so the state is padded to [G·N] with zeros and a 0-dim flag ``present`` selects, per element, between
y_0 = x_0 and y_0 = mu·init + (1 - mu)·x_0 with ``torch.where`` (exact: no 0·inf mixing of the unused branch).
The block-end state is an ordinary graph output, so a collective (the multi-GPU exchange) can sit between one
chunk's state and the next chunk's ``init``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def ema_unrolled(x: Tensor, momentum: float, init: Tensor | None,
                 return_state: bool) -> tuple[Tensor, Tensor | None]:
    """EMA along dim 1 of x [G, F, N] (``zs2::momentum_update``'s contract, its checks left to the eager op):
    returns ``(y, state)``, y in x's dtype, state the float32 value after the last frame [G, N] or None."""
    groups, frames, width = x.shape
    first = x[:, 0].float()
    present = None
    if init is not None:
        flat = init.reshape(-1).float()
        carried = torch.cat([flat, flat.new_zeros(groups * width)])[:groups * width].view(groups, width)
        present = torch.ones_like(flat).sum() > 0  # a tensor, not a Python bool: no guard on the unknown size
    if momentum == 0.0:
        return x.clone(), x[:, -1].float() if return_state else None
    if momentum == 1.0:  # every frame is init (when carried) or frame 0: copies, no arithmetic
        state = first if present is None else torch.where(present, carried, first)
        return state.to(x.dtype).unsqueeze(1).expand(x.shape).contiguous(), state if return_state else None
    keep = 1.0 - momentum
    state = first if present is None else torch.where(present, torch.add(first * keep, carried, alpha=momentum),
                                                      first)
    outputs = [state]
    for frame in range(1, frames):
        state = torch.add(x[:, frame].float() * keep, state, alpha=momentum)
        outputs.append(state)
    return torch.stack(outputs, dim=1).to(x.dtype), state if return_state else None
