"""Ahead-of-time compilation of every Triton kernel variant to cubin, without a GPU (zs2_kernels/DESIGN.md §3).

Catches what the interpreter cannot (type errors, unsupported ops, register spills) and reports the
resources of each kernel. ``python -m zs2_kernels.ops.aot`` prints the table for sm_80 and sm_90
(``--json`` for machine-readable rows). Needs ``TRITON_INTERPRET`` unset: the interpreter replaces
the kernels it would compile.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from .cuobjdump import resource_usage

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
    narrow_arithmetic: list  # i32 arithmetic feeding an address or Philox counter (wraps past 2**31)
    wide_counter: bool  # a 64-bit Philox counter (its high half is shifted out); a 32-bit counter wraps


def _kernel_specs():
    from .momentum import triton as momentum
    from .noise import triton as noise

    return momentum.aot_specs() + noise.aot_specs()


def compile_all(archs=ARCHS) -> list[KernelResources]:
    """Compile every (kernel, signature, constexprs) variant for each arch and read its resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kernel, signature, constexprs, options in _kernel_specs():
            variant = ",".join(f"{k}={v}" for k, v in signature.items() if v != "constexpr" and k.endswith("ptr"))
            variant += "".join(f",{k}={v}" for k, v in constexprs.items())
            for arch in archs:
                source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
                compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
                cubin = Path(tmp) / f"{kernel.__name__}_{arch}.cubin"
                cubin.write_bytes(compiled.asm["cubin"])
                (usage,) = [fields for per_arch in resource_usage(cubin).values() for fields in per_arch.values()]
                ttir = compiled.asm["ttir"]
                rows.append(KernelResources(kernel.__name__, variant, arch, int(usage["REG"]),
                                            int(usage["LOCAL"]), int(usage["STACK"]), int(compiled.metadata.shared),
                                            narrow_address_arithmetic(ttir), wide_counter(ttir)))
    return rows


#: One SSA definition of a TTIR listing: "%name = dialect.op operands : types".
_DEFINITION = re.compile(r"^\s*(%[\w#.]+)(?::\d+)? = ([\w.]+)(.*)$")
_OPERAND = re.compile(r"%[\w#.]+")
#: Integer arithmetic that can wrap: in 32 bits it must not feed an address or a Philox counter.
_WRAPPING = ("arith.muli", "arith.addi", "arith.subi", "arith.shli")


def _definitions(ttir: str) -> dict[str, tuple[str, str]]:
    """SSA name -> (op, rest of the line without its location) for every definition in the listing."""
    found = {}
    for line in ttir.splitlines():
        match = _DEFINITION.match(line)
        if match:
            found[match.group(1)] = (match.group(2), match.group(3).split(" loc(")[0])
    return found


def _narrow_arithmetic_feeding(roots: list[str], definitions: dict) -> list[str]:
    """The 32-bit wrapping ops (``arith.muli ... : i32``) among everything the SSA values ``roots`` depend on."""
    seen, stack, narrow = set(), list(roots), []
    while stack:
        name = stack.pop()
        if name in seen or name not in definitions:
            continue  # function arguments, loop variables and block arguments end the walk
        seen.add(name)
        op, rest = definitions[name]
        operands, _, types = rest.partition(" : ")
        if op in _WRAPPING and re.search(r"(^|x)i32>?$", types.strip()):
            narrow.append(f"{name} = {op}{rest}".strip())
        stack.extend(_OPERAND.findall(operands))
    return sorted(narrow)


def narrow_address_arithmetic(ttir: str) -> list[str]:
    """32-bit wrapping arithmetic that reaches a pointer offset (``tt.addptr``) or a 64-bit Philox counter.

    An i32 product such as ``frame * frame_size`` wraps past 2**31 even when it is widened to i64 afterwards,
    so the rule is on everything an address or counter is computed from, not only on the final operand.
    """
    definitions = _definitions(ttir)
    roots = []
    for op, rest in definitions.values():
        operands = _OPERAND.findall(rest.partition(" : ")[0])
        if op == "tt.addptr":
            roots.append(operands[1])
        elif op == "arith.shrui" and re.search(r": tensor<[0-9x]*xi64>$", rest):
            roots.append(operands[0])  # the counter whose high word tl.randn shifts out
    return _narrow_arithmetic_feeding(roots, definitions)


def wide_counter(ttir: str) -> bool:
    """True when the listing shifts a 64-bit tensor right: how ``tl.randn`` splits a 64-bit counter into its two
    32-bit Philox words (with a 32-bit counter the high word is the constant 0 and no shift is emitted)."""
    return re.search(r"arith\.shrui .*: tensor<[0-9x]*xi64>", ttir) is not None


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
