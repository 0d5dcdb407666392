"""The hand-written CUDA C++ backend: csrc/ (nvcc build, resource usage) and its bindings (zs2_kernels.ops.cuda_library,
zs2_kernels.ops.momentum.cuda, zs2_kernels.ops.noise.cuda).

Without a GPU: the library compiles for sm_80 and sm_90 with warnings as errors, no kernel spills or uses
a stack, the binding loads it and finds its symbols, and misuse (CPU tensors, missing library, bad
arguments) raises clear errors. Compile tests skip when nvcc is absent.
With a GPU (``gpu`` marker): numerics against the PyTorch references for every dtype and odd sizes
(outputs NaN-poisoned, so an unwritten element fails), determinism, and a compute-sanitizer memcheck run
of all three launchers. The same numerics checks, on fewer sizes, also run without a GPU on a host
emulation of the kernels (zs2_ops.cu compiled by g++; see HOST_EMULATION_HEADER).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import zs2_kernels
from zs2_kernels.ops import cuda_library
from zs2_kernels.ops.momentum import cuda as momentum_cuda
from zs2_kernels.ops.momentum import reference as momentum_reference
from zs2_kernels.ops.noise import cuda as noise_cuda
from zs2_kernels.ops.noise import reference as noise_reference

from helpers import DTYPE_IDS, DTYPES, gpu_only

#: The backend's three entry points, as the op layer calls them.
BINDINGS = SimpleNamespace(momentum_update=momentum_cuda.momentum_update, kl_sums=noise_cuda.kl_sums,
                           compose=noise_cuda.compose)

ROOT = Path(__file__).resolve().parents[2]


def _import_build_module():
    """csrc/ is not a package: import csrc/build.py by path."""
    spec = importlib.util.spec_from_file_location("zs2_csrc_build", ROOT / "csrc" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _import_build_module()
NVCC = build.find_nvcc()
SIZES = (1, 7, 1000, 4 * 64 * 64 + 3)  # 1000: vector path for every dtype; the others: scalar fallback
KERNEL_FAMILIES = ("momentum_kernel", "kl_partial_kernel", "kl_finish_kernel", "compose_kernel")
CLEAR_GPU_ERROR = re.escape("the CUDA C++ backend needs CUDA tensors / a GPU")
CLEAR_MISSING_ERROR = re.escape("the CUDA C++ backend library was not built")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def built_library(tmp_path_factory) -> Path:
    """libzs2_cuda.so built from this checkout (once per session)."""
    if NVCC is None:
        pytest.skip("nvcc not found: the CUDA C++ backend cannot be compiled here")
    path = tmp_path_factory.mktemp("zs2_cuda") / "libzs2_cuda.so"
    start = time.perf_counter()
    build.build_library(path, nvcc=NVCC)
    print(f"\nbuilt {path} in {time.perf_counter() - start:.1f} s")
    return path


@pytest.fixture
def use_built_library(built_library, monkeypatch) -> Path:
    monkeypatch.setenv(cuda_library.ENV_VAR, str(built_library))
    return built_library


@pytest.fixture
def backend(request, monkeypatch):
    """The bindings, using the library built from this checkout, or the installed one without nvcc."""
    if NVCC is not None:
        monkeypatch.setenv(cuda_library.ENV_VAR, str(request.getfixturevalue("built_library")))
    elif not cuda_library.library_path().is_file():
        pytest.skip("neither nvcc nor an installed CUDA C++ backend library")
    return BINDINGS


# --------------------------------------------------------------------------- build, resources, binding (no GPU)
def test_library_has_cubins_for_sm80_sm90_and_ptx(built_library):
    cuobjdump = build.find_cuobjdump(NVCC)
    if cuobjdump is None:
        pytest.skip("cuobjdump not found")
    elves = subprocess.run([cuobjdump, "--list-elf", str(built_library)], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    ptx = subprocess.run([cuobjdump, "--list-ptx", str(built_library)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert "sm_80" in elves and "sm_90" in elves
    assert "sm_90" in ptx or "compute_90" in ptx


def test_kernels_do_not_spill(built_library):
    if build.find_cuobjdump(NVCC) is None:
        pytest.skip("cuobjdump not found")
    usage = build.resource_usage(built_library)
    print("\n" + build.format_usage(usage))
    assert {"sm_80", "sm_90"} <= set(usage)
    for arch in ("sm_80", "sm_90"):
        kernels = usage[arch]
        # 3 dtypes x (vector, scalar) for momentum, kl_partial and compose, plus kl_finish.
        assert len(kernels) == 19, sorted(kernels)
        for family in KERNEL_FAMILIES:
            assert any(family in name for name in kernels), (arch, family)
        for name, fields in kernels.items():
            assert fields["LOCAL"] == 0, f"{name} on {arch} spills {fields['LOCAL']} bytes to local memory"
            assert fields["STACK"] == 0, f"{name} on {arch} uses a {fields['STACK']}-byte stack"


def test_binding_loads_library_and_symbols(use_built_library):
    library = cuda_library.load()
    for name in cuda_library._SIGNATURES:
        assert getattr(library, name) is not None
    # The statically linked CUDA runtime stays private to the library (it must not clash with torch's).
    with pytest.raises(AttributeError):
        library.cudaLaunchKernel  # noqa: B018
    assert cuda_library.is_available() == torch.cuda.is_available()


def test_workspace_size(use_built_library):
    library = cuda_library.load()
    assert library.zs2_kl_sums_workspace_size(5, 3, 4096) == 0  # one chunk: written directly
    # Five chunks of 4096, each with A, the 5 C's and E of the 3 batch items.
    assert library.zs2_kl_sums_workspace_size(5, 3, 4 * 64 * 64 + 3) == 3 * 7 * 5
    assert library.zs2_kl_sums_workspace_size(0, 2, 4097) == 2 * 2 * 2  # no candidates: A and E
    assert library.zs2_kl_sums_workspace_size(5, 3, 0) == -1


def test_launcher_errors_carry_a_message(use_built_library):
    """Argument errors are caught before any CUDA call, so they are testable without a GPU."""
    library = cuda_library.load()
    with pytest.raises(RuntimeError, match="unknown dtype code 7"):
        cuda_library.check_status(library, library.zs2_momentum_update(None, None, None, None, 1, 1, 1, 0.5, 7, None))
    with pytest.raises(RuntimeError, match="a state needs at least one frame"):
        cuda_library.check_status(library, library.zs2_momentum_update(16, None, 16, 16, 2, 0, 4, 0.5, 0, None))
    with pytest.raises(RuntimeError, match="negative size"):
        cuda_library.check_status(library, library.zs2_compose(None, 0, None, None, None, None, 1, -1, 1, 0, None))
    with pytest.raises(RuntimeError, match="needs a workspace"):
        cuda_library.check_status(library, library.zs2_kl_sums(16, 5000, 16, 16, 16, 16, None, 2, 1, 5000, 0, None))
    with pytest.raises(RuntimeError, match="null prev, candidates, A, C or E"):
        cuda_library.check_status(library, library.zs2_kl_sums(16, 8, 16, 16, 16, None, None, 2, 1, 8, 0, None))
    with pytest.raises(RuntimeError, match="null prev, index, coefficients or out"):
        cuda_library.check_status(library, library.zs2_compose(16, 8, 16, 16, None, 16, 2, 1, 8, 0, None))
    # Empty problems are no-ops that never touch CUDA.
    assert library.zs2_momentum_update(None, None, None, None, 0, 4, 4, 0.5, 0, None) == 0


def test_import_touches_neither_library_nor_cuda():
    code = (
        "import torch, zs2_kernels.ops.cuda_library, zs2_kernels.ops.momentum.cuda, zs2_kernels.ops.noise.cuda\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert 'libzs2_cuda' not in maps, 'library loaded at import'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised at import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_cpu_tensors_raise_clear_error(use_built_library):
    prev = torch.randn(2, 8)
    candidates = torch.randn(3, 2, 8)
    with pytest.raises(RuntimeError, match=CLEAR_GPU_ERROR):
        momentum_cuda.momentum_update(torch.randn(2, 3, 8), 0.5)
    with pytest.raises(RuntimeError, match=CLEAR_GPU_ERROR):
        noise_cuda.kl_sums(prev, candidates)
    with pytest.raises(RuntimeError, match=CLEAR_GPU_ERROR):
        noise_cuda.compose(prev, candidates, torch.zeros(2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.float64))


def test_missing_library_raises_clear_error(monkeypatch, tmp_path):
    missing = tmp_path / "libzs2_cuda.so"
    monkeypatch.setenv(cuda_library.ENV_VAR, str(missing))
    assert cuda_library.library_path() == missing
    assert not cuda_library.is_available()
    prev = torch.randn(2, 8)
    candidates = torch.randn(3, 2, 8)
    for call in (
        lambda: momentum_cuda.momentum_update(torch.randn(2, 3, 8), 0.5),
        lambda: noise_cuda.kl_sums(prev, candidates),
        lambda: noise_cuda.compose(prev, candidates, torch.zeros(2, dtype=torch.long), torch.zeros(2, 3)),
    ):
        with pytest.raises(RuntimeError, match=CLEAR_MISSING_ERROR) as error:
            call()
        assert str(missing) in str(error.value) and cuda_library.ENV_VAR in str(error.value)


def test_default_library_location(monkeypatch):
    monkeypatch.delenv(cuda_library.ENV_VAR, raising=False)
    assert cuda_library.library_path() == Path(zs2_kernels.__file__).resolve().parent / "_lib" / "libzs2_cuda.so"


# --------------------------------------------------------------------------- numerics checks (GPU and host emulation)
ATOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def assert_as_accurate_as_torch(kernel, plain, truth, atol):
    """|kernel - truth| <= 2 |plain - truth| + atol·max(1, |truth|), where truth is float64 and plain is the
    PyTorch reference on the same inputs and dtype. A NaN (unwritten, poisoned) output fails."""
    if truth.numel() == 0:
        return
    truth = truth.double()
    kernel_error = (kernel.double() - truth).abs().max().item()
    plain_error = (plain.double() - truth).abs().max().item()
    scale = max(1.0, truth.abs().max().item())
    assert kernel_error <= 2 * plain_error + atol * scale, (kernel_error, plain_error)


def momentum_truth(x, mu, init):
    state = None if init is None else init.double()
    frames = []
    for f in range(x.shape[1]):
        frame = x[:, f].double()
        state = frame if state is None else mu * state + (1 - mu) * frame
        frames.append(state)
    return torch.stack(frames, dim=1)


def check_momentum(ops, device, dtype, size, frames, mu, with_init, offset=0):
    """Run ops.momentum_update on x [3, F, N] starting `offset` elements into its buffer (offset 1 defeats the
    16-byte vector path) and compare with the reference; the float32 state it returns must be the unrounded
    last value, and carried from a first chunk of frames to the rest it must reproduce y bit for bit."""
    generator = torch.Generator(device).manual_seed(size * 100 + frames)
    buffer = torch.randn(3 * frames * size + offset, device=device, generator=generator).to(dtype)
    x = buffer[offset:].view(3, frames, size)
    init = torch.randn(3, size, device=device, generator=generator) if with_init else None  # a float32 state
    y, state = ops.momentum_update(x, mu, init, return_state=True)
    assert y.dtype == dtype and y.shape == x.shape and state.dtype == torch.float32 and state.shape == (3, size)
    truth = momentum_truth(x, mu, init)
    assert_as_accurate_as_torch(y, momentum_reference.momentum_update(x, mu, init), truth, ATOL[dtype])
    _, reference_state = momentum_reference.momentum_update(x, mu, init, return_state=True)
    assert_as_accurate_as_torch(state, reference_state, truth[:, -1], ATOL[torch.float32])
    assert torch.equal(state.to(dtype), y[:, -1])
    assert torch.equal(ops.momentum_update(x, mu, init), y)  # the variant that writes no state
    split = frames // 2
    if split:
        first, carried = ops.momentum_update(x[:, :split].contiguous(), mu, init, return_state=True)
        rest, last = ops.momentum_update(x[:, split:].contiguous(), mu, carried, return_state=True)
        assert torch.equal(torch.cat([first, rest], dim=1), y) and torch.equal(last, state)


def kl_truth(prev, candidates):
    """(A, C, E) of ``kl_sums`` in float64."""
    p = prev.double()
    weight = p.exp()
    return ((weight * p).mean(-1), torch.einsum("bd,rbd->br", weight, candidates.double()) / p.shape[-1],
            (weight * weight).mean(-1))


def strided_prev(batch, size, dtype, generator, offset):
    """prev [B, D] as frame 1 of a [B, 2, D] buffer (row stride 2D), shifted by `offset` elements."""
    buffer = torch.randn(batch * 2 * size + offset, device=generator.device, generator=generator).to(dtype)
    return buffer[offset:].view(batch, 2, size)[:, 1]


def check_kl_sums(ops, device, dtype, size, batch, count, offset):
    generator = torch.Generator(device).manual_seed(size + count)
    prev = strided_prev(batch, size, dtype, generator, offset)
    candidates = torch.randn(count, batch, size, device=device, generator=generator).to(dtype)
    sums = ops.kl_sums(prev, candidates)
    assert len(sums) == 3 and all(total.dtype == torch.float32 for total in sums)
    assert [tuple(total.shape) for total in sums] == [(batch,), (batch, count), (batch,)]
    for total, plain, truth in zip(sums, noise_reference.kl_sums(prev, candidates), kl_truth(prev, candidates)):
        assert_as_accurate_as_torch(total, plain, truth, 1e-6)
    again = ops.kl_sums(prev, candidates)
    assert all(torch.equal(total, repeat) for total, repeat in zip(sums, again)), "kl_sums is not deterministic"


def alpha_coefficients(alpha):
    """The paper search's rows (sqrt(alpha), sqrt(1 - alpha), 0), as float64 [B, 3]."""
    return torch.stack([alpha.sqrt(), (1 - alpha).clamp(min=0).sqrt(), torch.zeros_like(alpha)], dim=-1)


def compose_truth(prev, candidates, index, coefficients):
    """keep·p + fresh·n - tilt·exp(p) in float64 (the exp term only where tilt != 0)."""
    p = prev.double()
    chosen = candidates[index, torch.arange(prev.shape[0], device=prev.device)].double()
    keep, fresh, tilt = (column[:, None] for column in coefficients.double().unbind(-1))
    return keep * p + fresh * chosen - torch.where(tilt != 0, tilt * p.exp(), torch.zeros_like(p))


def check_compose(ops, device, dtype, size, offset):
    batch, count = 8, 4
    generator = torch.Generator(device).manual_seed(size)
    prev = strided_prev(batch, size, dtype, generator, offset)
    prev[6, ::2] = 100.0  # exp(100) overflows float32: row 6 has tilt 0 and must stay finite
    candidates = torch.randn(count, batch, size, device=device, generator=generator).to(dtype)
    index = torch.tensor([0, 3, 1, 2, 3, 0, 2, 1], device=device)
    alpha = torch.tensor([0.0, 1.0, 0.3, 0.999, 1.0 + 1e-12], dtype=torch.float64, device=device)
    coefficients = torch.cat([
        alpha_coefficients(alpha),  # the paper search's rows: (sqrt(a), sqrt(1 - a), 0)
        torch.tensor([[0.8, 0.6, 0.02],  # the exact search's rows: tilt != 0
                      [0.7, 0.7, 0.0],  # over prev = 100
                      [1.5, -0.25, -0.4]],  # outside [0, 1]: used as given, no clamping
                     dtype=torch.float64, device=device)])
    out = ops.compose(prev, candidates, index, coefficients)
    assert out.dtype == dtype and out.shape == (batch, size) and out.is_contiguous()
    assert torch.isfinite(out[6]).all(), "tilt = 0 must not compute 0 * exp(100) = NaN"
    truth = compose_truth(prev, candidates, index, coefficients)
    plain = noise_reference.compose(prev, candidates, index, coefficients)
    assert_as_accurate_as_torch(out, plain, truth, ATOL[dtype])
    # A NaN coefficient gives a NaN row (nothing clamps or replaces it); the other rows are unchanged.
    with_nan = coefficients.clone()
    with_nan[1, 0] = float("nan")
    with_nan[5, 2] = float("nan")
    out_nan = ops.compose(prev, candidates, index, with_nan)
    assert out_nan[[1, 5]].isnan().all()
    kept = [0, 2, 3, 4, 6, 7]
    assert torch.equal(out_nan[kept], out[kept])


def check_compose_out_of_range(ops, device, clamped):
    """The library writes NaN rows for an index outside [0, R) (never reads out of bounds); the binding clamps
    the index first, as the other backends do."""
    prev = torch.randn(3, 100, device=device)
    candidates = torch.randn(2, 3, 100, device=device)
    coefficients = torch.tensor([[0.7, 0.7, 0.0], [0.5, 0.8, 0.1], [0.9, 0.4, -0.2]], dtype=torch.float64,
                                device=device)
    out = ops.compose(prev, candidates, torch.tensor([0, 2, -1], device=device), coefficients)
    assert torch.isfinite(out[0]).all()
    if clamped:
        torch.testing.assert_close(out, ops.compose(prev, candidates, torch.tensor([0, 1, 0], device=device),
                                                    coefficients))
    else:
        assert out[1:].isnan().all()


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("with_init", (False, True))
@pytest.mark.parametrize("mu", (0.0, 0.5, 0.98, 1.0))
@pytest.mark.parametrize("frames", (1, 2, 5, 16))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_momentum_update_matches_reference(backend, nan_poisoned_outputs, dtype, size, frames, mu, with_init):
    check_momentum(backend, "cuda", dtype, size, frames, mu, with_init)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_momentum_update_misaligned_input_uses_scalar_path(backend, nan_poisoned_outputs, dtype):
    check_momentum(backend, "cuda", dtype, 1000, 5, 0.9, True, offset=1)  # N allows vectors, the pointer not


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("offset", (0, 1))
@pytest.mark.parametrize("shape", ((1, 1), (3, 5), (2, 8), (2, 0)))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_kl_sums_matches_reference(backend, nan_poisoned_outputs, dtype, size, shape, offset):
    check_kl_sums(backend, "cuda", dtype, size, *shape, offset)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("offset", (0, 1))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_compose_matches_reference(backend, nan_poisoned_outputs, dtype, size, offset):
    check_compose(backend, "cuda", dtype, size, offset)


@pytest.mark.gpu
@gpu_only
def test_compose_out_of_range_index_gives_nan_row(backend):
    check_compose_out_of_range(backend, "cuda", clamped=True)


@pytest.mark.gpu
@gpu_only
def test_compose_checks_the_coefficients_shape(backend):
    prev = torch.randn(2, 8, device="cuda")
    candidates = torch.randn(3, 2, 8, device="cuda")
    index = torch.zeros(2, dtype=torch.long, device="cuda")
    for shape in ((2,), (2, 2), (3, 3)):
        with pytest.raises(ValueError, match="coefficients"):
            backend.compose(prev, candidates, index, torch.zeros(shape, dtype=torch.float64, device="cuda"))


# --------------------------------------------------------------------------- host emulation (no GPU)
# CI has no GPU, so the kernels' logic (indexing, tails, vector/scalar paths, block reductions, the chunked
# KL workspace) is also checked by compiling zs2_ops.cu itself as host C++ with g++: every `<<<>>>` launch
# becomes a call that runs the grid block by block, one std::thread per CUDA thread, with barriers for
# __syncthreads and the warp shuffles. Same source, same checks as the GPU tests, on CPU tensors; what
# it cannot see (real memory model, alignment faults, codegen) is left to the GPU tests.
HOST_EMULATION_HEADER = r"""
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
using std::min;
#undef __global__
#undef __device__
#undef __forceinline__
#undef __shared__
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static  /* blocks run one at a time */
#define __launch_bounds__(threads)
inline thread_local dim3 emulated_thread, emulated_block;
#define threadIdx emulated_thread
#define blockIdx emulated_block

struct EmulatedBlock {
    float lanes[32][32];
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::unique_ptr<std::barrier<>> block;
};
inline EmulatedBlock* emulated_current;

inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline void __syncthreads() { emulated_current->block->arrive_and_wait(); }
inline float __shfl_down_sync(unsigned, float value, int offset) {
    const unsigned lane = emulated_thread.x % 32, warp = emulated_thread.x / 32;
    emulated_current->lanes[warp][lane] = value;
    emulated_current->warps[warp]->arrive_and_wait();
    const float result = lane + offset < 32 ? emulated_current->lanes[warp][lane + offset] : value;
    emulated_current->warps[warp]->arrive_and_wait();
    return result;
}
inline cudaError_t emulated_last_error() { return cudaSuccess; }

template <typename Kernel, typename... Args>
void emulated_launch(unsigned grid, int threads, int, cudaStream_t, Kernel kernel, Args... args) {
    for (unsigned b = 0; b < grid; ++b) {
        EmulatedBlock block;
        for (int w = 0; w < threads / 32; ++w) block.warps.push_back(std::make_unique<std::barrier<>>(32));
        block.block = std::make_unique<std::barrier<>>(threads);
        emulated_current = &block;
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([=] { emulated_block = dim3(b); emulated_thread = dim3(t); kernel(args...); });
        }
        for (auto& thread : pool) thread.join();
    }
}
"""
_LAUNCH = re.compile(r"([\w:]+(?:<[^<>]*>)?)<<<([^>]*)>>>\(")


@pytest.fixture(scope="session")
def emulated_ops(tmp_path_factory):
    compiler = shutil.which("g++")
    home = None if NVCC is None else build.cuda_home(NVCC)
    include = None if home is None else home / "include"
    if compiler is None or include is None or not (include / "cuda_fp16.h").is_file():
        pytest.skip("host emulation needs g++ and the CUDA headers (from nvcc's toolkit)")
    folder = tmp_path_factory.mktemp("zs2_emulated")
    source, launches = _LAUNCH.subn(r"emulated_launch(\2, \1, ", (ROOT / "csrc" / "zs2_ops.cu").read_text())
    assert launches == 4, f"expected the 4 kernel launches of zs2_ops.cu, rewrote {launches}"
    (folder / "host_emulation.h").write_text(HOST_EMULATION_HEADER)
    (folder / "zs2_ops_host.cpp").write_text(
        '#include "host_emulation.h"\n' + source.replace("cudaGetLastError()", "emulated_last_error()"))
    library = folder / "libzs2_host.so"
    subprocess.run([compiler, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", f"-I{folder}",
                    f"-I{ROOT / 'csrc'}", f"-I{include}", str(folder / "zs2_ops_host.cpp"), "-o", str(library)],
                   check=True)  # fmt: skip
    return HostOps(cuda_library._open(str(library)))


class HostOps:
    """The launchers of the host-emulation build called on CPU tensors, as the bindings call them."""

    def __init__(self, library):
        self.library = library

    def momentum_update(self, x, momentum, init=None, *, return_state=False):
        y = torch.empty_like(x)
        state = torch.empty(x.shape[0], x.shape[2]) if return_state else None
        cuda_library.check_status(self.library, self.library.zs2_momentum_update(
            x.data_ptr(), None if init is None else init.data_ptr(), y.data_ptr(),
            None if state is None else state.data_ptr(), *x.shape, momentum, cuda_library._DTYPE_CODES[x.dtype],
            None))  # fmt: skip
        return (y, state) if return_state else y

    def kl_sums(self, prev, candidates):
        R, B, D = candidates.shape
        a_sum = torch.empty(B)
        c_sum = torch.empty(B, R)
        e_sum = torch.empty(B)
        size = self.library.zs2_kl_sums_workspace_size(R, B, D)
        workspace = torch.empty(size) if size > 0 else None
        cuda_library.check_status(self.library, self.library.zs2_kl_sums(
            prev.data_ptr(), prev.stride(0), candidates.data_ptr(), a_sum.data_ptr(), c_sum.data_ptr(),
            e_sum.data_ptr(), None if workspace is None else workspace.data_ptr(), R, B, D,
            cuda_library._DTYPE_CODES[prev.dtype], None))  # fmt: skip
        return a_sum, c_sum, e_sum

    def compose(self, prev, candidates, index, coefficients):
        """The library as called raw: the index is not clamped (out of range gives NaN rows)."""
        R, B, D = candidates.shape
        assert coefficients.dtype == torch.float64 and coefficients.shape == (B, 3) and coefficients.is_contiguous()
        out = torch.empty(B, D, dtype=prev.dtype)
        cuda_library.check_status(self.library, self.library.zs2_compose(
            prev.data_ptr(), prev.stride(0), candidates.data_ptr(), index.data_ptr(), coefficients.data_ptr(),
            out.data_ptr(), R, B, D, cuda_library._DTYPE_CODES[prev.dtype], None))  # fmt: skip
        return out


@pytest.mark.parametrize("with_init", (False, True))
@pytest.mark.parametrize("frames", (1, 5))
@pytest.mark.parametrize(("size", "offset"), ((7, 0), (1000, 0), (1000, 1)), ids=("N7", "N1000-vector", "N1000-scalar"))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_host_emulated_momentum_update(emulated_ops, nan_poisoned_outputs, dtype, size, offset, frames, with_init):
    check_momentum(emulated_ops, "cpu", dtype, size, frames, 0.98, with_init, offset)


@pytest.mark.parametrize("mu", (0.0, 1.0))
def test_host_emulated_momentum_update_extremes(emulated_ops, nan_poisoned_outputs, mu):
    check_momentum(emulated_ops, "cpu", torch.float16, 1000, 5, mu, True)


@pytest.mark.parametrize("offset", (0, 1))
@pytest.mark.parametrize("size", (7, 1000, 4097))  # 4097: two chunks, so the workspace + finish kernel
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_host_emulated_kl_sums(emulated_ops, nan_poisoned_outputs, dtype, size, offset):
    check_kl_sums(emulated_ops, "cpu", dtype, size, 2, 5, offset)


@pytest.mark.parametrize("offset", (0, 1))
@pytest.mark.parametrize("size", (7, 1000))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_host_emulated_compose(emulated_ops, nan_poisoned_outputs, dtype, size, offset):
    check_compose(emulated_ops, "cpu", dtype, size, offset)


def test_host_emulated_compose_out_of_range_index(emulated_ops):
    check_compose_out_of_range(emulated_ops, "cpu", clamped=False)


SANITIZER_SCRIPT = """
import torch
from zs2_kernels.ops.momentum import cuda as momentum_cuda
from zs2_kernels.ops.noise import cuda as noise_cuda

generator = torch.Generator("cuda").manual_seed(0)
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for size in (1, 7, 1000, 4 * 64 * 64 + 3):
        for offset in (0, 1):
            buffer = torch.randn(2 * 3 * size + offset, device="cuda", generator=generator).to(dtype)
            x = buffer[offset:].view(2, 3, size)
            momentum_cuda.momentum_update(x, 0.9)
            momentum_cuda.momentum_update(x, 0.9, x[:, 1].float(), return_state=True)
            prev = x[:, 1]
            candidates = torch.randn(5, 2, size, device="cuda", generator=generator).to(dtype)
            noise_cuda.kl_sums(prev, candidates)
            index = torch.tensor([4, 0], device="cuda")
            coefficients = torch.tensor([[0.5, 0.8, 0.1], [0.9, 0.4, 0.0]], dtype=torch.float64, device="cuda")
            noise_cuda.compose(prev, candidates, index, coefficients)
torch.cuda.synchronize()
print("sanitizer script done")
"""


@pytest.mark.gpu
@gpu_only
@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer not on PATH")
def test_compute_sanitizer_memcheck(backend, tmp_path):
    script = tmp_path / "exercise.py"
    script.write_text(textwrap.dedent(SANITIZER_SCRIPT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               # One cudaMalloc per tensor, so memcheck sees every tensor's bounds (no caching allocator pool).
               PYTORCH_NO_CUDA_MEMORY_CACHING="1")  # fmt: skip
    result = subprocess.run(
        ["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "1", sys.executable, str(script)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "sanitizer script done" in result.stdout


def test_old_driver_makes_the_backend_unavailable_with_a_message(use_built_library, monkeypatch):
    """A CUDA 13 build on a CUDA 12 driver loads fine and then fails every launch: say so up front instead."""
    library = cuda_library.load()
    built = library.zs2_cuda_runtime_version()
    assert built >= 11000 and built % 10 == 0  # CUDART_VERSION of the nvcc that built it, e.g. 13000
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(cuda_library, "driver_version", lambda: built - 1000)
    problem = cuda_library.driver_problem(library, (9, 0))
    assert f"CUDA {built // 1000}.{built % 1000 // 10}" in problem and "driver" in problem
    assert not cuda_library.is_available()
    cuda_library.require_driver.cache_clear()
    with pytest.raises(RuntimeError, match="needs a driver"):
        cuda_library.require_driver(library._name, (9, 0))
    cuda_library.require_driver.cache_clear()
    monkeypatch.setattr(cuda_library, "driver_version", lambda: built)
    assert cuda_library.driver_problem(library, (9, 0)) is None and cuda_library.is_available()
    monkeypatch.setattr(cuda_library, "driver_version", lambda: None)
    assert "no NVIDIA driver" in cuda_library.driver_problem(library, (9, 0))


def test_library_reports_the_archs_it_holds_cubins_for(use_built_library):
    cuobjdump = build.find_cuobjdump(NVCC)
    if cuobjdump is None:
        pytest.skip("cuobjdump not found")
    elves = subprocess.run([cuobjdump, "--list-elf", str(use_built_library)], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    in_the_elf = {int(arch) for arch in re.findall(r"sm_(\d+)", elves)}  # one line per kernel and arch
    assert cuda_library.cubin_archs(cuda_library.load()) == sorted(in_the_elf) == [80, 90]


@pytest.mark.parametrize(("capability", "runs_cubin"), [((8, 0), True), ((8, 9), True), ((9, 0), True),
                                                       ((10, 0), False), ((12, 0), False)],
                         ids=["sm_80", "sm_89", "sm_90", "sm_100", "sm_120"])
def test_a_newer_minor_cuda_build_needs_a_newer_driver_only_where_ptx_is_jit_compiled(
        use_built_library, monkeypatch, capability, runs_cubin):
    """A library from CUDA 13.1 on a 13.0 driver: its sm_80/sm_90 cubins run (minor version compatibility; sm_86
    and sm_89 run the sm_80 one), but a GPU newer than its archs gets the PTX JIT-compiled, and a 13.0 driver
    rejects 13.1 PTX: every launch would fail there. The versions and the GPU are faked (no GPU here)."""
    library = cuda_library.load()
    monkeypatch.setattr(library, "zs2_cuda_runtime_version", lambda: 13010)
    monkeypatch.setattr(cuda_library, "driver_version", lambda: 13000)
    problem = cuda_library.driver_problem(library, capability)
    if runs_cubin:
        assert problem is None
    else:
        sm = f"sm_{capability[0]}{capability[1]}"
        assert f"this GPU ({sm}) has no cubin" in problem and "cubins: sm_80, sm_90" in problem, problem
        assert "CUDA 13.1" in problem and "supports CUDA 13.0" in problem, problem
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        assert not cuda_library.is_available()
        cuda_library.require_driver.cache_clear()
        with pytest.raises(RuntimeError, match=f"this GPU \\({sm}\\) has no cubin"):
            cuda_library.require_driver(library._name, capability)
        cuda_library.require_driver.cache_clear()
    monkeypatch.setattr(cuda_library, "driver_version", lambda: 13010)  # the build's own version: PTX JIT works
    assert cuda_library.driver_problem(library, capability) is None