"""GPU-only checks (run by benchmarks/run_gpu.sh on a GPU machine; skipped cleanly elsewhere):
bf16 rounding, large shapes, no recompilation for new frame counts, cross-device reproducibility."""

import pytest
import torch
from conftest import gpu_only, interpreting

import zs2_kernels
from zs2_kernels import reference

pytestmark = [pytest.mark.gpu, gpu_only,
              pytest.mark.skipif(interpreting(), reason="GPU tests need compiled kernels: run with TRITON_INTERPRET=0")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_momentum_large_shapes_all_dtypes(dtype):
    # SD1.5 512x512 first self-attention input, guidance on, 16 frames: [2, 16, 4096 * 320].
    x = torch.randn(2, 16, 4096 * 320 + 3, device="cuda", dtype=dtype)
    out = zs2_kernels.momentum_update(x, 0.98)
    expected = reference.momentum_update(x.float(), 0.98)
    ulp = {torch.float32: 1e-6, torch.float16: 2**-11, torch.bfloat16: 2**-8}[dtype]  # <= 0.5 ulp + fp32 noise
    torch.testing.assert_close(out.float(), expected, rtol=ulp * 1.01, atol=1e-6)


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
    kl = reference.kl_statistic(flat[:, 1:], flat[:, :-1])
    assert (kl - 0.01).abs().max() < 1e-4


def test_no_recompile_for_new_frame_counts():
    from zs2_kernels.kernels.momentum import _momentum_update_kernel

    def compiled_variants():
        return sum(len(cache[0]) for cache in _momentum_update_kernel.device_caches.values())

    zs2_kernels.momentum_update(torch.randn(2, 3, 4096, device="cuda"), 0.9)
    before = compiled_variants()
    for frames in (1, 5, 16, 64, 129):
        for groups in (1, 2, 8):
            zs2_kernels.momentum_update(torch.randn(groups, frames, 4096 * 3, device="cuda"), 0.9)
    assert compiled_variants() == before
