"""The noise family's public function, :func:`dependency_noise`: the chain of initial noises whose adjacent frames
hit a KL target lambda.

    eps_0 ~ N(0, I),   eps_i = sqrt(a_i)·eps_{i-1} + sqrt(1 - a_i)·n_i     (zs2_kernels/DESIGN.md §1.1)

Per frame, a search picks n_i among R random candidates and a_i, using three means of the previous frame (the
batched KL check). The default ``exact`` search hits lambda exactly with fresh noise made orthogonal to exp(eps_{i-1})
(the one direction the statistic sees), so every frame stays standard normal; ``paper``, the published search,
lets its choices depend on the previous frame's values and its later frames drift from N(0, I) (variance 1.28 at
frame 16 of 4x8x8 latents: zs2_kernels/DESIGN.md §1.1).
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from ..._checks import check_device, check_dtype, check_float_tensor, check_int, check_number, check_search
from ...seeds import check_seeds, random_seed, video_generators, video_seeds
from ..backend import resolve_backend
from ..free_memory import check_free_memory
from .anchor import anchored_step
from .ops import compose_op, kl_sums_op, philox_normal_op, search_frame_op


def check_anchor(noise_anchor, search: str = "exact") -> float:
    """``noise_anchor`` as a float in [0, 1); only the exact search takes one."""
    noise_anchor = check_number("noise_anchor", noise_anchor, 0.0, 1.0)
    if noise_anchor == 1.0:
        raise ValueError("noise_anchor must be in [0, 1) (1 would make every frame frame 0), got 1.0")
    if noise_anchor and search != "exact":
        raise ValueError(f"noise_anchor needs search='exact' (the published search has no anchor), got {search!r}")
    return noise_anchor


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                                       for s in shape):
        raise TypeError(f"shape must be a tuple of ints (B, F, *rest), got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be (B, F, *rest) with every size >= 1, got {shape}")
    return shape


class _Streams:
    """Where the candidates come from: one generator for the whole batch, or one per video."""

    def __init__(self, generators, device):
        self.generators = generators
        self.device = device

    def draw(self, count: int, batch: int, dim: int) -> torch.Tensor:
        """[count, batch, dim] float32 standard normals on the output device."""
        def normal(generator, *size):
            return torch.randn(size, generator=generator, device=generator.device, dtype=torch.float32)

        if isinstance(self.generators, torch.Generator):
            return normal(self.generators, count, batch, dim).to(self.device)
        return torch.stack([normal(g, count, dim) for g in self.generators], dim=1).to(self.device)


def chain_correlations(noise: torch.Tensor) -> dict:
    """"correlation" of adjacent frames and "correlation_first" of each frame with frame 0 ([B, F-1] float64 each)
    of noise [B, F, ...] (what ``dependency_noise(return_stats=True)`` reports; also for noise given by a caller)."""
    flat = noise.flatten(2)
    return {"correlation": _correlation(flat[:, 1:], flat[:, :-1]),
            "correlation_first": _correlation(flat[:, 1:], flat[:, :1])}


def _correlation(frames: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Correlation of frames [B, F', D] with others (broadcast against them) per batch item and frame, float64.

    Uncentred (cosine) form: the noise is zero-mean by construction, and unlike Pearson's it is
    defined for one element per frame. Between adjacent frames its expectation is sqrt(alpha).
    """
    frames, others = frames.double(), others.double()
    norms = (frames.square().sum(-1) * others.square().sum(-1)).sqrt()
    return (frames * others).sum(-1) / norms.clamp(min=torch.finfo(torch.float64).tiny)


def _check_generators(generator, batch: int):
    """None, one torch.Generator (one stream for the batch), or a list of ``batch`` (one per video)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)) and all(isinstance(g, torch.Generator) for g in generator):
        if len(generator) != batch:
            raise ValueError(f"a generator list must have one generator per video ({batch}), got {len(generator)}")
        return list(generator)
    raise TypeError(f"generator must be a torch.Generator or a list of them, got {generator!r}")


def _check_first(first, shape, device) -> torch.Tensor:
    """A given first frame as float32 [B, D] on ``device``, after checking it is a finite [B, *rest] float tensor."""
    check_float_tensor("first", first)
    if first.is_meta:
        raise ValueError("first is on the meta device: it holds no data")
    if tuple(first.shape) != (shape[0], *shape[2:]):
        raise ValueError(f"first must be one frame per video, shape {(shape[0], *shape[2:])} for shape {shape}, "
                         f"got {tuple(first.shape)}")
    if not torch.isfinite(first).all():
        raise ValueError("first must be finite (no NaN/inf)")
    return first.detach().to(device, torch.float32).reshape(shape[0], -1)


def _chain(first, num_frames, streams, seeds, num_candidates, noise_lambda, search, line_steps, backend, anchor):
    """The frames [B, F, D] float32 after ``first``, and per frame pair (index, alpha, achieved KL): alpha is the
    square of the step's weight on the previous frame. ``anchor`` > 0: the anchored chain (:mod:`.anchor`), whose
    steps need the candidates materialised (Philox ones through ``philox_normal``)."""
    frames, picks = [first], []
    for frame in range(1, num_frames):
        if streams is not None:
            candidates = streams.draw(num_candidates, *first.shape)
        elif anchor:
            candidates = philox_normal_op(seeds=seeds, frame=frame, num_candidates=num_candidates, dim=first.shape[1])
        else:
            candidates = None
        common = dict(prev=frames[-1], candidates=candidates, num_candidates=num_candidates, seeds=seeds,
                      frame=frame, backend=backend)
        index, coefficients, kl = search_frame_op(**common, noise_lambda=noise_lambda, search=search,
                                                  line_steps=line_steps)
        composed = compose_op(**common, index=index, coefficients=coefficients)
        alpha = coefficients[:, 0].square()
        if anchor:
            a_sum, c_sum, e_sum = kl_sums_op(prev=frames[-1], candidates=candidates, backend=backend)
            rows = torch.arange(first.shape[0], device=first.device)
            composed, anchored_alpha, anchored_kl = anchored_step(
                frames[-1], first, candidates[index, rows].float(), (a_sum, c_sum[rows, index], e_sum), noise_lambda,
                anchor, composed)
            alpha = torch.where(anchored_alpha.isnan(), alpha, anchored_alpha)
            kl = torch.where(anchored_kl.isnan(), kl, anchored_kl)
        frames.append(composed)
        picks.append((index, alpha, kl))
    return torch.stack(frames, dim=1), picks


def _warn_if_out_of_reach(achieved_kl: torch.Tensor, noise_lambda: float, shape) -> None:
    """The exact search reaches lambda unless a frame's candidate cannot (tiny frames, a lambda near or above the
    ~1.65 of independent frames): say so rather than return a chain that silently misses the target."""
    missed = (achieved_kl - noise_lambda).abs() > 1e-6 * max(1.0, noise_lambda)
    count = int(missed.sum())
    if count:
        warnings.warn(f"noise_lambda={noise_lambda} was out of reach for {count} of {missed.numel()} frame pairs of "
                      f"shape {shape} (achieved KL {achieved_kl[missed].min().item():.3g} to "
                      f"{achieved_kl[missed].max().item():.3g}; those frames are independent draws): frames of few "
                      "elements or a lambda near 1.65 (independent frames) cannot be met", stacklevel=3)


def _check_fits(shape, dtype, num_candidates: int, backend: str, device: torch.device) -> None:
    """Refuse a chain that cannot fit before computing it: its float32 frames are held twice (the list of frames
    and their stack), plus the output in ``dtype`` and, off the Philox path, one frame's drawn candidates."""
    frame = math.prod(shape[2:]) * shape[0]
    candidates = 0 if backend == "triton" else num_candidates * frame * 4
    output = 0 if dtype == torch.float32 else math.prod(shape) * torch.finfo(dtype).bits // 8
    check_free_memory(2 * math.prod(shape) * 4 + output + candidates, device, f"dependency_noise of shape {shape}",
                      "lower the videos (B) or frames (F) per call")


def dependency_noise(shape, noise_lambda: float = 0.01, *, search: str = "exact", random_candidates: int = 10,
                     line_steps: int = 15, generator=None, seed: int | None = None,
                     device=None, dtype: torch.dtype = torch.float32, return_stats: bool = False,
                     backend: str | None = None, first: torch.Tensor | None = None, noise_anchor: float = 0.0):
    """Initial noise for B videos of F frames with correlated adjacent frames.

    Args:
        shape: (B, F, *rest), e.g. (B, F, 4, 64, 64) latents.
        noise_lambda: the KL target between adjacent frames, finite and >= 0. 0 gives identical
            frames; a lambda above what an independent candidate reaches gives independent frames.
        search: "exact" (random stage, then sqrt(alpha) = 1 - lambda/A with the candidate's component along
            exp(previous frame) replaced so the achieved KL equals lambda and every frame is N(0, I); see
            zs2_kernels/DESIGN.md §1.1) or "paper"
            (the published line stage on its float32 trajectory: from alpha = 0.1 in steps of 0.1, a
            trial above 1 rejected, the best evaluated alpha kept; at lambda <= 0.01, lambda = 0 included,
            it typically stops near alpha = 0.98 with the statistic near but not at lambda, since its
            steps cannot get closer; its choices depend on the previous frame, so later frames drift from
            N(0, I)).
        random_candidates: R >= 1 candidates of the random stage; line_steps: L >= 0 ("paper" only; each
            step is scalar work per video on the device, so cost grows linearly but stays small: the
            published value 15 is far below the cost of one candidate pass).
        generator: a torch.Generator, drawn from for the whole batch at once (diffusers' convention: a
            video's noise then depends on the batch), or a list of B generators, one per video.
            Candidates are drawn on the generators' device and moved to ``device``, so the same CPU
            generators give the same noise on any device.
        seed: video v's noise depends only on (seed, v) (see :mod:`zs2_kernels.seeds`), never on the batch:
            on the Triton backend through per-video Philox keys (candidates regenerated in-kernel, never
            stored), elsewhere through per-video CPU generators. Neither seed nor generator: a seed is
            drawn from torch's global RNG.
        device, dtype: of the output (the chain itself is computed in float32); dtype also by name ("fp16").
        return_stats: also return a dict with "alpha", "achieved_kl", "correlation" (adjacent frames),
            "correlation_first" (each frame with frame 0; each [B, F-1]),
            "candidate_index", and the "backend", "search" and "noise_lambda" used.
        backend: "triton", "cuda" or "torch" (default: see :mod:`zs2_kernels.ops.backend`).
        noise_anchor: a in [0, 1): every frame's noise keeps a correlation of at least a with frame 0's (in
            expectation: the fresh part adds ~1/sqrt(D) of noise), adjacent frames still on lambda, unit variance
            (zs2_kernels/DESIGN.md §1.1, "The anchored chain"); 0 (default) is the unanchored chain bit for bit.
            Long videos drift from frame 0 without it. "exact" search only. Where a floor near 1 and a large lambda
            cannot both hold the floor wins and the statistic misses lambda (a warning says so).
        first: a given first frame eps_0 per video, [B, *rest] (any float dtype, finite), instead of a draw:
            image-to-video starts the chain at the image's inverted noise so later frames inherit its
            structure. Frame 0's draw is still consumed, so frames 1.. use the candidates they use without it.
    """
    shape = _check_shape(shape)
    noise_lambda = check_search(noise_lambda, search)
    num_candidates = check_int("random_candidates", random_candidates, 1)
    noise_anchor = check_anchor(noise_anchor, search)
    line_steps = check_int("line_steps", line_steps, 0)
    dtype = check_dtype(dtype) or torch.float32
    batch, num_frames = shape[:2]
    generator = _check_generators(generator, batch)
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if seed is not None:
        seed = check_seeds(seed, batch)
    if device is None:
        device = generator.device if isinstance(generator, torch.Generator) else torch.device("cpu")
    device = check_device(device)
    backend = resolve_backend(device, backend)

    dim = math.prod(shape[2:])
    _check_fits(shape, dtype, num_candidates, backend, device)
    given = None if first is None else _check_first(first, shape, device)
    if backend == "triton" and generator is None:
        if seed is None:
            seed = random_seed()
        streams, seeds = None, torch.tensor(video_seeds(seed, batch), dtype=torch.int64, device=device)
        first = philox_normal_op(seeds=seeds, frame=0, num_candidates=1, dim=dim)[0] if given is None else given
    else:
        streams, seeds = _Streams(generator or video_generators(seed, batch), device), None
        drawn = streams.draw(1, batch, dim)[0]  # drawn either way: frames 1.. keep their candidates
        first = drawn if given is None else given
    noise, picks = _chain(first, num_frames, streams, seeds, num_candidates, noise_lambda, search, line_steps,
                          backend, noise_anchor)
    out = noise.to(dtype).view(shape)

    def per_pair(position, dtype):
        values = [pick[position] for pick in picks]
        return torch.stack(values, dim=1) if values else torch.zeros((batch, 0), dtype=dtype, device=device)

    achieved_kl = per_pair(2, torch.float64)
    if search == "exact" and picks:
        _warn_if_out_of_reach(achieved_kl, noise_lambda, shape)
    if not return_stats:
        return out
    stats = {"alpha": per_pair(1, torch.float64), "achieved_kl": achieved_kl, **chain_correlations(noise),
             "candidate_index": per_pair(0, torch.int64), "noise_anchor": noise_anchor,
             "backend": backend, "search": search, "noise_lambda": noise_lambda}
    return out, stats
