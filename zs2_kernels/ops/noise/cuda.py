"""The noise search on the CUDA C++ backend: bindings of ``zs2_kl_sums`` and ``zs2_compose`` (csrc/zs2_ops.h).

Candidates are always materialised here (no Philox); the search stages run on the sums with the
reference's scalar code, on the device, without synchronising.
"""

from __future__ import annotations

import torch

from .. import cuda_library as lib
from . import reference


def _check_frame_and_candidates(prev: torch.Tensor, candidates: torch.Tensor) -> int:
    """Check prev [B, D] and candidates [R, B, D] share a supported dtype; return its code."""
    code = lib.dtype_code("prev", prev)
    lib.dtype_code("candidates", candidates, prev.dtype)
    if prev.dim() != 2 or candidates.dim() != 3 or tuple(candidates.shape[1:]) != tuple(prev.shape):
        raise ValueError(f"need prev [B, D] and candidates [R, B, D], got {tuple(prev.shape)}, "
                         f"{tuple(candidates.shape)}")
    return code


def kl_sums(prev: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A [B], C [B, R], E [B]) in float32 for prev [B, D] and candidates [R, B, D]: A = mean_d exp(p)·p,
    C[:, r] = mean_d exp(p)·n_r and E = mean_d exp(2p), E summed in the same pass as A (see
    ``reference.kl_sums``)."""
    library, device = lib.prepare(prev, candidates)
    code = _check_frame_and_candidates(prev, candidates)
    R, B, D = candidates.shape
    prev = lib.rows(prev)
    candidates = candidates.contiguous()
    a_sum = torch.empty(B, dtype=torch.float32, device=device)
    c_sum = torch.empty(B, R, dtype=torch.float32, device=device)
    e_sum = torch.empty(B, dtype=torch.float32, device=device)
    if D == 0:  # the mean of nothing, as torch computes it
        return a_sum.fill_(float("nan")), c_sum.fill_(float("nan")), e_sum.fill_(float("nan"))
    # Per-chunk partial sums (large D only), from torch's caching allocator: stream-ordered like the kernels.
    workspace_size = library.zs2_kl_sums_workspace_size(R, B, D)
    workspace = torch.empty(workspace_size, dtype=torch.float32, device=device) if workspace_size > 0 else None
    with torch.cuda.device(device):
        lib.check_status(library, library.zs2_kl_sums(
            prev.data_ptr(), prev.stride(0), candidates.data_ptr(), a_sum.data_ptr(), c_sum.data_ptr(),
            e_sum.data_ptr(), None if workspace is None else workspace.data_ptr(), R, B, D, code,
            lib.stream(device)))
    return a_sum, c_sum, e_sum


def search_frame(prev, candidates, noise_lambda: float, search: str, line_steps: int):
    """Both search stages for one frame: the sums (A, C, E) from the library, the stages from the reference.
    Returns (index [B], coefficients [B, 3], achieved KL [B]) as ``reference.search_frame``."""
    return reference.search_from_sums(*kl_sums(prev, candidates), noise_lambda, search, line_steps, prev.shape[1])


def compose(prev: torch.Tensor, candidates: torch.Tensor, index: torch.Tensor,
            coefficients: torch.Tensor) -> torch.Tensor:
    """out[b] = keep·prev[b] + fresh·candidates[index[b], b] - tilt·exp(prev[b]) with (keep, fresh, tilt) =
    coefficients[b] (see ``reference.compose``): float32 arithmetic, prev's dtype, contiguous.

    index is clamped to [0, R) on the device, as the other backends do (no host check, which would
    synchronise). The coefficients [B, 3] are used as given (no clamping: NaN gives a NaN row); the exp term is
    computed only where tilt != 0.
    """
    library, device = lib.prepare(prev, candidates, index, coefficients)
    code = _check_frame_and_candidates(prev, candidates)
    R, B, D = candidates.shape
    if tuple(index.shape) != (B,) or tuple(coefficients.shape) != (B, 3):
        raise ValueError(f"index and coefficients must have shapes {(B,)} and {(B, 3)}, got {tuple(index.shape)}, "
                         f"{tuple(coefficients.shape)}")
    prev = lib.rows(prev)
    candidates = candidates.contiguous()
    index = index.to(torch.int64).clamp(0, R - 1).contiguous()
    coefficients = coefficients.to(torch.float64).contiguous()
    out = torch.empty(B, D, dtype=prev.dtype, device=device)
    with torch.cuda.device(device):
        lib.check_status(library, library.zs2_compose(
            prev.data_ptr(), prev.stride(0), candidates.data_ptr(), index.data_ptr(), coefficients.data_ptr(),
            out.data_ptr(), R, B, D, code, lib.stream(device)))
    return out
