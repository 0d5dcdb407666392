"""momentum_update: Triton kernel (interpreter) and every backend against the plain-PyTorch reference."""

import warnings

import pytest
import torch

import zs2_kernels
from zs2_kernels.ops.momentum import reference, update_op

from helpers import DTYPE_IDS, DTYPES, assert_within_lowp_error, interpreting


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
def test_triton_matches_reference(dtype, frame_size, frames, mu, with_init):
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
    first, state = zs2_kernels.momentum_update(x[:, :4], 0.9, backend=backend, return_state=True)
    second = zs2_kernels.momentum_update(x[:, 4:], 0.9, init=state, backend=backend)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-6, atol=1e-6)


def last_value_truth(x, mu, init=None):
    """The EMA's running value after the last frame, in float64 straight from its definition."""
    state = None if init is None else init.double()
    for frame in x.double().unbind(1):
        state = frame if state is None else mu * state + (1 - mu) * frame
    return state


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.98, 1.0])
@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunks_carrying_the_state_equal_the_whole_bitwise(backend, dtype, mu, chunk):
    """The float32 state handed from chunk to chunk continues the recursion exactly, in every dtype."""
    gen = torch.Generator().manual_seed(chunk)
    x = torch.randn(3, 7, 5, 13, generator=gen).to(dtype)
    whole, whole_state = zs2_kernels.momentum_update(x, mu, backend=backend, return_state=True)
    parts, state = [], None
    for start in range(0, x.shape[1], chunk):
        part, state = zs2_kernels.momentum_update(x[:, start:start + chunk], mu, init=state, backend=backend,
                                                  return_state=True)
        parts.append(part)
    assert torch.equal(torch.cat(parts, dim=1), whole)
    assert torch.equal(state, whole_state)


def rounded_as_the_kernel_rounds(state, dtype, backend):
    """float32 ``state`` rounded to ``dtype``: to nearest even, but the interpreter truncates to bfloat16."""
    if backend == "triton" and dtype == torch.bfloat16 and interpreting():
        return (state.view(torch.int32) & -65536).view(torch.float32).to(dtype)
    return state.to(dtype)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("frames", [1, 4])
@pytest.mark.parametrize("with_init", [False, True], ids=["no_init", "init"])
def test_state_is_the_unrounded_last_value_in_its_own_storage(backend, dtype, frames, with_init):
    gen = torch.Generator().manual_seed(frames)
    x = torch.randn(2, frames, 3, 37, generator=gen).to(dtype)
    init = torch.randn(2, 3, 37, generator=gen) if with_init else None  # a float32 state, whatever x's dtype
    y, state = zs2_kernels.momentum_update(x, 0.9, init=init, backend=backend, return_state=True)
    assert state.dtype == torch.float32 and state.shape == (2, 3, 37)
    assert state.untyped_storage().nbytes() == state.numel() * state.element_size()  # keeps neither x nor y alive
    assert torch.equal(rounded_as_the_kernel_rounds(state, dtype, backend), y[:, -1])
    torch.testing.assert_close(state.double(), last_value_truth(x, 0.9, init), rtol=1e-5, atol=1e-5)
    assert torch.equal(y, zs2_kernels.momentum_update(x, 0.9, init=init, backend=backend))


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_init_in_x_dtype_is_still_accepted(backend, dtype):
    x = torch.randn(2, 3, 9).to(dtype)
    init = torch.randn(2, 9).to(dtype)
    y = zs2_kernels.momentum_update(x, 0.6, init=init, backend=backend)
    assert torch.equal(y, zs2_kernels.momentum_update(x, 0.6, init=init.float(), backend=backend))


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
        # a meta scalar leaked "Tensor.item() cannot be called on meta tensors"; a meta x under the interpreter
        # "Cannot copy out of meta tensor"
        (dict(x=torch.randn(2, 3, 4), momentum=torch.tensor(0.5, device="meta")), ValueError,
         "momentum is a tensor on the meta device"),
        (dict(x=torch.randn(2, 3, 4, device="meta"), momentum=0.5, backend="triton"), RuntimeError,
         "backend='triton' cannot run: tensors are on meta"),
    ],
)
def test_bad_input(kwargs, error, name):
    x = kwargs.pop("x")
    momentum = kwargs.pop("momentum")
    with pytest.raises(error, match=name):
        zs2_kernels.momentum_update(x, momentum, **kwargs)


X = torch.randn(2, 3, 4)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((X, 5.0, None, "torch"), ValueError, r"momentum must be in \[0.0, 1.0\]"),
        ((X, -0.5, None, "torch"), ValueError, r"momentum must be in \[0.0, 1.0\]"),
        ((X, float("nan"), None, "torch"), ValueError, "momentum"),
        ((X, 0.5, None, "bogus"), ValueError, "backend must be one of"),
        ((X[0], 0.5, None, "torch"), ValueError, r"x must be a non-empty \[G, F, N\]"),
        ((X[None], 0.5, None, "torch"), ValueError, r"x must be a non-empty \[G, F, N\]"),
        ((X[:, :0], 0.5, None, "torch"), ValueError, r"x must be a non-empty \[G, F, N\]"),
        ((X.double(), 0.5, None, "torch"), TypeError, "x must have dtype"),
        ((X.long(), 0.5, None, "triton"), TypeError, "x must have dtype"),
        ((X, 0.5, torch.randn(2, 3), "torch"), ValueError, r"init must have shape \(2, 4\)"),
        ((X, 0.5, torch.randn(2, 4).half(), "torch"), TypeError, "init must be float32"),
        ((X.half(), 0.5, torch.randn(2, 4).bfloat16(), "triton"), TypeError, "init must be float32"),
        ((X, 0.5, torch.randn(2, 4, dtype=torch.float64), "torch"), TypeError, "init must have dtype"),
    ],
)
@pytest.mark.parametrize("call", ["registered_op", "eager_call"])
def test_op_validates_its_own_arguments(call, args, error, message):
    """Whoever calls zs2::momentum_update (raw torch.ops, or the library's eager path) gets a clear error."""
    run = torch.ops.zs2.momentum_update if call == "registered_op" else update_op
    with pytest.raises(error, match=message):
        run(*args)


def test_op_rejects_init_on_another_device():
    # Through the eager path only: the dispatcher sends a raw call with a meta tensor to the fake kernel.
    with pytest.raises(ValueError, match="init is on meta but x is on cpu"):
        update_op(X, 0.5, torch.randn(2, 4, device="meta"), "torch", False)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_op_accepts_strided_inputs(backend):
    x = torch.randn(5, 2, 4).transpose(0, 1)  # [2, 5, 4] with frames not contiguous
    init = torch.randn(4, 2).t()
    y, state = torch.ops.zs2.momentum_update(x, 0.7, init, backend, True)
    expected, expected_state = reference.momentum_update(x.contiguous(), 0.7, init.contiguous(), return_state=True)
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(state, expected_state, rtol=1e-6, atol=1e-6)


def _with_non_finite(x):
    x = x.clone()
    x[0, 1, 0], x[0, 2, 1], x[1, 0, 2], x[1, 3, 3] = float("inf"), float("-inf"), float("nan"), float("inf")
    return x


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in the interpreter
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.98, 1.0])
@pytest.mark.parametrize("with_init", [False, True], ids=["no_init", "init"])
def test_backends_agree_on_non_finite_input(mu, with_init):
    """inf/NaN propagate by the formula mu·y + (1-mu)·x in every backend; mu = 0 and 1 are exact copies."""
    x = _with_non_finite(torch.randn(2, 5, 4))
    init = torch.tensor([[float("inf"), 1.0, -2.0, 0.5], [0.0, float("-inf"), 3.0, 1.0]]) if with_init else None
    outputs = {backend: zs2_kernels.momentum_update(x, mu, init=init, backend=backend, return_state=True)
               for backend in ("torch", "triton")}
    for got, want in zip(outputs["triton"], outputs["torch"]):
        torch.testing.assert_close(got, want, equal_nan=True)
    y, state = outputs["torch"]
    if mu == 0.0:
        assert torch.equal(y.nan_to_num(), x.nan_to_num()) and torch.equal(state.nan_to_num(), x[:, -1].nan_to_num())
    elif mu == 1.0:
        first = x[:, 0] if init is None else init
        assert torch.equal(y.nan_to_num(), first[:, None].expand_as(x).nan_to_num())


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_inputs_that_require_grad_are_detached(backend):
    """The op is autograd-free: inputs that require grad run as their values, and no gradient flows; the attack
    found that silent (a loss through y never reached x), so the public function says so while grads are recorded."""
    x = torch.randn(2, 4, 3, requires_grad=True)
    init = torch.randn(2, 3, requires_grad=True)
    with pytest.warns(UserWarning, match="momentum_update is autograd-free"):
        y, state = zs2_kernels.momentum_update(x * 1, 0.7, init=init, backend=backend, return_state=True)
    assert not y.requires_grad and not state.requires_grad
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        zs2_kernels.momentum_update(x, 0.7, backend=backend)  # nothing recorded: nothing to say
    assert torch.equal(y, zs2_kernels.momentum_update(x.detach(), 0.7, init=init.detach(), backend=backend))


def test_raw_call_on_meta_tensors_validates_and_gives_shapes():
    """The dispatcher sends meta tensors to the fake implementation: it refuses what the op refuses."""
    with pytest.raises(ValueError, match="init must have shape"):
        torch.ops.zs2.momentum_update(X.to("meta"), 0.5, torch.randn(3, 4, device="meta"), "torch", False)
    with pytest.raises(ValueError, match="momentum"):
        torch.ops.zs2.momentum_update(X.to("meta"), 1.5, None, "torch", False)
    y, state = torch.ops.zs2.momentum_update(X.to("meta"), 0.5, None, "torch", True)
    assert y.shape == X.shape and y.is_meta and state.shape == (2, 4) and state.dtype == torch.float32


def test_op_refuses_a_backend_that_cannot_run_on_the_device(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="triton"):
        update_op(X, 0.5, None, "triton", False)
    with pytest.raises(RuntimeError, match="cuda"):
        torch.ops.zs2.momentum_update(X, 0.5, None, "cuda", False)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("call", ["registered_op", "eager_call"])
def test_empty_init_means_none_and_flat_init_is_the_state(backend, call):
    """The compiled path's conventions: an empty init is no carried state, a flat [G·N] init the state [G, N]."""
    run = torch.ops.zs2.momentum_update if call == "registered_op" else update_op
    x, init = torch.randn(2, 5, 6), torch.randn(2, 6)
    for mu in (0.0, 0.7, 1.0):
        assert torch.equal(run(x, mu, torch.empty(0), backend, True)[0], run(x, mu, None, backend, True)[0])
        for got, want in zip(run(x, mu, init.flatten(), backend, True), run(x, mu, init, backend, True)):
            assert torch.equal(got, want)
    with pytest.raises(ValueError, match="init must have shape"):
        run(x, 0.7, torch.randn(11), backend, False)


# --------------------------------------------------------------------------- the traced form (compiled graphs)
def _states(form, groups, width, dtype):
    """init as the processor passes it: none, flat float32 [G·N], [G, N] in x's dtype, or empty (first chunk)."""
    values = torch.randn(groups, width, generator=torch.Generator().manual_seed(5))
    return {"none": None, "flat": values.reshape(-1), "grid": values.to(dtype),
            "empty": torch.empty(0)}[form]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.98, 1.0])
@pytest.mark.parametrize("form", ["none", "flat", "grid", "empty"])
@pytest.mark.parametrize("frames", [1, 5])
def test_unrolled_form_is_the_reference_bit_for_bit(dtype, mu, form, frames):
    """ema_unrolled (what ema_frames runs under torch.compile) against the reference recursion, eagerly: the same
    values bit for bit, the empty state meaning none, the float32 state after the last frame."""
    from zs2_kernels.ops.momentum.traced import ema_unrolled

    x = torch.randn(3, frames, 7, generator=torch.Generator().manual_seed(2)).to(dtype)
    init = _states(form, 3, 7, dtype)
    y, state = ema_unrolled(x, mu, init, return_state=True)
    reference_init = None if init is None or init.numel() == 0 else init.reshape(3, 7)
    want_y, want_state = reference.momentum_update(x, mu, reference_init, return_state=True)
    assert y.dtype == dtype and state.dtype == torch.float32
    assert torch.equal(y, want_y) and torch.equal(state, want_state.float())
    assert ema_unrolled(x, mu, init, return_state=False)[1] is None


@pytest.mark.parametrize("mu", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("with_init", [False, True], ids=["no_init", "init"])
def test_unrolled_form_on_non_finite_input(mu, with_init):
    """inf/NaN as the op gives them; an absent (empty) state never mixes its zeros' arithmetic into frame 0."""
    from zs2_kernels.ops.momentum.traced import ema_unrolled

    x = _with_non_finite(torch.randn(2, 5, 4))
    init = torch.tensor([[float("inf"), 1.0, -2.0, 0.5], [0.0, float("-inf"), 3.0, 1.0]]) if with_init else None
    want = zs2_kernels.momentum_update(x, mu, init=init, backend="torch", return_state=True)
    got = ema_unrolled(x, mu, torch.empty(0) if init is None else init.reshape(-1), return_state=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, equal_nan=True, rtol=0, atol=0)


def test_compiled_graphs_hold_no_opaque_momentum_op():
    """Under torch.compile ema_frames traces to plain aten operations (no zs2::momentum_update node), one graph for
    the first chunk's empty state of unknown size and for a carried one, no graph break; equal to the op."""
    from zs2_kernels.ops.momentum import ema_frames

    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    @torch.compile(backend=backend, fullgraph=True, dynamic=False)
    def step(x, state):
        return ema_frames(x, 0.7, state, "torch", True)

    x = torch.randn(2, 4, 6)
    empty = torch.empty(0)
    torch._dynamo.decorators.mark_unbacked(empty, 0)
    y0, state = step(x, empty)
    y1, _ = step(x, state.reshape(-1))
    assert len(graphs) == 1
    targets = {str(node.target) for g in graphs for node in g.graph.nodes if node.op == "call_function"}
    assert not any("momentum_update" in target for target in targets), targets
    eager0 = zs2_kernels.momentum_update(x, 0.7, backend="torch", return_state=True)
    assert torch.equal(y0, eager0[0]) and torch.equal(y1, zs2_kernels.momentum_update(x, 0.7, init=eager0[1]))
