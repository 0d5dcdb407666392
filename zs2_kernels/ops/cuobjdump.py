"""Reading ``cuobjdump -res-usage``: registers, stack, shared and local (spill) memory per kernel and arch.

Standard library only: ``aot.py`` reads the Triton kernels' cubins with it, and ``csrc/build.py`` (which
must run before anything is installed) loads this file by path to read the CUDA C++ library.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

_ARCH_LINE = re.compile(r"^arch = (sm_\d+)")
_FUNCTION_LINE = re.compile(r"^\s*Function (\S+):")
_FIELD = re.compile(r"([A-Z_]+(?:\[\d+\])?):(\d+)")


def find_cuobjdump(toolkit: Path | None = None) -> str | None:
    """cuobjdump: ``$CUOBJDUMP``, PATH, ``toolkit``/bin, or the copy bundled with triton; None if none."""
    candidates = [os.environ.get("CUOBJDUMP"), shutil.which("cuobjdump")]
    if toolkit is not None:
        candidates.append(str(Path(toolkit) / "bin" / "cuobjdump"))
    triton = importlib.util.find_spec("triton")  # locates the package without importing it
    if triton is not None and triton.submodule_search_locations:
        for location in triton.submodule_search_locations:
            candidates.append(str(Path(location) / "backends" / "nvidia" / "bin" / "cuobjdump"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def resource_usage(binary, cuobjdump: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """``{arch: {kernel: {"REG": .., "STACK": .., "SHARED": .., "LOCAL": .., ...}}}`` of a cubin or library
    (arch "" for a lone cubin, whose listing names none).

    Kernel names are demangled with c++filt when it is available. LOCAL > 0 or STACK > 0 means spills
    or a local-memory array.
    """
    tool = cuobjdump or find_cuobjdump()
    if tool is None:
        raise RuntimeError("cuobjdump not found (set CUOBJDUMP, or put the CUDA toolkit's bin on PATH)")
    text = subprocess.run([tool, "-res-usage", str(binary)], capture_output=True, text=True, check=True).stdout
    usage: dict[str, dict[str, dict[str, int]]] = {}
    arch = ""  # a lone cubin has no "arch = sm_XX" line
    function = None
    for line in text.splitlines():
        if match := _ARCH_LINE.match(line):
            arch = match.group(1)
            usage.setdefault(arch, {})
        elif match := _FUNCTION_LINE.match(line):
            function = match.group(1)
        elif function is not None and (fields := _FIELD.findall(line)):
            usage.setdefault(arch, {})[function] = {key: int(value) for key, value in fields}
            function = None
    return {arch: _demangled(kernels) for arch, kernels in usage.items()}


def _demangled(kernels: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None or not kernels:
        return kernels
    names = list(kernels)
    result = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True)
    pretty = result.stdout.splitlines() if result.returncode == 0 else names
    if len(pretty) != len(names):
        return kernels
    return {_short_name(new): kernels[old] for old, new in zip(names, pretty)}


def _short_name(demangled: str) -> str:
    """``void (anonymous namespace)::kl_partial_kernel<__half, 8>(...)`` -> ``kl_partial_kernel<__half, 8>``."""
    name = demangled.split("(anonymous namespace)::")[-1]
    depth = 0
    for position, char in enumerate(name):
        depth += char == "<"
        depth -= char == ">"
        if char == "(" and depth == 0:
            return name[:position]
    return name
