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


def kl_sums(prev: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [B], C [B, R]) in float32 for prev [B, D] and candidates [R, B, D] (see ``reference.kl_sums``)."""
    library, device = lib.prepare(prev, candidates)
    code = _check_frame_and_candidates(prev, candidates)
    R, B, D = candidates.shape
    prev = lib.rows(prev)
    candidates = candidates.contiguous()
    a_sum = torch.empty(B, dtype=torch.float32, device=device)
    c_sum = torch.empty(B, R, dtype=torch.float32, device=device)
    if D == 0:  # the mean of nothing, as torch computes it
        return a_sum.fill_(float("nan")), c_sum.fill_(float("nan"))
    # Per-chunk partial sums (large D only), from torch's caching allocator: stream-ordered like the kernels.
    workspace_size = library.zs2_kl_sums_workspace_size(R, B, D)
    workspace = torch.empty(workspace_size, dtype=torch.float32, device=device) if workspace_size > 0 else None
    with torch.cuda.device(device):
        lib.check_status(library, library.zs2_kl_sums(
            prev.data_ptr(), prev.stride(0), candidates.data_ptr(), a_sum.data_ptr(), c_sum.data_ptr(),
            None if workspace is None else workspace.data_ptr(), R, B, D, code, lib.stream(device)))
    return a_sum, c_sum


def search_frame(prev, candidates, noise_lambda: float, search: str, line_steps: int):
    """Both search stages for one frame: the sums from the library, the stages from the reference."""
    return reference.search_from_sums(*kl_sums(prev, candidates), noise_lambda, search, line_steps)


def compose(prev: torch.Tensor, candidates: torch.Tensor, index: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """out[b] = sqrt(alpha[b])·prev[b] + sqrt(1-alpha[b])·candidates[index[b], b] (see ``reference.compose``).

    index and alpha are clamped to [0, R) and [0, 1] on the device, as the other backends do (no host check,
    which would synchronise).
    """
    library, device = lib.prepare(prev, candidates, index, alpha)
    code = _check_frame_and_candidates(prev, candidates)
    R, B, D = candidates.shape
    if tuple(index.shape) != (B,) or tuple(alpha.shape) != (B,):
        raise ValueError(f"index and alpha must have shape {(B,)}, got {tuple(index.shape)}, {tuple(alpha.shape)}")
    prev = lib.rows(prev)
    candidates = candidates.contiguous()
    index = index.to(torch.int64).clamp(0, R - 1).contiguous()
    alpha = alpha.to(torch.float64).nan_to_num(nan=0.0).clamp(0, 1).contiguous()
    out = torch.empty(B, D, dtype=prev.dtype, device=device)
    with torch.cuda.device(device):
        lib.check_status(library, library.zs2_compose(
            prev.data_ptr(), prev.stride(0), candidates.data_ptr(), index.data_ptr(), alpha.data_ptr(),
            out.data_ptr(), R, B, D, code, lib.stream(device)))
    return out
