"""The ``zs2`` torch custom ops and their backend dispatch.

Each op is an autograd-free ``torch.library.custom_op`` with a fake (shape-only) implementation, so
``torch.compile`` traces through it without graph breaks. The backend is an explicit string argument
(resolved by :mod:`zs2_kernels.backend`), which keeps the choice visible in traces and benchmark
records. Inputs are validated by the public wrappers before they reach these ops.

Library code calls them through :func:`call`: in eager mode it runs the implementation directly (the
``torch.library`` dispatch costs ~80 µs per call on CPU, as much as the EMA of a small UNet layer), and
while ``torch.compile`` traces it emits the registered op.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import reference


def _triton_momentum():
    from .kernels import momentum

    return momentum


def _triton_noise():
    from .kernels import noise_search

    return noise_search


def _cuda_library():
    from . import cuda_backend

    return cuda_backend


def _momentum_update(x: Tensor, momentum: float, init: Optional[Tensor], backend: str) -> Tensor:
    """EMA along dim 1 of a contiguous x [G, F, N]; ``init`` [G, N] is the state carried from a previous chunk."""
    if backend == "triton":
        return _triton_momentum().momentum_update(x, momentum, init)
    if backend == "cuda":
        return _cuda_library().momentum_update(x, momentum, init)
    return reference.momentum_update(x, momentum, init)


momentum_update = torch.library.custom_op("zs2::momentum_update", _momentum_update, mutates_args=())


@momentum_update.register_fake
def _(x, momentum, init, backend):
    return torch.empty_like(x)


def _kl_sums(prev: Tensor, candidates: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    """The batched KL check: A [B] = mean exp(p)·p and C [B, R] = mean exp(p)·n_r, float32."""
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


def _search_frame(prev: Tensor, candidates: Optional[Tensor], num_candidates: int, seed: int, frame: int,
                 noise_lambda: float, search: str, line_steps: int, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Random + line stage for one frame: (candidate index [B] int64, alpha [B] f64, achieved KL [B] f64).

    ``candidates`` None means Philox candidates regenerated in-kernel from (seed, frame) (Triton only).
    """
    if backend == "triton":
        return _triton_noise().search(prev, candidates, num_candidates, noise_lambda, search, line_steps,
                                      seed=None if candidates is not None else seed, frame=frame)
    sums = _cuda_library().kl_sums(prev, candidates) if backend == "cuda" else reference.kl_sums(prev, candidates)
    return reference.search_from_sums(*sums, noise_lambda, search, line_steps)


search_frame = torch.library.custom_op("zs2::search_frame", _search_frame, mutates_args=())


@search_frame.register_fake
def _(prev, candidates, num_candidates, seed, frame, noise_lambda, search, line_steps, backend):
    batch = prev.shape[0]
    return (prev.new_empty((batch,), dtype=torch.int64), prev.new_empty((batch,), dtype=torch.float64),
            prev.new_empty((batch,), dtype=torch.float64))


def _compose(prev: Tensor, candidates: Optional[Tensor], index: Tensor, alpha: Tensor, num_candidates: int,
            seed: int, frame: int, backend: str) -> Tensor:
    """eps = sqrt(alpha)·prev + sqrt(1 - alpha)·n_index in prev's dtype (Philox candidates when None)."""
    if backend == "triton":
        return _triton_noise().compose(prev, candidates, index, alpha, num_candidates,
                                       seed=None if candidates is not None else seed, frame=frame)
    if backend == "cuda":
        return _cuda_library().compose(prev, candidates, index, alpha)
    return reference.compose(prev, candidates, index, alpha)


compose = torch.library.custom_op("zs2::compose", _compose, mutates_args=())


@compose.register_fake
def _(prev, candidates, index, alpha, num_candidates, seed, frame, backend):
    return torch.empty_like(prev)


_IMPLEMENTATIONS = {"momentum_update": _momentum_update, "kl_sums": _kl_sums, "search_frame": _search_frame,
                    "compose": _compose}


def call(name: str, *args):
    """Run zs2 op ``name``: its implementation directly in eager mode, the registered op under torch.compile."""
    if torch.compiler.is_compiling():
        return getattr(torch.ops.zs2, name)(*args)
    return _IMPLEMENTATIONS[name](*args)
