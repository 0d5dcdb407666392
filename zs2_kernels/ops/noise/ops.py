"""The dependency noise model's registered ops (zs2_kernels/DESIGN.md §1.1): :data:`kl_sums_op` (the batched KL
check: A and every C_r in one pass), :data:`search_frame_op` (random and line stage for one frame),
:data:`compose_op` (writes the frame) and :data:`philox_normal_op` (the Philox candidates the Triton kernels
regenerate, materialised). Candidates are a tensor [R, B, D], or ``None`` with one Philox key per video in
``seeds`` (Triton only). Their argument checks, eager implementations by backend and fake kernels."""


from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._checks import check_float_tensor, check_int, check_same_device, check_same_device_dtype, check_search
from ..backend import resolve_backend
from ..registry import BackendTable, Op

IMPLEMENTATIONS = BackendTable(__package__, {"torch": ".reference", "triton": ".triton", "cuda": ".cuda"})


def _check_seeds(seeds, batch: int, device) -> None:
    if not isinstance(seeds, Tensor) or seeds.dtype != torch.int64 or seeds.shape != (batch,):
        raise ValueError(f"seeds must be an int64 tensor of shape ({batch},) (one Philox key per video), "
                         f"got {seeds!r}")
    if seeds.device != device:
        raise ValueError(f"seeds is on {seeds.device} but must be on {device}")


def _check_frame(prev, candidates, num_candidates, seeds, backend) -> None:
    """What every noise op relies on: prev [B, D]; candidates [R, B, D] like prev with R = num_candidates, or
    None with Philox keys ``seeds`` [B] int64 (Triton only)."""
    check_float_tensor("prev", prev)
    resolve_backend(prev.device, backend)  # an unknown backend, or one that cannot run on prev's device, raises
    if prev.dim() != 2 or prev.numel() == 0:
        raise ValueError(f"prev must be [B, D] with B, D >= 1, got shape {tuple(prev.shape)}")
    check_int("num_candidates", num_candidates, 1)
    if candidates is None:
        if backend != "triton":
            raise ValueError(f"candidates=None (in-kernel Philox) needs backend='triton', got {backend!r}")
        _check_seeds(seeds, prev.shape[0], prev.device)
        return
    check_float_tensor("candidates", candidates)
    check_same_device_dtype("candidates", candidates, "prev", prev)
    if candidates.shape != (num_candidates, *prev.shape):
        raise ValueError(f"candidates must have shape (num_candidates, B, D) = {(num_candidates, *prev.shape)}, "
                         f"got {tuple(candidates.shape)}")


def _detached(prev: Tensor, candidates: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
    """The ops are autograd-free: no gradient flows, whatever requires grad."""
    return prev.detach(), None if candidates is None else candidates.detach()


def _kl_sums(prev: Tensor, candidates: Tensor, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """The batched KL check: A [B] = mean exp(p)·p, C [B, R] = mean exp(p)·n_r and E [B] = mean exp(2p), float32."""
    if not isinstance(candidates, Tensor):
        raise TypeError(f"candidates must be a tensor [R, B, D], got {type(candidates).__name__}")
    _check_frame(prev, candidates, candidates.shape[0] if candidates.dim() else 0, None, backend)
    return IMPLEMENTATIONS.implementation(backend, "kl_sums")(prev.detach(), candidates.detach())


kl_sums_op = Op("kl_sums", _kl_sums)


@kl_sums_op.register_fake
def _(prev, candidates, backend):
    _check_frame(prev, candidates, candidates.shape[0] if candidates.dim() else 0, None, backend)
    batch = prev.shape[0]
    return (prev.new_empty((batch,), dtype=torch.float32),
            prev.new_empty((batch, candidates.shape[0]), dtype=torch.float32),
            prev.new_empty((batch,), dtype=torch.float32))


def _search_frame(prev: Tensor, candidates: Optional[Tensor], num_candidates: int, seeds: Optional[Tensor],
                  frame: int, noise_lambda: float, search: str, line_steps: int,
                  backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Random + line stage for one frame: (candidate index [B] int64, coefficients [B, 3] f64 = (keep, fresh, tilt)
    of :data:`compose_op`, achieved KL [B] f64)."""
    _check_frame(prev, candidates, num_candidates, seeds, backend)
    check_int("frame", frame, 0)
    check_search(noise_lambda, search, line_steps)
    prev, candidates = _detached(prev, candidates)
    if candidates is None:
        return IMPLEMENTATIONS.implementation(backend, "search_frame_philox")(prev, seeds, frame, num_candidates,
                                                                              noise_lambda, search, line_steps)
    return IMPLEMENTATIONS.implementation(backend, "search_frame")(prev, candidates, noise_lambda, search, line_steps)


search_frame_op = Op("search_frame", _search_frame)


@search_frame_op.register_fake
def _(prev, candidates, num_candidates, seeds, frame, noise_lambda, search, line_steps, backend):
    _check_frame(prev, candidates, num_candidates, seeds, backend)
    check_search(noise_lambda, search, line_steps)
    batch = prev.shape[0]
    return (prev.new_empty((batch,), dtype=torch.int64), prev.new_empty((batch, 3), dtype=torch.float64),
            prev.new_empty((batch,), dtype=torch.float64))


def _compose(prev: Tensor, candidates: Optional[Tensor], index: Tensor, coefficients: Tensor, num_candidates: int,
             seeds: Optional[Tensor], frame: int, backend: str) -> Tensor:
    """eps = keep·prev + fresh·n_index - tilt·exp(prev) with (keep, fresh, tilt) = coefficients [B, 3] float64, in
    prev's dtype (Philox candidates when None), contiguous.

    The index is clamped to [0, R) (checking its values would synchronise the GPU); the coefficients are used as
    given. :data:`search_frame_op` returns both.
    """
    _check_frame(prev, candidates, num_candidates, seeds, backend)
    check_int("frame", frame, 0)
    batch = tuple(prev.shape[:1])
    for name, value, dtype, shape in (("index", index, torch.int64, batch),
                                      ("coefficients", coefficients, torch.float64, (*batch, 3))):
        if not isinstance(value, Tensor) or value.dtype != dtype or tuple(value.shape) != shape:
            raise ValueError(f"{name} must be a {dtype} tensor of shape {shape}, got {value!r}")
        check_same_device(name, value, "prev", prev)
    prev, candidates = _detached(prev, candidates)
    if candidates is None:
        return IMPLEMENTATIONS.implementation(backend, "compose_philox")(prev, seeds, frame, num_candidates, index,
                                                                         coefficients)
    return IMPLEMENTATIONS.implementation(backend, "compose")(prev, candidates, index, coefficients)


compose_op = Op("compose", _compose)


@compose_op.register_fake
def _(prev, candidates, index, coefficients, num_candidates, seeds, frame, backend):
    _check_frame(prev, candidates, num_candidates, seeds, backend)
    return prev.new_empty(prev.shape)  # contiguous whatever prev's strides, as every backend returns it


def _philox_normal(seeds: Tensor, frame: int, num_candidates: int, dim: int) -> Tensor:
    """The Philox candidates of one frame, float32 [R, B, D] (B = len(seeds)): what the Triton kernels
    regenerate from (seeds[b], frame). Frame 0 of a chain is ``philox_normal(seeds, 0, 1, D)[0]``."""
    if not isinstance(seeds, Tensor) or seeds.dim() != 1 or seeds.numel() == 0:
        raise ValueError(f"seeds must be a non-empty int64 tensor [B], got {seeds!r}")
    _check_seeds(seeds, seeds.shape[0], seeds.device)
    resolve_backend(seeds.device, "triton")  # says why Triton cannot run here (CPU without the interpreter, ...)
    check_int("frame", frame, 0)
    check_int("num_candidates", num_candidates, 1)
    check_int("dim", dim, 1)
    return IMPLEMENTATIONS.implementation("triton", "philox_normal")(seeds, frame, num_candidates, dim)


philox_normal_op = Op("philox_normal", _philox_normal)


@philox_normal_op.register_fake
def _(seeds, frame, num_candidates, dim):
    return seeds.new_empty((num_candidates, seeds.shape[0], dim), dtype=torch.float32)
