"""Triton kernel of the temporal-momentum EMA over frames (DESIGN.md §1.2).

    y_0 = x_0            (or mu * init + (1 - mu) * x_0 with a carried state)
    y_f = mu * y_{f-1} + (1 - mu) * x_f

Each program owns BLOCK elements of one group's frame and walks the F frames keeping the running
value in registers: one read and one write per element, fp32 accumulation whatever the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024
NUM_WARPS = 4


# Frame and group counts change with every video; never recompile for them. frame_size keeps
# Triton's divisible-by-16 specialisation (it enables vector loads; at most a couple of variants).
@triton.jit(do_not_specialize=["num_frames", "num_blocks"])
def _momentum_update_kernel(x_ptr, init_ptr, y_ptr, num_frames, frame_size, num_blocks, momentum,
                            HAS_INIT: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    group = (pid // num_blocks).to(tl.int64)
    offsets = (pid % num_blocks).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < frame_size
    base = group * num_frames * frame_size + offsets
    running = tl.load(x_ptr + base, mask=mask).to(tl.float32)
    if HAS_INIT:
        carried = tl.load(init_ptr + group * frame_size + offsets, mask=mask).to(tl.float32)
        running = momentum * carried + (1.0 - momentum) * running
    tl.store(y_ptr + base, running.to(y_ptr.dtype.element_ty), mask=mask)
    for frame in range(1, num_frames):
        at = base + frame * frame_size
        x = tl.load(x_ptr + at, mask=mask).to(tl.float32)
        running = momentum * running + (1.0 - momentum) * x
        tl.store(y_ptr + at, running.to(y_ptr.dtype.element_ty), mask=mask)


def momentum_update(x: torch.Tensor, momentum: float, init: torch.Tensor | None) -> torch.Tensor:
    """EMA over dim 1 of a contiguous x [G, F, N]; ``init`` [G, N] or None. Inputs are validated by the op layer."""
    groups, frames, frame_size = x.shape
    y = torch.empty_like(x)
    num_blocks = triton.cdiv(frame_size, BLOCK)
    if y.numel():
        _momentum_update_kernel[(groups * num_blocks,)](
            x, x if init is None else init, y, frames, frame_size, num_blocks, float(momentum),
            HAS_INIT=init is not None, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return y


def aot_specs():
    """(kernel, signature, constexprs) for every compiled variant, used by the ahead-of-time compile check."""
    specs = []
    for dtype in ("fp32", "fp16", "bf16"):
        for has_init in (False, True):
            signature = {"x_ptr": f"*{dtype}", "init_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "num_frames": "i32",
                         "frame_size": "i32", "num_blocks": "i32", "momentum": "fp32",
                         "HAS_INIT": "constexpr", "BLOCK": "constexpr"}
            specs.append((_momentum_update_kernel, signature, {"HAS_INIT": has_init, "BLOCK": BLOCK}, NUM_WARPS))
    return specs
