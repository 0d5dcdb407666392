"""Ahead-of-time compilation of every Triton kernel variant to cubin, without a GPU (DESIGN.md §4).

Catches what the interpreter cannot (type errors, unsupported ops, register spills) and reports the
resources of each kernel. ``python -m zs2_kernels.aot`` prints the table for sm_80 and sm_90
(``--json`` for machine-readable rows). Needs ``TRITON_INTERPRET`` unset: the interpreter replaces
the kernels it would compile.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import subprocess
import tempfile
from pathlib import Path

ARCHS = (80, 90)


@dataclasses.dataclass(frozen=True)
class KernelResources:
    """Resource usage of one compiled kernel variant, as cuobjdump reports it."""

    kernel: str
    variant: str
    arch: int
    registers: int
    local_bytes: int  # > 0 means register spills to local memory
    stack_bytes: int
    shared_bytes: int


def _cuobjdump() -> str:
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else "cuobjdump"


def _kernel_specs():
    from .kernels import momentum, noise_search

    return momentum.aot_specs() + noise_search.aot_specs()


def compile_all(archs=ARCHS) -> list[KernelResources]:
    """Compile every (kernel, signature, constexprs) variant for each arch and read its resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kernel, signature, constexprs, num_warps in _kernel_specs():
            variant = ",".join(f"{k}={v}" for k, v in signature.items() if v != "constexpr" and k.endswith("ptr"))
            variant += "".join(f",{k}={v}" for k, v in constexprs.items())
            for arch in archs:
                source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
                compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                          options={"num_warps": num_warps})
                cubin = Path(tmp) / f"{kernel.__name__}_{arch}.cubin"
                cubin.write_bytes(compiled.asm["cubin"])
                report = subprocess.run([_cuobjdump(), "-res-usage", str(cubin)], check=True,
                                        capture_output=True, text=True).stdout
                usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", report))
                rows.append(KernelResources(kernel.__name__, variant, arch, int(usage["REG"]),
                                            int(usage["LOCAL"]), int(usage["STACK"]),
                                            int(compiled.metadata.shared)))
    return rows


def main() -> None:
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if "--json" in sys.argv[1:]:
        print(json.dumps([dataclasses.asdict(row) for row in compile_all()]))
        return
    print(f"{'kernel':28s} {'arch':>4s} {'regs':>4s} {'spill':>5s} {'smem':>6s}  variant")
    for row in compile_all():
        print(f"{row.kernel:28s} {row.arch:4d} {row.registers:4d} {row.local_bytes:5d} {row.shared_bytes:6d}  "
              f"{row.variant}")


if __name__ == "__main__":
    main()
