"""Every Triton launch happens inside a device guard entered with its tensors' device.

Triton launches on the *current* CUDA device, not on its arguments' device: without
``torch.cuda.device(tensor.device)`` a call with tensors on cuda:1 (``sample_video(device="cuda:1")``, a torchrun
rank) launches on cuda:0. Lent GPU machines have one GPU, so this runs on CPU: a spy replaces the guard and a
pre-run hook on every kernel checks that a guard with the arguments' device is active at launch.
"""

import contextlib

import pytest
import torch

import zs2_kernels
from zs2_kernels.ops import _launch
from zs2_kernels.ops.momentum import triton as momentum
from zs2_kernels.ops.noise import compose_op, kl_sums_op, search_frame_op
from zs2_kernels.ops.noise import triton as noise_search

KERNELS = [momentum._momentum_update_kernel, noise_search._kl_partial_sums_kernel, noise_search._search_kernel,
           noise_search._compose_kernel, noise_search._philox_normal_kernel]


@pytest.fixture
def launches(monkeypatch):
    """(kernel name, device of the active guard, devices of the tensor arguments) for every launch."""
    active, seen = [], []

    @contextlib.contextmanager
    def spy_guard(tensor):
        active.append(tensor.device)
        try:
            yield
        finally:
            active.pop()

    def hook_for(kernel):
        def hook(*args, **kwargs):
            devices = {a.device for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)}
            seen.append((kernel.__name__, active[-1] if active else None, devices))
        return hook

    monkeypatch.setattr(_launch, "device_guard", spy_guard)
    hooks = [(kernel, hook_for(kernel)) for kernel in KERNELS]
    for kernel, hook in hooks:
        kernel.add_pre_run_hook(hook)
    yield seen
    for kernel, hook in hooks:
        kernel.pre_run_hooks.remove(hook)


def test_every_launcher_enters_the_tensors_device(launches):
    x = torch.randn(2, 3, 40)
    zs2_kernels.momentum_update(x, 0.5, backend="triton")
    zs2_kernels.dependency_noise((2, 3, 40), 0.1, seed=0, backend="triton")  # Philox: search, compose, normal
    prev, cand = torch.randn(2, 40), torch.randn(4, 2, 40)
    kl_sums_op(prev, cand, "triton")
    index, coefficients, _ = search_frame_op(prev, cand, 4, None, 1, 0.1, "paper", 15, "triton")
    compose_op(prev, cand, index, coefficients, 4, None, 1, "triton")

    assert {name for name, _, _ in launches} == {kernel.__name__ for kernel in KERNELS}
    for name, guard, devices in launches:
        assert guard is not None, f"{name} launched outside a device guard"
        assert devices == {guard}, f"{name} launched under a guard for {guard} with tensors on {devices}"


def test_guard_is_the_cuda_device_context_for_cuda_tensors(monkeypatch):
    entered = []
    monkeypatch.setattr(torch.cuda, "device", lambda device: entered.append(device) or contextlib.nullcontext())
    cuda_like = torch.empty(0, device="meta")
    monkeypatch.setattr(type(cuda_like), "is_cuda", property(lambda self: self.device.type == "meta"))
    with _launch.device_guard(cuda_like):
        pass
    assert entered == [torch.device("meta")]
    assert isinstance(_launch.device_guard(torch.empty(0)), contextlib.nullcontext)  # CPU: the interpreter
