"""The ``zs2`` torch custom ops and their backend dispatch.

Each op is an autograd-free ``torch.library.custom_op`` with a fake (shape-only) implementation, so
``torch.compile`` traces through it without graph breaks. The backend is an explicit string argument
(resolved by :mod:`zs2_kernels.backend`), which keeps the choice visible in traces and benchmark
records. Every op validates its own arguments (raw ``torch.ops.zs2.*`` calls included) with cheap checks
of types, shapes and numbers that never synchronise a GPU.

Library code calls them through :func:`call`: in eager mode it runs the implementation directly (the
``torch.library`` dispatch costs ~80 µs per call on CPU, as much as the EMA of a small UNet layer), and
while ``torch.compile`` traces it emits the registered op.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import reference
from ._checks import (check_float_tensor, check_int, check_number, check_same_device, check_same_device_dtype,
                      check_search)
from .backend import BACKENDS


def _triton_momentum():
    from .kernels import momentum

    return momentum


def _triton_noise():
    from .kernels import noise_search

    return noise_search


def _cuda_library():
    from . import cuda_backend

    return cuda_backend


def _check_momentum_update(x: Tensor, momentum: float, init: Optional[Tensor], backend: str) -> None:
    """Raise ValueError/TypeError naming the bad argument of ``zs2::momentum_update``."""
    check_float_tensor("x", x)
    if x.dim() != 3 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty [G, F, N] tensor, got shape {tuple(x.shape)}")
    check_number("momentum", momentum, 0.0, 1.0)
    _check_backend(backend)
    if init is None:
        return
    check_float_tensor("init", init)
    if init.dtype not in (x.dtype, torch.float32):
        raise TypeError(f"init must be float32 (the carried state) or x's dtype {x.dtype}, got {init.dtype}")
    check_same_device("init", init, "x", x)
    if init.shape != (x.shape[0], x.shape[2]):
        raise ValueError(f"init must have shape {(x.shape[0], x.shape[2])} ([G, N] of x [G, F, N]), "
                         f"got {tuple(init.shape)}")


def _momentum_update_eager(x: Tensor, momentum: float, init: Optional[Tensor], backend: str,
                           return_state: bool = False) -> tuple[Tensor, Optional[Tensor]]:
    """EMA along dim 1 of x [G, F, N], continuing from ``init`` [G, N] (a previous chunk's state) if given.

    Returns ``(y, state)``: state is the float32 running value after the last frame [G, N] when
    ``return_state``, else None (not computed: it costs a write per element of a frame).
    """
    _check_momentum_update(x, momentum, init, backend)
    x = x.contiguous()
    if init is not None:
        init = init.to(torch.float32).contiguous()  # exact; the kernels read the state in float32
    if backend == "triton":
        implementation = _triton_momentum()
    elif backend == "cuda":
        implementation = _cuda_library()
    else:
        implementation = reference
    if return_state:
        return implementation.momentum_update(x, momentum, init, return_state=True)
    return implementation.momentum_update(x, momentum, init), None


def _momentum_update(x: Tensor, momentum: float, init: Optional[Tensor], backend: str,
                     return_state: bool = False) -> tuple[Tensor, Tensor]:
    """The registered op: as ``_momentum_update_eager``, with an empty float32 tensor for a state not asked for."""
    y, state = _momentum_update_eager(x, momentum, init, backend, return_state)
    return y, x.new_empty(0, dtype=torch.float32) if state is None else state


momentum_update = torch.library.custom_op("zs2::momentum_update", _momentum_update, mutates_args=())


@momentum_update.register_fake
def _(x, momentum, init, backend, return_state=False):
    state_shape = (x.shape[0], x.shape[2]) if return_state else (0,)
    return x.new_empty(x.shape), x.new_empty(state_shape, dtype=torch.float32)


def _check_backend(backend) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _check_frame(prev, candidates, num_candidates, seeds, backend) -> None:
    """What every noise op relies on: prev [B, D]; candidates [R, B, D] like prev with R = num_candidates, or
    None with Philox keys ``seeds`` [B] int64 (Triton only)."""
    _check_backend(backend)
    check_float_tensor("prev", prev)
    if prev.dim() != 2 or prev.numel() == 0:
        raise ValueError(f"prev must be [B, D] with B, D >= 1, got shape {tuple(prev.shape)}")
    num_candidates = check_int("num_candidates", num_candidates, 1)
    if candidates is None:
        if backend != "triton":
            raise ValueError(f"candidates=None (in-kernel Philox) needs backend='triton', got {backend!r}")
        if not isinstance(seeds, Tensor) or seeds.dtype != torch.int64 or seeds.shape != prev.shape[:1]:
            raise ValueError(f"with candidates=None, seeds must be an int64 tensor of shape {tuple(prev.shape[:1])} "
                             f"(one Philox key per video), got {seeds!r}")
        check_same_device("seeds", seeds, "prev", prev)
        return
    check_float_tensor("candidates", candidates)
    check_same_device_dtype("candidates", candidates, "prev", prev)
    if candidates.shape != (num_candidates, *prev.shape):
        raise ValueError(f"candidates must have shape (num_candidates, B, D) = {(num_candidates, *prev.shape)}, "
                         f"got {tuple(candidates.shape)}")


def _kl_sums(prev: Tensor, candidates: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    """The batched KL check: A [B] = mean exp(p)·p and C [B, R] = mean exp(p)·n_r, float32."""
    if not isinstance(candidates, Tensor):
        raise TypeError(f"candidates must be a tensor [R, B, D], got {type(candidates).__name__}")
    _check_frame(prev, candidates, candidates.shape[0] if candidates.dim() else 0, None, backend)
    if backend == "triton":
        return _triton_noise().kl_sums(prev, candidates)
    if backend == "cuda":
        return _cuda_library().kl_sums(prev, candidates)
    return reference.kl_sums(prev, candidates)


kl_sums = torch.library.custom_op("zs2::kl_sums", _kl_sums, mutates_args=())


@kl_sums.register_fake
def _(prev, candidates, backend):
    batch = prev.shape[0]
    return (prev.new_empty((batch,), dtype=torch.float32),
            prev.new_empty((batch, candidates.shape[0]), dtype=torch.float32))


def _search_frame(prev: Tensor, candidates: Optional[Tensor], num_candidates: int, seeds: Optional[Tensor],
                  frame: int, noise_lambda: float, search: str, line_steps: int,
                  backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Random + line stage for one frame: (candidate index [B] int64, alpha [B] f64, achieved KL [B] f64).

    ``candidates`` None means Philox candidates regenerated in-kernel from (seeds[b], frame) (Triton only).
    """
    _check_frame(prev, candidates, num_candidates, seeds, backend)
    check_int("frame", frame, 0)
    check_search(noise_lambda, search, line_steps)
    if backend == "triton":
        return _triton_noise().search(prev, candidates, num_candidates, noise_lambda, search, line_steps,
                                      seeds=seeds, frame=frame)
    sums = _cuda_library().kl_sums(prev, candidates) if backend == "cuda" else reference.kl_sums(prev, candidates)
    return reference.search_from_sums(*sums, noise_lambda, search, line_steps)


search_frame = torch.library.custom_op("zs2::search_frame", _search_frame, mutates_args=())


@search_frame.register_fake
def _(prev, candidates, num_candidates, seeds, frame, noise_lambda, search, line_steps, backend):
    batch = prev.shape[0]
    return (prev.new_empty((batch,), dtype=torch.int64), prev.new_empty((batch,), dtype=torch.float64),
            prev.new_empty((batch,), dtype=torch.float64))


def _compose(prev: Tensor, candidates: Optional[Tensor], index: Tensor, alpha: Tensor, num_candidates: int,
             seeds: Optional[Tensor], frame: int, backend: str) -> Tensor:
    """eps = sqrt(alpha)·prev + sqrt(1 - alpha)·n_index in prev's dtype (Philox candidates when None).

    alpha is clamped to [0, 1] and the index to [0, R) (checking their values would synchronise the GPU).
    """
    _check_frame(prev, candidates, num_candidates, seeds, backend)
    check_int("frame", frame, 0)
    for name, value, dtype in (("index", index, torch.int64), ("alpha", alpha, torch.float64)):
        if not isinstance(value, Tensor) or value.dtype != dtype or value.shape != prev.shape[:1]:
            raise ValueError(f"{name} must be a {dtype} tensor of shape {tuple(prev.shape[:1])}, got {value!r}")
        check_same_device(name, value, "prev", prev)
    if backend == "triton":
        return _triton_noise().compose(prev, candidates, index, alpha, num_candidates, seeds=seeds, frame=frame)
    if backend == "cuda":
        return _cuda_library().compose(prev, candidates, index, alpha)
    return reference.compose(prev, candidates, index, alpha)


compose = torch.library.custom_op("zs2::compose", _compose, mutates_args=())


@compose.register_fake
def _(prev, candidates, index, alpha, num_candidates, seeds, frame, backend):
    return torch.empty_like(prev)


_IMPLEMENTATIONS = {"momentum_update": _momentum_update_eager, "kl_sums": _kl_sums, "search_frame": _search_frame,
                    "compose": _compose}


def call(name: str, *args):
    """Run zs2 op ``name``: its implementation directly in eager mode, the registered op under torch.compile."""
    if torch.compiler.is_compiling():
        return getattr(torch.ops.zs2, name)(*args)
    return _IMPLEMENTATIONS[name](*args)
