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
    vector_accesses: int  # ld/st.global.v2/.v4 in the PTX: what alignment hints buy


def _kernel_specs():
    from . import FAMILIES

    return [(kernel, signature, constexprs, attrs, options)
            for family in FAMILIES for kernel, signature, constexprs, options in family.aot_specs()
            for attrs in ({}, aligned_attrs(kernel, signature))]


def aligned_attrs(kernel, signature: dict) -> dict:
    """The specialisation a real launch compiles: every pointer 16-byte aligned (torch's allocations are) and
    every integer the JIT specialises on (not in ``do_not_specialize``) a multiple of 16, as SD latents' sizes
    are. The compiler vectorises the loads and stores it can prove aligned, so this variant, not the one with
    no hints, is the code that runs (its registers, its address arithmetic)."""
    specialised = {param.name for param in kernel.params if not param.do_not_specialize}
    return {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name, kind in signature.items()
            if kind.startswith("*") or (kind in ("i32", "i64") and name in specialised)}


def compile_variant(kernel, signature: dict, constexprs: dict, options: dict, arch: int, attrs: dict | None = None):
    """One variant of a ``triton.jit`` kernel compiled for sm_``arch`` (its ``asm`` holds the TTIR and cubin);
    ``attrs``: argument hints such as :func:`aligned_attrs`."""
    import triton
    from triton.backends.compiler import GPUTarget

    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def compile_all(archs=ARCHS) -> list[KernelResources]:
    """Compile every (kernel, signature, constexprs) variant for each arch and read its resource usage."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kernel, signature, constexprs, attrs, options in _kernel_specs():
            variant = ",".join(f"{k}={v}" for k, v in signature.items() if v != "constexpr" and k.endswith("ptr"))
            variant += "".join(f",{k}={v}" for k, v in constexprs.items()) + (",aligned16" if attrs else "")
            for arch in archs:
                compiled = compile_variant(kernel, signature, constexprs, options, arch, attrs)
                cubin = Path(tmp) / f"{kernel.__name__}_{arch}.cubin"
                cubin.write_bytes(compiled.asm["cubin"])
                (usage,) = [fields for per_arch in resource_usage(cubin).values() for fields in per_arch.values()]
                ttir = compiled.asm["ttir"]
                vector_accesses = len(re.findall(r"\b(?:ld|st)\.global(?:\.\w+)*\.v[24]\.", compiled.asm["ptx"]))
                rows.append(KernelResources(kernel.__name__, variant, arch, int(usage["REG"]),
                                            int(usage["LOCAL"]), int(usage["STACK"]), int(compiled.metadata.shared),
                                            narrow_address_arithmetic(ttir), wide_counter(ttir), vector_accesses))
    return rows


#: Integer arithmetic that can wrap: in 32 bits it must not feed an address or a Philox counter.
_WRAPPING = ("arith.muli", "arith.addi", "arith.subi", "arith.shli")
_NAME = r"%[\w.]+"
_OPERAND = re.compile(r"%[\w#.]+")
#: "%name = op ...", "%name:3 = op ..." (three results, used as %name#0..2); region ops print quoted: "tt.reduce".
_RESULT = re.compile(rf'^({_NAME})(?::(\d+))? = "?([\w.]+)"?(.*)$')
_FOR = re.compile(rf"scf\.for ({_NAME}) = ({_NAME}) to ({_NAME}) step ({_NAME})(?: iter_args\(([^)]*)\))?")
_TERMINATORS = ("scf.yield", "tt.reduce.return", "tt.scan.return")


@dataclasses.dataclass
class _Value:
    """How one SSA value of a TTIR listing is computed: by ``op`` from ``operands`` (value ids), typed ``types``."""

    op: str
    operands: list
    types: str = ""
    text: str = ""


@dataclasses.dataclass
class _Region:
    """An op with regions being read: its result names, operand ids, and what its regions' terminators pass on."""

    op: str
    results: list
    operands: list
    carried: list = dataclasses.field(default_factory=list)  # scf.for: (iter_args id, init id)
    block_arguments: list = dataclasses.field(default_factory=list)
    terminated: list = dataclasses.field(default_factory=list)  # operand ids of each region's terminator


def _strip_locations(line: str) -> str:
    """The line without its ``loc(...)`` annotations (they nest parentheses, and sit inside argument lists)."""
    out, at = [], 0
    while (found := line.find(" loc(", at)) >= 0:
        out.append(line[at:found])
        depth, at = 0, found + 1
        while at < len(line):
            depth += {"(": 1, ")": -1}.get(line[at], 0)
            at += 1
            if depth == 0 and line[at - 1] == ")":
                break
    return ("".join(out) + line[at:]).strip()


def _result_names(definition: re.Match) -> list[str]:
    """How the results of a definition are referred to: ``%x``, or ``%x#0``.. ``%x#2`` for ``%x:3 = ...``."""
    name, count = definition.group(1), definition.group(2)
    return [name] if count is None else [f"{name}#{k}" for k in range(int(count))]


class _Dataflow:
    """Every value of a TTIR listing -> how it is computed: op results, function arguments, loop variables (from
    their init and the loop's scf.yield), reductions' block arguments.

    The printer reuses a name in sibling regions (two loops may both define ``%mask``), so a name is resolved
    through the regions open where it is used, and each definition gets its own id.
    """

    def __init__(self, ttir: str):
        self.values: dict[str, _Value] = {}
        self._scopes: list[dict[str, str]] = [{}]
        self._regions: list[_Region] = []
        for line in map(_strip_locations, ttir.splitlines()):
            self._read(line)

    def _define(self, name: str, value: _Value) -> str:
        key = f"{name}@{len(self.values)}"
        self.values[key] = value
        self._scopes[-1][name] = key
        return key

    def _resolve(self, names: list[str]) -> list[str]:
        """Ids of the definitions ``names`` refer to; a name defined nowhere stays as it is (the walk refuses it)."""
        return [next((scope[name] for scope in reversed(self._scopes) if name in scope), name) for name in names]

    def _open(self, region: _Region) -> None:
        self._regions.append(region)
        self._scopes.append({})

    def _read(self, line: str) -> None:
        if line.startswith("}"):
            self._scopes.pop()
            if line.endswith("{"):  # "} else {": the next region of the same op
                self._scopes.append({})
            else:
                self._close(self._regions.pop())
            return
        region = self._regions[-1] if self._regions else None
        if line.startswith("^bb"):
            region.block_arguments += [self._define(name, _Value("block argument", []))
                                       for name in re.findall(rf"({_NAME}):", line)]
            return
        if line.startswith(_TERMINATORS):
            region.terminated.append(self._resolve(_OPERAND.findall(line.partition(" : ")[0])))
            return
        if line.startswith(("module", "tt.func")):
            self._open(_Region(line.split()[0], [], []))
            for name in re.findall(rf"({_NAME}):", line) if line.startswith("tt.func") else []:
                self._define(name, _Value("argument", []))
            return
        match = _RESULT.match(line)
        results = _result_names(match) if match else []
        loop = _FOR.search(line)
        if loop:
            induction, lower, upper, step, carried = loop.groups()
            pairs = [pair.split(" = ") for pair in carried.split(", ")] if carried else []
            inits = self._resolve([init for _, init in pairs])
            bounds = self._resolve([lower, upper, step])
            self._open(_Region("scf.for", results, inits))
            self._define(induction, _Value("induction variable", bounds))
            self._regions[-1].carried = [(self._define(name, _Value("iter_args", [])), init)
                                         for (name, _), init in zip(pairs, inits)]
            return
        if not match:
            return  # ops without results: stores, tt.return, asserts
        name, _, op, rest = match.groups()
        operands, _, types = rest.partition(" : ")
        if line.endswith("{"):
            self._open(_Region(op, results, self._resolve(_OPERAND.findall(operands.split(")")[0]))))
            return
        operands = self._resolve(_OPERAND.findall(operands))
        for result in results:
            self._define(result, _Value(op, operands, types.strip(), f"{name} = {op}{rest}".strip()))

    def _close(self, region: _Region) -> None:
        """Give the values ``region`` introduces their sources, now that its terminators are known."""
        if region.op in ("module", "tt.func"):
            return
        if region.op == "scf.for":
            # A loop-carried value is its init in the first iteration and the matching scf.yield operand after
            # it (a loop that carries nothing prints no scf.yield).
            for k, (argument, init) in enumerate(region.carried):
                self.values[argument].operands = [init, region.terminated[0][k]]
                self._define(region.results[k], _Value("scf.for", [argument]))
        elif region.op in ("tt.reduce", "tt.scan"):
            # The combine's arguments are (accumulators..., elements...): position k of each comes from operand k
            # and from what the combine returns at k.
            (returned,) = region.terminated
            inputs = len(region.operands)
            for j, argument in enumerate(region.block_arguments):
                self.values[argument].operands = [region.operands[j % inputs], returned[j % inputs]]
            for k, result in enumerate(region.results):
                self._define(result, _Value(region.op, [region.operands[k], returned[k]]))
        elif region.op == "scf.if":
            for k, result in enumerate(region.results):
                self._define(result, _Value("scf.if", [yielded[k] for yielded in region.terminated]))
        else:
            raise ValueError(f"the 64-bit address walk does not know how values flow through {region.op}: "
                             f"teach zs2_kernels/ops/aot.py (_Dataflow._close) before relying on it")


def _narrow_arithmetic_feeding(roots: list[str], values: dict[str, _Value]) -> list[str]:
    """The 32-bit wrapping ops (``arith.muli ... : i32``) among everything the SSA values ``roots`` depend on.

    Walks through loops (a carried offset ``at += frame_size`` is its init and its update) and reductions; a
    name the walk cannot trace raises, so IR it does not understand fails the check instead of ending it.
    """
    seen, stack, narrow = set(), list(roots), []
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in values:
            raise ValueError(f"the 64-bit address walk cannot trace {name} in the TTIR: teach "
                             f"zs2_kernels/ops/aot.py (_Dataflow) its syntax before relying on the check")
        value = values[name]
        if value.op in _WRAPPING and re.search(r"(^|x)i32>?$", value.types):
            narrow.append(value.text)
        stack.extend(value.operands)
    return sorted(narrow)


def narrow_address_arithmetic(ttir: str) -> list[str]:
    """32-bit wrapping arithmetic that reaches a pointer offset (``tt.addptr``) or a 64-bit Philox counter.

    An i32 product such as ``frame * frame_size`` wraps past 2**31 even when it is widened to i64 afterwards,
    so the rule is on everything an address or counter is computed from, not only on the final operand.
    """
    values = _Dataflow(ttir).values
    roots = []
    for value in values.values():
        if value.op == "tt.addptr":
            roots.append(value.operands[1])
        elif value.op == "arith.shrui" and re.fullmatch(r"tensor<[0-9x]*xi64>", value.types):
            roots.append(value.operands[0])  # the counter whose high word tl.randn shifts out
    return _narrow_arithmetic_feeding(roots, values)


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
