"""The dependency noise model's search in plain PyTorch: the ``torch`` backend and the oracle of the kernels.

Two layers (zs2_kernels/DESIGN.md §1.1):

* the *literal* forms (``kl_statistic``, ``search_frame_literal``, ``dependency_noise_literal``) compute
  what the paper's search computes, on full tensors, with per-candidate loops. They are slow on purpose:
  the oracle the fused kernels are tested against and the "paper reference" of the benchmarks.
* the *identity* forms (``kl_sums``, ``search_from_sums``, ``compose``) use Identity 1 (the statistic of
  any composition is affine in three means) and implement the ops on the ``torch`` backend. Kernels must
  match them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Bisection halvings of the literal exact search, in float64: the bracket on s = sqrt(alpha) ends below 1e-15.
EXACT_ITERATIONS = 60


def kl_statistic(noise: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """The paper's pointwise "KL": ``kl_div(input=noise, target=prev, log_target=True)`` averaged over the last dim."""
    return F.kl_div(noise, prev, reduction="none", log_target=True).mean(dim=-1)


def kl_sums(prev: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batched KL check's three means: A[b] = mean_d exp(p)·p, C[b, r] = mean_d exp(p)·n_r (so
    KL(n_r, p) = A - C_r) and E[b] = mean_d exp(2p) (the squared norm of exp(p) over D: the exact search
    removes each candidate's component along exp(p) with it).

    float32 (float64 for float64 inputs), like the kernels' accumulators.
    """
    compute = torch.promote_types(prev.dtype, torch.float32)
    p = prev.to(compute)
    weight = p.exp()
    a_sum = (weight * p).mean(dim=-1)
    c_sum = torch.einsum("bd,rbd->br", weight, candidates.to(compute)) / p.shape[-1]
    return a_sum, c_sum, (weight * weight).mean(dim=-1)


def kl_of_composition(a_sum: torch.Tensor, c_sum: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """KL(s·p + sqrt(1-s²)·n, p) = (1 - s)·A - sqrt(1 - s²)·C with s = sqrt(alpha) = ``keep``."""
    return (1 - keep) * a_sum - (1 - keep * keep).sqrt() * c_sum


def kl_of_coefficients(a_sum, c_best, e_sum, coefficients: torch.Tensor) -> torch.Tensor:
    """KL(keep·p + fresh·n - tilt·exp(p), p) = A - keep·A - fresh·C + tilt·E for coefficients [B, 3] =
    (keep, fresh, tilt): Identity 1 with the exact search's third term."""
    keep, fresh, tilt = coefficients.unbind(-1)
    return a_sum - keep * a_sum - fresh * c_best + tilt * e_sum


def compose(prev: torch.Tensor, candidates: torch.Tensor, index: torch.Tensor,
            coefficients: torch.Tensor) -> torch.Tensor:
    """eps[b] = keep·prev[b] + fresh·candidates[index[b], b] - tilt·exp(prev[b]) with (keep, fresh, tilt) =
    coefficients[b], in float32 (float64 for float64 inputs), returned in prev's dtype, contiguous.

    The index is clamped to [0, R) as the kernels do (checking it would synchronise); the coefficients are used
    as given (NaN gives a NaN frame). The exp term is computed only where tilt != 0, so a large prev with tilt
    0 (the paper search) stays finite.
    """
    index = index.clamp(0, candidates.shape[0] - 1)
    chosen = candidates[index, torch.arange(prev.shape[0], device=prev.device)]
    compute = torch.promote_types(prev.dtype, torch.float32)
    chosen = chosen.to(compute)
    keep, fresh, tilt = coefficients.to(compute).unbind(-1)
    p = prev.to(compute)
    tilted = torch.where(tilt[:, None] != 0, tilt[:, None] * p.exp(), torch.zeros_like(p))
    # Elementwise results take prev's strides; the op's output is contiguous on every backend.
    return (keep[:, None] * p + fresh[:, None] * chosen - tilted).to(prev.dtype).contiguous()


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


def alpha_coefficients(alpha: torch.Tensor) -> torch.Tensor:
    """(sqrt(alpha), sqrt(1 - alpha), 0) [B, 3]: the chain step of the paper, eps = sqrt(a)·p + sqrt(1 - a)·n."""
    return torch.stack([alpha.sqrt(), (1 - alpha).clamp(min=0).sqrt(), torch.zeros_like(alpha)], dim=-1)


def unbiased_coefficients(a_sum, c_best, e_sum, noise_lambda: float, dim: int) -> torch.Tensor:
    """The exact search's step (DESIGN.md §1.1): keep s = 1 - lambda/A and fresh noise orthogonal to exp(p).

    eps = s·p + sqrt(1 - s²)·g·(n - (C/E)·exp(p)), g = sqrt(D/(D - 1)): the candidate's component along exp(p)
    is removed (that is the only direction the statistic sees, so KL = (1 - s)·A = lambda exactly), and g gives
    back the expected variance the removed direction held. What is left of n is independent of p and of the
    random stage's choice, so no frame is biased by the search. lambda = 0: s = 1 (identical frames). Where the
    projected step cannot reach lambda (A <= lambda: its statistic is A at s = 0; or D = 1, which has no direction
    orthogonal to exp(p)), s is solved with the candidate as drawn (:func:`_exact_alpha`, the previous exact
    search: 0, independent frames, when even that candidate's statistic is at most lambda).
    Returns coefficients [B, 3] float64 = (keep, fresh, tilt) with tilt = fresh·C/E.
    """
    drawn = alpha_coefficients(_exact_alpha(a_sum, c_best, noise_lambda))
    if dim == 1:
        return drawn
    reach = a_sum > noise_lambda
    keep = (1 - noise_lambda / a_sum).nan_to_num(nan=1.0).clamp(0, 1)  # A = inf (exp(p) overflowed): identical
    fresh = (1 - keep * keep).sqrt() * math.sqrt(dim / (dim - 1))
    tilt = (fresh * c_best / e_sum).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    return torch.where(reach[:, None], torch.stack([keep, fresh, tilt], dim=-1), drawn)


def search_from_sums(a_sum, c_sum, e_sum, noise_lambda: float, search: str, line_steps: int, dim: int):
    """Both stages of the per-frame search from the sums alone: returns (index [B], coefficients [B, 3],
    achieved kl [B]), coefficients = (keep, fresh, tilt) of :func:`compose`.

    Random stage: the candidate r with the smallest |A - C_r - lambda| (first one on ties, i.e. a later
    candidate replaces only when strictly better). Then "paper": the published line stage on alpha;
    "exact": :func:`unbiased_coefficients`. Runs in float64 on [B] tensors, on their device, with no host
    synchronisation.
    """
    a_sum, c_sum, e_sum = a_sum.double(), c_sum.double(), e_sum.double()
    index = _random_stage((a_sum[:, None] - c_sum - noise_lambda).abs())
    c_best = c_sum.gather(1, index[:, None])[:, 0]
    if search == "paper":
        alpha = paper_line_stage(lambda a: (kl_of_composition(a_sum, c_best, a.sqrt()) - noise_lambda).abs(),
                                 (a_sum - c_best - noise_lambda).abs(), line_steps)
        coefficients = alpha_coefficients(alpha)
    else:
        coefficients = unbiased_coefficients(a_sum, c_best, e_sum, noise_lambda, dim)
    return index, coefficients, kl_of_coefficients(a_sum, c_best, e_sum, coefficients)


def search_frame(prev: torch.Tensor, candidates: torch.Tensor, noise_lambda: float, search: str, line_steps: int):
    """Both search stages for one frame from candidates [R, B, D]: (index [B], coefficients [B, 3], achieved KL
    [B])."""
    return search_from_sums(*kl_sums(prev, candidates), noise_lambda, search, line_steps, prev.shape[-1])


def search_frame_literal(prev, candidates, noise_lambda: float, search: str, line_steps: int):
    """The two-stage search as the paper writes it: full-tensor KL for each candidate and each step.

    float64 statistics, per-candidate loop, per-step composition of the whole frame ("paper": the float32
    trial trajectory of :func:`paper_line_stage`; "exact": the chosen candidate projected orthogonal to exp(p) on
    the full tensors, then a bisection on s with the full-tensor statistic). Returns
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
    dim = p.shape[-1]
    if search == "exact" and dim > 1 and noise_lambda > 0:
        # The unbiased step: the candidate's component along exp(p) removed by least squares, its variance given back.
        weight = p.exp()
        along = (weight * chosen).sum(-1, keepdim=True) / (weight * weight).sum(-1, keepdim=True)
        projected = (chosen - along * weight) * math.sqrt(dim / (dim - 1))
        chosen = torch.where((kl_statistic(projected, p) > noise_lambda)[:, None], projected, chosen)

    def frame(alpha):
        return alpha.sqrt()[:, None] * p + (1 - alpha).clamp(min=0).sqrt()[:, None] * chosen

    def dist_at(alpha):
        return (kl_statistic(frame(alpha), p) - noise_lambda).abs()

    if search == "paper":
        best_alpha = paper_line_stage(dist_at, best_dist, line_steps)
    else:  # bisection on s = sqrt(alpha) for KL(frame) = lambda
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
