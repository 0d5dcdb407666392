"""Build ``libzs2_cuda.so`` from ``zs2_ops.cu`` with nvcc, and report its kernels' resource usage.

Standard library only, so setup.py and the tests can import it before anything else is installed:

* ``build_library(output_path)`` compiles cubins for each arch in ``archs`` plus PTX for the newest one
  (the driver JIT-compiles that for newer GPUs), with warnings as errors. The CUDA runtime is linked
  statically (nvcc's default) and its symbols are kept private (``--exclude-libs,ALL``, hidden
  visibility), so loading the library needs no CUDA toolkit and cannot bind to the ``libcudart`` torch
  has already loaded; only the ``zs2_*`` functions are exported.
* ``resource_usage(library_path)`` parses ``cuobjdump -res-usage``: registers, stack, shared and local
  (spill) memory per kernel and arch.

``python csrc/build.py OUT.so`` builds and prints the resource table.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "zs2_ops.cu"
DEFAULT_ARCHS = (80, 90)


def find_nvcc() -> str | None:
    """Path of nvcc: ``$NVCC``, then PATH, then ``$CUDA_HOME/bin``; None when there is none."""
    candidates = [os.environ.get("NVCC"), shutil.which("nvcc")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(str(Path(home) / "bin" / "nvcc"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def nvcc_command(output_path: Path, nvcc: str = "nvcc", archs=DEFAULT_ARCHS) -> list[str]:
    """The nvcc command line ``build_library`` runs."""
    gencode = []
    for arch in archs:
        gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    newest = max(archs)
    gencode += ["-gencode", f"arch=compute_{newest},code=compute_{newest}"]
    return [
        nvcc, "-O3", "-std=c++17", "-shared",
        "-Xcompiler", "-fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror",
        "-Werror", "all-warnings",
        "-cudart", "static",
        "-Xlinker", "--exclude-libs,ALL",
        *gencode,
        "-o", str(output_path), str(SOURCE),
    ]  # fmt: skip


def build_library(output_path, *, nvcc: str = "nvcc", archs=DEFAULT_ARCHS) -> Path:
    """Compile ``zs2_ops.cu`` into the shared library ``output_path`` and return its path.

    Raises ``RuntimeError`` with nvcc's output when compilation fails.
    """
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    command = nvcc_command(output_path, nvcc, tuple(archs))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"nvcc failed (exit {result.returncode}): {' '.join(command)}\n{result.stdout}{result.stderr}"
        )
    return output_path


def cuda_home(nvcc: str) -> Path | None:
    """The toolkit root nvcc uses (its ``TOP``, from ``nvcc --dryrun``): right even when nvcc is a wrapper script."""
    result = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("#$ TOP="):
            return Path(line.removeprefix("#$ TOP=").strip()).resolve()
    return None


def _load_cuobjdump_reader():
    """The package's stdlib-only cuobjdump reader, loaded by path (nothing needs to be installed yet)."""
    path = Path(__file__).resolve().parents[1] / "zs2_kernels" / "ops" / "cuobjdump.py"
    spec = importlib.util.spec_from_file_location("zs2_cuobjdump", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_READER = _load_cuobjdump_reader()


def find_cuobjdump(nvcc: str | None = None) -> str | None:
    """cuobjdump: ``$CUOBJDUMP``, PATH, nvcc's toolkit, or the copy bundled with triton; None if none."""
    nvcc = nvcc or find_nvcc()
    return _READER.find_cuobjdump(cuda_home(nvcc) if nvcc else None)


def resource_usage(library_path, cuobjdump: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """``{arch: {kernel: {"REG": .., "STACK": .., "SHARED": .., "LOCAL": .., ...}}}`` of the built library."""
    return _READER.resource_usage(library_path, cuobjdump or find_cuobjdump())


def format_usage(usage: dict[str, dict[str, dict[str, int]]]) -> str:
    """A Markdown table, one row per kernel; each cell lists the archs' values as ``sm_80 / sm_90``."""
    archs = sorted(usage)
    kernels = sorted({kernel for per_arch in usage.values() for kernel in per_arch})
    columns = (("registers", "REG"), ("shared (B)", "SHARED"), ("stack (B)", "STACK"), ("local/spill (B)", "LOCAL"))
    lines = [
        "| kernel | " + " | ".join(f"{title} {' / '.join(archs)}" for title, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for kernel in kernels:
        cells = [" / ".join(str(usage[arch].get(kernel, {}).get(key, "-")) for arch in archs) for _, key in columns]
        lines.append(f"| `{kernel}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python csrc/build.py OUTPUT.so", file=sys.stderr)
        return 2
    nvcc = find_nvcc()
    if nvcc is None:
        print("nvcc not found (set NVCC or CUDA_HOME, or put it on PATH)", file=sys.stderr)
        return 1
    start = time.perf_counter()
    path = build_library(argv[0], nvcc=nvcc)
    print(f"built {path} in {time.perf_counter() - start:.1f} s")
    if find_cuobjdump(nvcc) is not None:
        print(format_usage(resource_usage(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
