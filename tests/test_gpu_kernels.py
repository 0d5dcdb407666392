"""GPU-only checks (run by benchmarks/run_gpu.sh on a GPU machine; skipped cleanly elsewhere):
bf16 rounding, large shapes, no recompilation for new frame counts, cross-device reproducibility."""

import pytest
import torch

import zs2_kernels
from zs2_kernels.ops import cuda_library
from zs2_kernels.ops.momentum import reference as momentum_reference
from zs2_kernels.ops.noise import reference as noise_reference

from helpers import gpu_only, interpreting

pytestmark = [pytest.mark.gpu, gpu_only,
              pytest.mark.skipif(interpreting(), reason="GPU tests need compiled kernels: run with TRITON_INTERPRET=0")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_momentum_large_shapes_all_dtypes(dtype):
    # SD1.5 512x512 first self-attention input, guidance on, 16 frames: [2, 16, 4096 * 320].
    x = torch.randn(2, 16, 4096 * 320 + 3, device="cuda", dtype=dtype)
    out = zs2_kernels.momentum_update(x, 0.98)
    expected = momentum_reference.momentum_update(x.float(), 0.98)
    ulp = {torch.float32: 1e-6, torch.float16: 2**-11, torch.bfloat16: 2**-8}[dtype]  # <= 0.5 ulp + fp32 noise
    torch.testing.assert_close(out.float(), expected, rtol=ulp * 1.01, atol=1e-6)


@pytest.mark.parametrize("size", [4096 * 320, 4096 * 3 + 5], ids=["vector", "odd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_momentum_chunks_carrying_the_state_equal_the_whole_bitwise(backend, dtype, size):
    if backend == "cuda" and not cuda_library.is_available():
        pytest.skip("the CUDA C++ library is not built")
    x = torch.randn(2, 9, size, device="cuda", dtype=dtype)
    whole, whole_state = zs2_kernels.momentum_update(x, 0.98, backend=backend, return_state=True)
    parts, state = [], None
    for start, stop in ((0, 1), (1, 5), (5, 9)):
        part, state = zs2_kernels.momentum_update(x[:, start:stop], 0.98, init=state, backend=backend,
                                                  return_state=True)
        parts.append(part)
    assert torch.equal(torch.cat(parts, dim=1), whole) and torch.equal(state, whole_state)
    assert state.dtype == torch.float32 and torch.equal(state.to(dtype), whole[:, -1])


@pytest.mark.parametrize("search", ["paper", "exact"])
def test_noise_chain_on_gpu_matches_cpu_with_cpu_generator(search):
    shape = (2, 8, 4, 64, 64)
    gpu = zs2_kernels.dependency_noise(shape, 0.1, search=search, generator=torch.Generator().manual_seed(3),
                                       device="cuda")
    cpu = zs2_kernels.dependency_noise(shape, 0.1, search=search, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_philox_chain_hits_lambda_on_large_latents():
    noise, stats = zs2_kernels.dependency_noise((4, 16, 4, 128, 128), 0.01, seed=0, device="cuda",
                                                return_stats=True)
    assert stats["backend"] == "triton"
    flat = noise.double().flatten(2)
    kl = noise_reference.kl_statistic(flat[:, 1:], flat[:, :-1])
    assert (kl - 0.01).abs().max() < 1e-4


def test_no_recompile_for_new_frame_counts():
    from zs2_kernels.ops.momentum.triton import _momentum_update_kernel

    def compiled_variants():
        return sum(len(cache[0]) for cache in _momentum_update_kernel.device_caches.values())

    zs2_kernels.momentum_update(torch.randn(2, 3, 4096, device="cuda"), 0.9)
    before = compiled_variants()
    for frames in (1, 5, 16, 64, 129):
        for groups in (1, 2, 8):
            zs2_kernels.momentum_update(torch.randn(groups, frames, 4096 * 3, device="cuda"), 0.9)
    assert compiled_variants() == before


def test_search_kernel_compiles_once_for_every_candidate_count():
    from zs2_kernels.ops.noise import search_frame_op
    from zs2_kernels.ops.noise.triton import _search_kernel

    def compiled_variants():
        return sum(len(cache[0]) for cache in _search_kernel.device_caches.values())

    prev = torch.randn(2, 4 * 64 * 64, device="cuda")
    search_frame_op(prev, torch.randn(3, 2, prev.shape[1], device="cuda"), 3, None, 1, 0.01, "exact", 15, "triton")
    before = compiled_variants()
    for count in (1, 10, 17, 64, 1000):
        candidates = torch.randn(count, 2, prev.shape[1], device="cuda")
        index, coefficients, _ = search_frame_op(prev, candidates, count, None, 1, 0.01, "exact", 15, "triton")
        sums = noise_reference.kl_sums(prev, candidates)
        ref_index, ref_coefficients, _ = noise_reference.search_from_sums(*sums, 0.01, "exact", 15, prev.shape[1])
        assert index.tolist() == ref_index.tolist()
        torch.testing.assert_close(coefficients, ref_coefficients, rtol=0, atol=1e-6)
    assert compiled_variants() == before


@pytest.mark.parametrize("search", ["paper", "exact"])
def test_philox_seeded_video_does_not_depend_on_the_batch(search):
    batch = zs2_kernels.dependency_noise((3, 6, 4, 64, 64), 0.01, search=search, seed=5, device="cuda")
    alone = zs2_kernels.dependency_noise((1, 6, 4, 64, 64), 0.01, search=search, seed=5, device="cuda")
    assert torch.equal(batch[:1], alone)


def test_momentum_past_two_to_the_31_elements_per_group():
    """One (guidance half, video) group of more than 2**31 elements (SDXL 1024² reaches it at 821 frames): a
    32-bit frame offset would wrap and write the last frame over the first."""
    frames, size = 3, 2**30 + 1031  # 3.2e9 elements, 6.4 GB in fp16
    x = torch.empty(1, frames, size, device="cuda", dtype=torch.float16).normal_()
    y = zs2_kernels.momentum_update(x, 0.5)
    picks = torch.randint(0, size, (4096,), device="cuda")
    picks[-1] = size - 1
    expected = momentum_reference.momentum_update(x[:, :, picks].float(), 0.5)
    torch.testing.assert_close(y[:, :, picks].float(), expected, rtol=2**-10, atol=1e-3)
