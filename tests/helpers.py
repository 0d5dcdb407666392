"""What the test modules share: dtypes, the GPU markers, the one tolerance rule for low-precision outputs, and
the confidence interval the quality gates report."""

import os

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
gpu_only = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU (run benchmarks/run_gpu.sh on a GPU machine)")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter rather than on a GPU."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def assert_within_lowp_error(out, reference_fp32, torch_lowp, atol=1e-6):
    """flash-attention's rule: the kernel's error vs an fp32 reference is at most 2x plain PyTorch's
    error in the same low precision, plus a small atol. Also: nothing non-finite."""
    assert torch.isfinite(out.float()).all(), "output has NaN/inf (unwritten or overflowed elements)"
    kernel_err = (out.float() - reference_fp32.float()).abs().max().item()
    torch_err = (torch_lowp.float() - reference_fp32.float()).abs().max().item()
    assert kernel_err <= 2 * torch_err + atol, \
        f"kernel error {kernel_err:.3g} > 2 x torch error {torch_err:.3g} + {atol}"


def interval(values: torch.Tensor) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of ``values`` (one per video), computed in float64."""
    from scipy import stats

    values = values.double()
    mean = values.mean().item()
    half = stats.t.ppf(0.975, len(values) - 1) * values.std().item() / len(values) ** 0.5
    return mean, mean - half, mean + half
