"""How many kernels a GPU compiles for a whole run: a shape-specialised constexpr (or an argument the JIT
specialises that changes from frame to frame, chunk to chunk or layer to layer) would compile more, each
compilation a stall of seconds in the middle of sampling.

The interpreter compiles nothing, so a spy computes, for every launch, the key under which ``triton.jit``
on a GPU looks its compiled kernel up (triton.runtime.jit's own binder and cache key, with the CUDA
backend's specialisation rules: divisibility by 16 of integers and pointers, integers equal to 1, constexprs,
launch options) and counts the distinct keys. The launches of these ops depend on shapes, never on values
(no host code reads a kernel's output between launches), so the spy skips running the kernels: the
interpreter would take minutes on SD1.5-sized frames.
"""

import pytest
import torch

import zs2_kernels
from zs2_kernels.ops.momentum import ema_frames

from helpers import interpreting

pytestmark = pytest.mark.skipif(not interpreting(), reason="spies on the Triton interpreter's launches")

SD15_LATENT = (4, 64, 64)
#: Self-attention inputs of two SD1.5 layers (tokens, channels): the mid block and the 16x16 down block.
SD15_LAYERS = ((8 * 8, 1280), (16 * 16, 1280))


@pytest.fixture
def jit_cache_keys(monkeypatch):
    """The set of (kernel, cache key) a GPU's triton.jit would compile, filled by every launch from now on."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction, compute_cache_key, create_function_from_signature

    backend = make_backend(GPUTarget("cuda", 90, 32))
    binders, keys = {}, set()

    def launch(self, *args, grid, warmup, **kwargs):
        if self.fn not in binders:
            jit = JITFunction(self.fn, **self.kwargs)  # the decorator's arguments: do_not_specialize, ...
            binders[self.fn] = create_function_from_signature(jit.signature, jit.params, backend)
        _, specialization, options = binders[self.fn](*args, **kwargs)
        keys.add((self.fn.__name__, compute_cache_key({}, specialization, options)))

    monkeypatch.setattr(InterpretedFunction, "run", launch)
    return keys


def test_a_seeded_chunked_sd15_run_compiles_six_kernels(jit_cache_keys):
    """128 frames seeded (Philox candidates), frame_chunk=16: philox_normal for frame 0, then per frame the KL
    partial sums, the search and compose; per layer and chunk the momentum update, the first chunk without a
    carried state and the later ones with it. Frame index, chunk and layer size must not add a variant."""
    zs2_kernels.dependency_noise((1, 128, *SD15_LATENT), 0.01, seed=0, backend="triton")
    for tokens, channels in SD15_LAYERS:
        state = None
        for _ in range(128 // 16):  # guidance halves x videos = 2 groups, as the UNet batch holds them
            _, state = ema_frames(torch.empty(2, 16, tokens * channels), 0.98,
                                  None if state is None else state.view(-1), "triton", True)
    kernels = sorted(kernel for kernel, _ in jit_cache_keys)
    assert kernels == ["_compose_kernel", "_kl_partial_sums_kernel", "_momentum_update_kernel",
                       "_momentum_update_kernel", "_philox_normal_kernel", "_search_kernel"], kernels


def test_the_spy_sees_a_specialisation(jit_cache_keys):
    """The count can fail: a frame size that is not a multiple of 16 is another specialisation (and a size of 1 a
    constexpr), as on a GPU."""
    for frame_size in (1024, 1000, 1):
        ema_frames(torch.empty(2, 3, frame_size), 0.5, None, "triton", False)
    assert len(jit_cache_keys) == 3
