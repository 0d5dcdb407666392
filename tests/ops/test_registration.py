"""The zs2 custom ops: torch.library.opcheck on CPU, torch.compile(fullgraph=True) equals eager, and
importing/using the package without triton."""

import subprocess
import sys
import textwrap

import pytest
import torch

import zs2_kernels
from zs2_kernels.ops import cuda_library
from zs2_kernels.ops.momentum import update_op
from zs2_kernels.ops.noise import compose_op, kl_sums_op, philox_normal_op, search_frame_op

from helpers import gpu_only, interpreting


def transposed(tensor):
    """``tensor``'s values in another layout, as a permuted or sliced view hands them to an op: the last dim
    outermost in memory, or for 1-D tensors every other element of a buffer."""
    if tensor.dim() == 1:
        return torch.stack([tensor, tensor], dim=1)[:, 0]
    return tensor.movedim(-1, 0).contiguous().movedim(0, -1)


LAYOUTS = {"contiguous": lambda tensor: tensor, "transposed": transposed}


def op_samples(backend, layout, device="cpu"):
    """Arguments for every registered op, each tensor argument in ``layout``; the Philox variants need Triton."""
    gen = torch.Generator().manual_seed(0)

    def make(tensor):
        return layout(tensor.to(device))

    x, init = make(torch.randn(2, 4, 33, generator=gen)), make(torch.randn(2, 33, generator=gen))
    prev, cand = make(torch.randn(3, 65, generator=gen)), make(torch.randn(5, 3, 65, generator=gen))
    index = make(torch.tensor([0, 4, 2]))
    coefficients = make(torch.tensor([[0.9, 0.4, 0.0], [0.7, 0.7, 0.01], [0.3, 0.95, 0.0]], dtype=torch.float64))
    samples = [
        (update_op.registered, (x, 0.9, None, backend)),
        (update_op.registered, (x, 0.5, init, backend)),
        (update_op.registered, (x, 0.5, None, backend, True)),
        (update_op.registered, (x.half(), 0.5, init, backend, True)),
        (kl_sums_op.registered, (prev, cand, backend)),
        (search_frame_op.registered, (prev, cand, 5, None, 1, 0.1, "exact", 15, backend)),
        (search_frame_op.registered, (prev, cand, 5, None, 1, 0.1, "paper", 15, backend)),
        (compose_op.registered, (prev, cand, index, coefficients, 5, None, 1, backend)),
    ]
    if backend == "triton":
        seeds = make(torch.tensor([17, 18, 19]))
        samples += [
            (search_frame_op.registered, (prev, None, 4, seeds, 2, 0.1, "exact", 15, backend)),
            (compose_op.registered, (prev, None, index, coefficients, 4, seeds, 2, backend)),
            (philox_normal_op.registered, (seeds, 3, 4, 40)),
        ]
    return samples


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_opcheck(backend, layout):
    """The fake kernels give what the ops return (shapes, dtypes and strides: outputs are contiguous whatever the
    inputs' layout, or torch.compile's graphs assert wrong strides), on every backend that runs on a CPU."""
    for op, args in op_samples(backend, LAYOUTS[layout]):
        torch.library.opcheck(op, args)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["triton", "cuda", "torch"])
def test_opcheck_on_gpu(backend, layout):
    if backend == "triton" and interpreting():
        pytest.skip("the Triton backend on CUDA tensors needs compiled kernels: run with TRITON_INTERPRET=0")
    if backend == "cuda" and not cuda_library.is_available():
        pytest.skip("the CUDA C++ library is not built")
    for op, args in op_samples(backend, LAYOUTS[layout], "cuda"):
        torch.library.opcheck(op, args)


def test_opcheck_samples_cover_every_op_with_non_contiguous_inputs():
    samples = op_samples("triton", transposed)
    assert {op._qualname for op, _ in samples} == {f"zs2::{name}" for name in torch.ops.zs2}
    for op, args in samples:
        tensors = [arg for arg in args if isinstance(arg, torch.Tensor)]
        assert tensors and not any(tensor.is_contiguous() for tensor in tensors), op


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_torch_compile_fullgraph_matches_eager(backend):
    def step(x, prev, cand):
        y, state = update_op(x, 0.9, None, backend, True)
        index, coefficients, _ = search_frame_op(prev, cand, 5, None, 1, 0.1, "exact", 15, backend)
        return y * 2, state, compose_op(prev, cand, index, coefficients, 5, None, 1, backend)

    x, prev, cand = torch.randn(2, 4, 33), torch.randn(3, 65), torch.randn(5, 3, 65)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(x, prev, cand), step(x, prev, cand)):
        torch.testing.assert_close(got, want)


def test_public_momentum_update_compiles_fullgraph():
    torch._dynamo.reset()
    fn = torch.compile(lambda x: zs2_kernels.momentum_update(x, 0.5, backend="torch") + 1, fullgraph=True,
                       backend="aot_eager")
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(fn(x), zs2_kernels.momentum_update(x, 0.5, backend="torch") + 1)


def test_chunked_momentum_update_compiles_fullgraph_and_equals_whole():
    def chunked(x):
        first, state = zs2_kernels.momentum_update(x[:, :2], 0.5, backend="torch", return_state=True)
        return torch.cat([first, zs2_kernels.momentum_update(x[:, 2:], 0.5, init=state, backend="torch")], dim=1)

    torch._dynamo.reset()
    x = torch.randn(2, 5, 8).bfloat16()
    assert torch.equal(torch.compile(chunked, fullgraph=True, backend="aot_eager")(x),
                       zs2_kernels.momentum_update(x, 0.5, backend="torch"))


def test_import_and_cpu_path_without_triton():
    """Importing never needs triton or a GPU; the CPU path runs on the reference."""
    code = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # what Python reports for a package that cannot be imported
        import torch, zs2_kernels
        noise, stats = zs2_kernels.dependency_noise((1, 3, 4, 8, 8), 0.1, seed=0, return_stats=True)
        y = zs2_kernels.momentum_update(torch.randn(1, 3, 5), 0.5)
        assert stats["backend"] == "torch" and sys.modules["triton"] is None
        try:
            zs2_kernels.momentum_update(torch.randn(1, 3, 5), 0.5, backend="triton")
        except RuntimeError as err:
            assert "triton" in str(err)
        else:
            raise AssertionError("backend='triton' without triton must raise")
        print("ok")
    """)
    env = {"PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_a_backend_table_takes_an_op_without_a_cuda_version():
    """Every backend was required for every op; now the reference is, and a missing one says so at call time."""
    from zs2_kernels.ops.momentum import reference
    from zs2_kernels.ops.registry import BackendTable

    table = BackendTable("zs2_kernels.ops.momentum", {"torch": ".reference", "triton": ".triton"})
    assert table.implementation("torch", "momentum_update") is reference.momentum_update
    with pytest.raises(NotImplementedError, match=r"op momentum_update of zs2_kernels.ops.momentum has no cuda "
                                                  r"implementation; use backend= one of \['torch', 'triton'\]"):
        table.implementation("cuda", "momentum_update")
    reference_only = BackendTable("zs2_kernels.ops.momentum", {"torch": ".reference"})
    with pytest.raises(NotImplementedError, match=r"op fused_norm_ema .* has no torch implementation; use backend= "
                                                  r"one of \[\]"):
        reference_only.implementation("torch", "fused_norm_ema")
    with pytest.raises(ValueError, match="needs 'torch'"):
        BackendTable("zs2_kernels.ops.momentum", {"triton": ".triton"})


def test_every_family_is_reached_the_same_way():
    """Each op family's public function, registered ops and ahead-of-time specs, from the family and from ops/."""
    import zs2_kernels.ops as ops

    for family, public in zip(ops.FAMILIES, ("momentum_update", "dependency_noise")):
        assert getattr(ops, public) is getattr(family, public)
        assert family.OPS and all(hasattr(op, "registered") for op in family.OPS)
        assert {"OPS", "aot_specs", public} <= set(family.__all__)
    registered = {op.registered._name for family in ops.FAMILIES for op in family.OPS}
    assert registered == {name for name in dir(torch.ops.zs2) if not name.startswith("_")} - {"name"}
