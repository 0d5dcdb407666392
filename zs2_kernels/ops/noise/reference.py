"""The dependency noise model's search in plain PyTorch: the ``torch`` backend and the oracle of the kernels.

Two layers (zs2_kernels/DESIGN.md §1.1):

* the *literal* forms (``kl_statistic``, ``search_frame_literal``, ``dependency_noise_literal``) compute
  what the paper's search computes, on full tensors, with per-candidate loops. They are slow on purpose:
  the oracle the fused kernels are tested against and the "paper reference" of the benchmarks.
* the *identity* forms (``kl_sums``, ``search_from_sums``, ``compose``) use Identity 1 (the statistic of
  any composition is affine in two means) and implement the ops on the ``torch`` backend. Kernels must
  match them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Bisection halvings of the literal exact search, in float64: the bracket on s = sqrt(alpha) ends below 1e-15.
EXACT_ITERATIONS = 60


def kl_statistic(noise: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """The paper's pointwise "KL": ``kl_div(input=noise, target=prev, log_target=True)`` averaged over the last dim."""
    return F.kl_div(noise, prev, reduction="none", log_target=True).mean(dim=-1)


def kl_sums(prev: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A[b] = mean_d exp(p)·p and C[b, r] = mean_d exp(p)·n_r, so KL(n_r, p) = A - C_r.

    float32 (float64 for float64 inputs), like the kernels' accumulators.
    """
    compute = torch.promote_types(prev.dtype, torch.float32)
    p = prev.to(compute)
    weight = p.exp()
    a_sum = (weight * p).mean(dim=-1)
    c_sum = torch.einsum("bd,rbd->br", weight, candidates.to(compute)) / p.shape[-1]
    return a_sum, c_sum


def kl_of_composition(a_sum: torch.Tensor, c_sum: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """KL(s·p + sqrt(1-s²)·n, p) = (1 - s)·A - sqrt(1 - s²)·C with s = sqrt(alpha) = ``keep``."""
    return (1 - keep) * a_sum - (1 - keep * keep).sqrt() * c_sum


def compose(prev: torch.Tensor, candidates: torch.Tensor, index: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """eps[b] = sqrt(alpha[b])·prev[b] + sqrt(1-alpha[b])·candidates[index[b], b], in prev's dtype, contiguous.

    alpha is clamped to [0, 1] (NaN to 0: a fresh candidate) and the index to [0, R), as the kernels do.
    """
    index = index.clamp(0, candidates.shape[0] - 1)
    chosen = candidates[index, torch.arange(prev.shape[0], device=prev.device)].float()
    alpha = alpha.double().nan_to_num(nan=0.0).clamp(0, 1)
    keep = alpha.sqrt().float()[:, None]
    fresh = (1 - alpha).sqrt().float()[:, None]
    # Elementwise results take prev's strides; the op's output is contiguous on every backend.
    return (keep * prev.float() + fresh * chosen).to(prev.dtype).contiguous()


def paper_line_stage(error, incumbent: torch.Tensor, line_steps: int) -> torch.Tensor:
    """The paper's line stage on alpha, on the trajectory its published pseudocode takes in float32.

    Start 0.1, step 0.1; a trial that is not worse (``<=``) than the incumbent is accepted and alpha += step,
    otherwise alpha -= 0.8·step and step *= 0.2. trial and step are float32 as in the pseudocode, so ten
    accepted steps reach 1.0000001: its error is NaN there (sqrt(1 - alpha)), NaN compares false, and the
    trial is rejected. Rejections compound float32 rounding too: trial - 0.8·step drifts below 0.2·step
    and after about eleven rejections in a row the trial is negative, its error NaN again. Here a trial
    outside [0, 1] is rejected the same way, without computing a NaN. The
    incumbent starts as the raw candidate (alpha = 0) with its random-stage error. Returns the best
    *evaluated* alpha (the pseudocode returns the alpha after its last update, never evaluated, which can
    be NaN or worse than every trial).

    Args:
        error: alpha [B] float64 in [0, 1] -> |KL(compose(alpha), prev) - lambda| [B] float64.
        incumbent: the random stage's error of the chosen candidate, [B] float64.
    """
    best = incumbent
    best_alpha = torch.zeros_like(best)
    trial = torch.full(best.shape, 0.1, dtype=torch.float32, device=best.device)
    step = torch.full_like(trial, 0.1)
    for _ in range(line_steps):
        candidate = trial.double()
        dist = error(candidate.clamp(0.0, 1.0))
        accept = (candidate >= 0) & (candidate <= 1) & (dist <= best)
        best = torch.where(accept, dist, best)
        best_alpha = torch.where(accept, candidate, best_alpha)
        trial = torch.where(accept, trial + step, trial - 0.8 * step)
        step = torch.where(accept, step, step * 0.2)
    return best_alpha


def _exact_alpha(a_sum, c_best, noise_lambda):
    """alpha with KL(compose(alpha)) = lambda, in closed form.

    With s = sqrt(alpha), g(s) = (1-s)A - sqrt(1-s²)C - lambda. Squaring (1-s)A - lambda = sqrt(1-s²)C gives
    (A² + C²)s² - 2A(A-lambda)s + (A-lambda)² - C² = 0, so the roots of g are among
        s = (A(A-lambda) ± |C|·sqrt(A² + C² - (A-lambda)²)) / (A² + C²).
    When g(0) > 0, g(1) = -lambda < 0 brackets exactly one root in (0, 1) (g has at most two), the one of
    the two candidates where |g| is smallest. g(0) <= 0 means lambda is out of reach (alpha = 0,
    independent frames); lambda = 0 gives alpha = 1 (identical frames; the root near 1 is not wanted).
    """
    shifted = a_sum - noise_lambda
    spread = (a_sum * a_sum + c_best * c_best - shifted * shifted).clamp(min=0).sqrt() * c_best.abs()
    norm = a_sum * a_sum + c_best * c_best
    candidates = torch.stack([(a_sum * shifted + spread) / norm, (a_sum * shifted - spread) / norm])
    candidates = candidates.nan_to_num(nan=0.0).clamp(0, 1)  # NaN (inf/inf when exp(p) overflows): 0, as fmax
    residual = ((1 - candidates) * a_sum - (1 - candidates * candidates).sqrt() * c_best - noise_lambda).abs()
    s = candidates.gather(0, residual.argmin(dim=0, keepdim=True))[0]
    s = torch.where(a_sum - c_best - noise_lambda > 0, s, torch.zeros_like(s))
    if noise_lambda == 0:
        s = torch.ones_like(s)
    return s * s


def _random_stage(distance: torch.Tensor) -> torch.Tensor:
    """Per row, the first candidate with the smallest distance; a NaN distance never wins (as ``<`` in the
    pseudocode), and a row with no finite distance picks candidate 0."""
    return torch.nan_to_num(distance, nan=torch.inf).argmin(dim=1)


def search_from_sums(a_sum, c_sum, noise_lambda: float, search: str, line_steps: int):
    """Both stages of the per-frame search from the sums alone: returns (index [B], alpha [B], kl [B]).

    Random stage: the candidate r with the smallest |A - C_r - lambda| (first one on ties, i.e. a
    later candidate replaces only when strictly better). Line stage: ``search`` = "paper" or "exact".
    Runs in float64 on [B] tensors, on their device, with no host synchronisation.
    """
    a_sum = a_sum.double()
    c_sum = c_sum.double()
    index = _random_stage((a_sum[:, None] - c_sum - noise_lambda).abs())
    c_best = c_sum.gather(1, index[:, None])[:, 0]
    if search == "paper":
        alpha = paper_line_stage(lambda a: (kl_of_composition(a_sum, c_best, a.sqrt()) - noise_lambda).abs(),
                                 (a_sum - c_best - noise_lambda).abs(), line_steps)
    else:
        alpha = _exact_alpha(a_sum, c_best, noise_lambda)
    return index, alpha, kl_of_composition(a_sum, c_best, alpha.sqrt())


def search_frame(prev: torch.Tensor, candidates: torch.Tensor, noise_lambda: float, search: str, line_steps: int):
    """Both search stages for one frame from candidates [R, B, D]: (index [B], alpha [B], achieved KL [B])."""
    return search_from_sums(*kl_sums(prev, candidates), noise_lambda, search, line_steps)


def search_frame_literal(prev, candidates, noise_lambda: float, search: str, line_steps: int):
    """The two-stage search as the paper writes it: full-tensor KL for each candidate and each step.

    float64 statistics, per-candidate loop, per-step composition of the whole frame ("paper": the float32
    trial trajectory of :func:`paper_line_stage`). Returns
    (index [B], alpha [B], frame [B, D] float64, achieved kl [B]). The oracle for ``search_from_sums``.
    """
    p = prev.double()
    noise = candidates.double()
    batch = torch.arange(p.shape[0], device=p.device)
    best_dist = torch.full((p.shape[0],), float("inf"), dtype=torch.float64, device=p.device)
    index = torch.zeros(p.shape[0], dtype=torch.long, device=p.device)
    for r in range(noise.shape[0]):
        dist = (kl_statistic(noise[r], p) - noise_lambda).abs()
        better = dist < best_dist
        best_dist = torch.where(better, dist, best_dist)
        index = torch.where(better, torch.full_like(index, r), index)
    chosen = noise[index, batch]

    def frame(alpha):
        return alpha.sqrt()[:, None] * p + (1 - alpha).clamp(min=0).sqrt()[:, None] * chosen

    def dist_at(alpha):
        return (kl_statistic(frame(alpha), p) - noise_lambda).abs()

    if search == "paper":
        best_alpha = paper_line_stage(dist_at, best_dist, line_steps)
    else:
        low, high = torch.zeros_like(best_dist), torch.ones_like(best_dist)
        for _ in range(EXACT_ITERATIONS):
            mid = 0.5 * (low + high)
            above = kl_statistic(frame(mid * mid), p) - noise_lambda > 0
            low, high = torch.where(above, mid, low), torch.where(above, high, mid)
        s = 0.5 * (low + high)
        s = torch.where(kl_statistic(chosen, p) - noise_lambda > 0, s, torch.zeros_like(s))
        best_alpha = torch.ones_like(s) if noise_lambda == 0 else s * s
    out = frame(best_alpha)
    return index, best_alpha, out, kl_statistic(out, p)


def dependency_noise_literal(first, candidates_per_frame, noise_lambda, search="exact", line_steps=15):
    """The whole frame chain, literally: first [B, D], candidates_per_frame a list of F-1 [R, B, D].

    Returns (noise [B, F, D] float64, alpha [B, F-1], kl [B, F-1], index [B, F-1]).
    """
    frames = [first.double()]
    alphas, kls, indices = [], [], []
    for candidates in candidates_per_frame:
        index, alpha, frame, kl = search_frame_literal(frames[-1], candidates, noise_lambda, search, line_steps)
        frames.append(frame)
        alphas.append(alpha)
        kls.append(kl)
        indices.append(index)
    stack = lambda xs, ref: torch.stack(xs, dim=1) if xs else ref.new_zeros(first.shape[0], 0)  # noqa: E731
    zeros = first.new_zeros(first.shape[0], 0, dtype=torch.float64)
    return (torch.stack(frames, dim=1), stack(alphas, zeros), stack(kls, zeros),
            stack(indices, zeros.long()))
