"""The anchored chain (``noise_anchor = a`` in (0, 1)): each frame's noise keeps a correlation of at least ``a`` with
frame 0's while the adjacent statistic stays lambda (zs2_kernels/DESIGN.md §1.1, "The anchored chain").

Where the unbiased step alone would leave the correlation with frame 0 below the floor, the frame is

    eps_i = alpha·p + beta·eps_0 + gamma·n_perp,      n_perp = g·(n - (C/E)·exp(p)),  g = sqrt(D/(D - 1))

with p = eps_{i-1} and n_perp the exact search's fresh noise (no component along exp(p), unit variance on average).
Its statistic is KL = (1 - alpha)·A - beta·B with B = mean(exp(p)·eps_0), so lambda and the floor fix alpha and
beta in closed form, and gamma gives the frame unit variance. When both cannot hold with gamma >= 0 (a floor near
1 under a large lambda) the floor wins: gamma = 0 and the adjacent statistic misses lambda (the chain warns).
Everything is elementwise torch on the frames' device, on top of the ops: it costs a few passes per frame, only
when anchored.
"""

from __future__ import annotations

import math

import torch


def _moment(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean_d x·y per row, float64 [B]."""
    return (x.double() * y.double()).mean(-1)


def anchored_step(prev: torch.Tensor, first: torch.Tensor, chosen: torch.Tensor, sums, noise_lambda: float,
                  anchor: float, unanchored: torch.Tensor):
    """The anchored frame [B, D] float32 for rows whose floor binds (``unanchored``'s row elsewhere), the squared
    weight on the previous frame [B] and the achieved statistic [B] of those rows (NaN elsewhere: the caller keeps
    the search's values there).

    Args:
        prev, first, chosen: float32 [B, D]: the previous frame, frame 0 and the random stage's candidate.
        sums: (A [B], C [B], E [B]) of the chosen candidate (``kl_sums``'s, C gathered at the chosen index).
        unanchored: the exact search's frame [B, D] (what a row gets when the floor does not bind).
    """
    a_sum, c_best, e_sum = (s.double() for s in sums)
    dim = prev.shape[-1]
    weight = prev.exp()
    b_sum = _moment(weight, first)
    # The variance model: p has unit variance (the chain's frames do, up to sampling error; the sample's own
    # variance at small D is not a target), eps_0 its own (image-to-video's x_T is not N(0, I)), and the
    # two the sample correlation rho. cross = rho·sqrt(v0) is the cross-moment of unit-variance p with eps_0.
    v0 = _moment(first, first)
    cross = _moment(prev, first) / _moment(prev, prev).sqrt()
    target = anchor * v0.sqrt()  # the cross-moment with eps_0 a unit-variance frame needs for correlation a
    keep = 1 - noise_lambda / a_sum  # the unanchored step's weight on p
    denominator = v0 - cross * b_sum / a_sum
    binds = (a_sum > noise_lambda) & (keep * cross < target) & (dim > 1)
    beta = (target - keep * cross) / denominator
    alpha = 1 - (noise_lambda + beta * b_sum) / a_sum
    gamma_sq = 1 - (alpha * alpha + beta * beta * v0 + 2 * alpha * beta * cross)
    # The floor wins where lambda cannot be met with it: unit variance from p and eps_0 alone, no fresh noise.
    floor_only = (gamma_sq < 0) | (denominator <= 0)
    floor_alpha = ((1 - anchor * anchor) / (1 - cross * cross / v0).clamp(min=1e-12)).sqrt()
    alpha = torch.where(floor_only, floor_alpha, alpha)
    beta = torch.where(floor_only, (target - floor_alpha * cross) / v0, beta)
    gamma = torch.where(floor_only, torch.zeros_like(gamma_sq), gamma_sq.clamp(min=0).sqrt())
    # p along eps_0 (frame 1, whose p is eps_0): one direction, so the floor sets the weight on p alone.
    collinear = 1 - cross * cross / v0 < 1e-9
    alpha = torch.where(collinear, torch.full_like(alpha, anchor), alpha)
    beta = torch.where(collinear, torch.zeros_like(beta), beta)
    gamma = torch.where(collinear, torch.full_like(gamma, math.sqrt(1 - anchor * anchor)), gamma)
    binds = binds & alpha.isfinite() & beta.isfinite() & gamma.isfinite()
    fresh = gamma * math.sqrt(dim / max(dim - 1, 1))
    tilt = (fresh * c_best / e_sum).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)

    def column(x):
        return x.float()[:, None]

    frame = column(alpha) * prev + column(beta) * first + column(fresh) * chosen - column(tilt) * weight
    frame = torch.where(binds[:, None], frame, unanchored)
    kl = (1 - alpha) * a_sum - beta * b_sum
    nan = torch.full_like(kl, float("nan"))
    return frame, torch.where(binds, alpha * alpha, nan), torch.where(binds, kl, nan)
