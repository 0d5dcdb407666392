"""The momentum EMA in plain PyTorch: the ``torch`` backend (the CPU path) and the oracle of the kernels.

``momentum_update`` is the recursion y_f = mu·y_{f-1} + (1 - mu)·x_f (zs2_kernels/DESIGN.md §1.2);
``momentum_matrix_form`` is the paper's literal lower-triangular matrix form, slow on purpose: the
"paper reference" the benchmarks compare with and an independent check of the recursion.
"""

from __future__ import annotations

import torch


def momentum_update(x: torch.Tensor, momentum: float, init: torch.Tensor | None = None, *,
                    return_state: bool = False):
    """Recursive EMA along dim 1: y_0 = x_0 (or mu*init + (1-mu)*x_0), y_f = mu*y_{f-1} + (1-mu)*x_f.

    Accumulates in float32 (float64 for float64 input) and returns y in x's dtype. ``init`` has x's
    shape without dim 1, in any float dtype. With ``return_state`` returns ``(y, state)``: the running
    value after the last frame in the accumulation dtype, unrounded, in its own storage; passed back
    as ``init`` it continues the recursion bit for bit.
    """
    compute = torch.promote_types(x.dtype, torch.float32)
    # Every frame's (1-mu)·x_f in one pass, then per frame one add: y_f = (1-mu)·x_f + mu·y_{f-1} (the kernels'
    # formula; torch.lerp rounds alike but turns inf into NaN). Computed into a buffer of the accumulation dtype
    # (the output itself for float32 input), so a frame costs one operation: on the small tensors of a CPU
    # attention layer the per-operation overhead, not the arithmetic, is the cost.
    if compute == x.dtype:
        y = torch.mul(x, 1.0 - momentum, out=x.new_empty(x.shape))
    else:
        y = x.to(compute) * (1.0 - momentum)
    frames = y.unbind(1)
    if init is None:
        frames[0].copy_(x[:, 0])
    else:
        torch.add(frames[0], init.to(compute), alpha=momentum, out=frames[0])
    for previous, frame in zip(frames, frames[1:]):
        torch.add(frame, previous, alpha=momentum, out=frame)
    out = y if y.dtype == x.dtype else y.to(x.dtype)
    if not return_state:
        return out
    # A copy: the state is a view of the buffer, which would keep all of it alive.
    return out, frames[-1].clone(memory_format=torch.contiguous_format)


def momentum_matrix_form(x: torch.Tensor, momentum: float) -> torch.Tensor:
    """The paper's matrix form of the EMA: frames 1.. scaled by (1-mu), then U[f, g] = mu^(f-g), g <= f.

    Equal to ``momentum_update(x, momentum)``; kept literal for tests and the benchmark baseline.
    """
    num_frames = x.shape[1]
    compute = torch.promote_types(x.dtype, torch.float32)
    idx = torch.arange(num_frames, device=x.device)
    power = (idx[:, None] - idx[None, :]).clamp(min=0).to(compute)
    upper = torch.where(idx[:, None] >= idx[None, :], momentum**power, torch.zeros_like(power))
    scale = torch.full((num_frames,), 1.0 - momentum, device=x.device, dtype=compute)
    scale[0] = 1.0
    scaled = x.to(compute) * scale.view(1, num_frames, *([1] * (x.dim() - 2)))
    return torch.einsum("fg,bg...->bf...", upper, scaled).to(x.dtype)
