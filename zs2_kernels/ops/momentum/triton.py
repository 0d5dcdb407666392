"""Triton kernel of the temporal-momentum EMA over frames (zs2_kernels/DESIGN.md §1.2).

    y_0 = x_0            (or mu * init + (1 - mu) * x_0 with a carried state)
    y_f = mu * y_{f-1} + (1 - mu) * x_f

Each program owns BLOCK elements of one group's frame and walks the F frames keeping the running
value in registers: one read and one write per element, fp32 accumulation whatever the input dtype.
The carried state (``init``, and the optional ``state`` output) is that fp32 running value, so a
video processed chunk by chunk is computed bit for bit like the whole.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _launch

BLOCK = 1024
NUM_WARPS = 4


# Frame and group counts change with every video; never recompile for them. frame_size keeps
# Triton's divisible-by-16 specialisation (it enables vector loads; at most a couple of variants).
# Offsets are int64 (a group can hold >= 2^31 elements): the frame offset is carried and advanced by
# frame_size rather than formed as the 32-bit product frame * frame_size.
@triton.jit(do_not_specialize=["num_frames", "num_blocks"])
def _momentum_update_kernel(x_ptr, init_ptr, y_ptr, state_ptr, num_frames, frame_size, num_blocks, momentum,
                            HAS_INIT: tl.constexpr, STORE_STATE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    group = (pid // num_blocks).to(tl.int64)
    offsets = (pid % num_blocks).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < frame_size
    row = group * frame_size + offsets  # this program's elements of init/state [G, N]
    at = group * num_frames * frame_size + offsets  # of the next frame of x/y [G, F, N]
    if HAS_INIT:
        running = tl.load(init_ptr + row, mask=mask)
        first = 0
    else:
        running = tl.load(x_ptr + at, mask=mask).to(tl.float32)
        tl.store(y_ptr + at, running.to(y_ptr.dtype.element_ty), mask=mask)
        at += frame_size
        first = 1
    # One update expression for every frame, the first of a chunk included (same rounding everywhere).
    for _ in range(first, num_frames):
        x = tl.load(x_ptr + at, mask=mask).to(tl.float32)
        running = momentum * running + (1.0 - momentum) * x
        tl.store(y_ptr + at, running.to(y_ptr.dtype.element_ty), mask=mask)
        at += frame_size
    if STORE_STATE:
        tl.store(state_ptr + row, running, mask=mask)


def momentum_update(x: torch.Tensor, momentum: float, init: torch.Tensor | None = None, *,
                    return_state: bool = False):
    """EMA over dim 1 of a contiguous x [G, F, N]; ``init`` float32 [G, N] or None (validated by the op layer).

    Returns y, or ``(y, state)`` with the float32 running value after the last frame.
    """
    groups, frames, frame_size = x.shape
    y = torch.empty_like(x)
    state = x.new_empty((groups, frame_size), dtype=torch.float32) if return_state else None
    num_blocks = triton.cdiv(frame_size, BLOCK)
    with _launch.device_guard(x):  # an absent init/state is passed as None: a constexpr the variant never touches
        _momentum_update_kernel[(groups * num_blocks,)](
            x, init, y, state, frames, frame_size, num_blocks, float(momentum), HAS_INIT=init is not None,
            STORE_STATE=return_state, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return (y, state) if return_state else y


def aot_specs():
    """(kernel, signature, constexprs, options) for every compiled variant (ahead-of-time compile check)."""
    specs = []
    for dtype in ("fp32", "fp16", "bf16"):
        for has_init in (False, True):
            for store_state in (False, True):
                signature = {"x_ptr": f"*{dtype}", "init_ptr": "*fp32", "y_ptr": f"*{dtype}", "state_ptr": "*fp32",
                             "num_frames": "i32", "frame_size": "i32", "num_blocks": "i32", "momentum": "fp32",
                             "HAS_INIT": "constexpr", "STORE_STATE": "constexpr", "BLOCK": "constexpr"}
                constexprs = {"HAS_INIT": has_init, "STORE_STATE": store_state, "BLOCK": BLOCK}
                for name, present in (("init_ptr", has_init), ("state_ptr", store_state)):
                    if not present:  # the launcher passes None
                        signature[name], constexprs[name] = "constexpr", None
                specs.append((_momentum_update_kernel, signature, constexprs, {"num_warps": NUM_WARPS}))
    return specs
