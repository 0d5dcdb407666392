"""Kernels with the 32-bit offset bugs the AOT address walk must flag (tests/ops/test_aot_compile.py).

Run as a script with ``TRITON_INTERPRET`` unset, it compiles each for sm_90 and prints, as JSON, the narrow
arithmetic ``narrow_address_arithmetic`` finds in each. Each is the momentum kernel's walk over frames with the
frame offset in i32 (a group of more than 2**31 elements wraps).
"""

import json

import triton
import triton.language as tl

from zs2_kernels.ops import aot

BLOCK = 1024


@triton.jit(do_not_specialize=["num_frames", "num_blocks"])
def _product_offset_kernel(x_ptr, y_ptr, num_frames, frame_size, num_blocks, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offsets = (pid % num_blocks).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < frame_size
    for frame in range(num_frames):
        at = frame * frame_size + offsets  # i32 product, widened after it wrapped
        tl.store(y_ptr + at, tl.load(x_ptr + at, mask=mask), mask=mask)


@triton.jit(do_not_specialize=["num_frames", "num_blocks"])
def _carried_offset_kernel(x_ptr, y_ptr, num_frames, frame_size, num_blocks, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offsets = (pid % num_blocks).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < frame_size
    first = 1
    tl.store(y_ptr + offsets, tl.load(x_ptr + offsets, mask=mask), mask=mask)
    step = first * frame_size  # i32, carried through the loop: add.s32 each frame, then mul.wide.s32
    for _ in range(first, num_frames):
        at = step + offsets
        tl.store(y_ptr + at, tl.load(x_ptr + at, mask=mask), mask=mask)
        step += frame_size


MUTANTS = (_product_offset_kernel, _carried_offset_kernel)


def main():
    signature = {"x_ptr": "*fp32", "y_ptr": "*fp32", "num_frames": "i32", "frame_size": "i32", "num_blocks": "i32",
                 "BLOCK": "constexpr"}
    found = {kernel.__name__: aot.narrow_address_arithmetic(
        aot.compile_variant(kernel, signature, {"BLOCK": BLOCK}, {"num_warps": 4}, 90).asm["ttir"])
        for kernel in MUTANTS}
    print(json.dumps(found))


if __name__ == "__main__":
    main()
