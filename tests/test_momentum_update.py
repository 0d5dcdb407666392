"""momentum_update: Triton kernel (interpreter) and every backend against the plain-PyTorch reference."""

import pytest
import torch
from conftest import DTYPE_IDS, DTYPES, assert_within_lowp_error, interpreting

import zs2_kernels
from zs2_kernels import reference


def lowp_recursion(x, mu, init=None):
    """The EMA computed in x's own dtype (what plain PyTorch would do without fp32 accumulation)."""
    out, state = [], init
    for f in range(x.shape[1]):
        state = x[:, f] if state is None else mu * state + (1 - mu) * x[:, f]
        out.append(state)
    return torch.stack(out, dim=1)


# Every (dtype, size, frames) combination; the largest frame with 16 frames only in fp32 (interpreter time).
CASES = [
    pytest.param(dtype, size, frames, id=f"{dtype_id}-D{size}-F{frames}")
    for dtype, dtype_id in zip(DTYPES, DTYPE_IDS)
    for size in (1, 7, 1000, 4 * 64 * 64 + 3)
    for frames in (1, 2, 16)
    if not (size > 1000 and frames == 16 and dtype != torch.float32)
]


@pytest.mark.parametrize("dtype, frame_size, frames", CASES)
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.98, 1.0])
@pytest.mark.parametrize("with_init", [False, True], ids=["no_init", "init"])
def test_triton_matches_reference(nan_poisoned_outputs, dtype, frame_size, frames, mu, with_init):
    groups = 3 if frame_size < 1000 else 1
    gen = torch.Generator().manual_seed(frame_size * 31 + frames)
    x = torch.randn(groups, frames, frame_size, generator=gen).to(dtype)
    init = torch.randn(groups, frame_size, generator=gen).to(dtype) if with_init else None
    out = zs2_kernels.momentum_update(x, mu, init=init, backend="triton")
    expected = reference.momentum_update(x.float(), mu, None if init is None else init.float())
    assert out.dtype == dtype and out.shape == x.shape
    if dtype == torch.float32:
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    elif dtype == torch.bfloat16 and interpreting():
        # The interpreter converts fp32 -> bf16 by truncation (1 ulp); the GPU test checks the 0.5-ulp rule.
        torch.testing.assert_close(out.float(), expected, rtol=2**-7, atol=1e-6)
    else:
        assert_within_lowp_error(out, expected, lowp_recursion(x, mu, init), atol=1e-3)


def test_matrix_form_equals_recursion():
    x = torch.randn(2, 9, 5, 3, dtype=torch.float64)
    for mu in (0.0, 0.3, 0.98, 1.0):
        torch.testing.assert_close(reference.momentum_matrix_form(x, mu), reference.momentum_update(x, mu))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_limits_mu_zero_and_one(backend):
    x = torch.randn(2, 6, 4, 5)
    torch.testing.assert_close(zs2_kernels.momentum_update(x, 0.0, backend=backend), x)
    frame0 = x[:, :1].expand_as(x)
    torch.testing.assert_close(zs2_kernels.momentum_update(x, 1.0, backend=backend), frame0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_chunked_with_init_equals_whole(backend):
    x = torch.randn(3, 11, 2, 33)
    whole = zs2_kernels.momentum_update(x, 0.9, backend=backend)
    first = zs2_kernels.momentum_update(x[:, :4], 0.9, backend=backend)
    second = zs2_kernels.momentum_update(x[:, 4:], 0.9, init=first[:, -1], backend=backend)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-6, atol=1e-6)


def test_non_contiguous_input_and_extra_dims():
    x = torch.randn(4, 5, 6, 7).transpose(2, 3)
    out = zs2_kernels.momentum_update(x, 0.7, backend="triton")
    torch.testing.assert_close(out, reference.momentum_update(x, 0.7))


def test_recursion_is_an_ema():
    """Independent of the implementations: y_2 written out by hand."""
    x = torch.tensor([[[1.0], [2.0], [4.0]]])
    y = zs2_kernels.momentum_update(x, 0.5, backend="triton")
    assert y.flatten().tolist() == [1.0, 1.5, 2.75]


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(x=torch.randn(2, 3, 4), momentum=-0.1), ValueError, "momentum"),
        (dict(x=torch.randn(2, 3, 4), momentum=1.5), ValueError, "momentum"),
        (dict(x=torch.randn(2, 3, 4), momentum=float("nan")), ValueError, "momentum"),
        (dict(x=torch.randn(2, 3, 4), momentum="0.5"), TypeError, "momentum"),
        (dict(x=torch.ones(2, 3, 4, dtype=torch.int64), momentum=0.5), TypeError, "x"),
        (dict(x=[1.0, 2.0], momentum=0.5), TypeError, "x"),
        (dict(x=torch.randn(5), momentum=0.5), ValueError, "x"),
        (dict(x=torch.randn(2, 0, 4), momentum=0.5), ValueError, "x"),
        (dict(x=torch.randn(2, 3, 4), momentum=0.5, init=torch.randn(2, 5)), ValueError, "init"),
        (dict(x=torch.randn(2, 3, 4), momentum=0.5, init=torch.randn(2, 4, dtype=torch.float64)), TypeError, "init"),
        (dict(x=torch.randn(2, 3, 4), momentum=0.5, init=torch.randn(2, 4).half()), TypeError, "init"),
        (dict(x=torch.randn(2, 3, 4), momentum=0.5, backend="cuda"), RuntimeError, "cuda"),
        (dict(x=torch.randn(2, 3, 4), momentum=0.5, backend="tpu"), ValueError, "backend"),
    ],
)
def test_bad_input(kwargs, error, name):
    x = kwargs.pop("x")
    momentum = kwargs.pop("momentum")
    with pytest.raises(error, match=name):
        zs2_kernels.momentum_update(x, momentum, **kwargs)
