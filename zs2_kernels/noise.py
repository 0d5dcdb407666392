"""The dependency noise model: a chain of initial noises whose adjacent frames hit a KL target lambda.

    eps_0 ~ N(0, I),   eps_i = sqrt(a_i)·eps_{i-1} + sqrt(1 - a_i)·n_i     (DESIGN.md §1.1)

Per frame, a two-stage search picks n_i among R random candidates and a_i by a line stage, using
only two means of the previous frame (the batched KL check); every frame stays exactly N(0, I).
"""

from __future__ import annotations

import math

import torch

from . import ops
from ._checks import FLOAT_DTYPES, check_int, check_number
from .backend import resolve_backend
from .reference import SEARCH_MODES


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise TypeError(f"shape must be a tuple of ints (B, F, *rest), got {shape!r}")
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be (B, F, *rest) with every size >= 1, got {tuple(shape)}")
    return tuple(shape)


def check_noise_settings(noise_lambda, search: str) -> float:
    """Validate the KL target (finite, >= 0) and the search mode; returns lambda as a float."""
    noise_lambda = check_number("noise_lambda", noise_lambda, 0.0, math.inf)
    if math.isinf(noise_lambda):
        raise ValueError("noise_lambda must be finite (use a large value such as 10 for independent frames)")
    if search not in SEARCH_MODES:
        raise ValueError(f"search must be one of {SEARCH_MODES}, got {search!r}")
    return noise_lambda


def seeded_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or from OS entropy when it is None."""
    generator = torch.Generator(device="cpu")
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _adjacent_correlation(noise: torch.Tensor) -> torch.Tensor:
    """Correlation of frames f and f+1 per batch item, [B, F-1] float64.

    Uncentred (cosine) form: the noise is zero-mean by construction, and unlike Pearson's it is
    defined for one element per frame. Its expectation is sqrt(alpha).
    """
    prev, nxt = noise[:, :-1].double(), noise[:, 1:].double()
    dot = (prev * nxt).sum(-1)
    norms = (prev.square().sum(-1) * nxt.square().sum(-1)).sqrt()
    return dot / norms.clamp(min=torch.finfo(torch.float64).tiny)


def dependency_noise(shape, noise_lambda: float = 0.01, *, search: str = "exact", random_candidates: int = 10,
                     line_steps: int = 15, generator: torch.Generator | None = None, seed: int | None = None,
                     device=None, dtype: torch.dtype = torch.float32, return_stats: bool = False,
                     backend: str | None = None):
    """Initial noise for B videos of F frames with correlated adjacent frames.

    Args:
        shape: (B, F, *rest), e.g. (B, F, 4, 64, 64) latents.
        noise_lambda: the KL target between adjacent frames, finite and >= 0. 0 gives identical
            frames; a lambda above what an independent candidate reaches gives independent frames.
        search: "exact" (random stage, then alpha solved so the achieved KL equals lambda) or "paper"
            (the paper's line stage with alpha clamped to [0, 1]; at lambda <= 0.01 it ends at
            alpha = 1, a still video — see DESIGN.md §1.1).
        random_candidates: R >= 1 candidates of the random stage; line_steps: L >= 0 ("paper" only).
        generator: a torch.Generator; candidates are drawn from it on its device and moved to ``device``
            (diffusers-style: the same CPU generator gives the same noise on any device).
        seed: without a generator, on the Triton backend candidates are Philox normals regenerated
            in-kernel from (seed, frame) and never stored; on other backends ``seed`` seeds a generator.
            Neither given: a seed is drawn from torch's global RNG.
        device, dtype: of the output (the chain itself is computed in float32).
        return_stats: also return a dict with "alpha", "achieved_kl", "correlation" (each [B, F-1]),
            "candidate_index", and the "backend", "search" and "noise_lambda" used.
        backend: "triton", "cuda" or "torch" (default: see :mod:`zs2_kernels.backend`).
    """
    shape = _check_shape(shape)
    noise_lambda = check_noise_settings(noise_lambda, search)
    num_candidates = check_int("random_candidates", random_candidates, 1)
    line_steps = check_int("line_steps", line_steps, 0)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if seed is not None:
        seed = check_int("seed", seed, 0)
    device = torch.device(device) if device is not None else (generator.device if generator is not None
                                                              else torch.device("cpu"))
    backend = resolve_backend(device, backend)

    batch, num_frames = shape[:2]
    dim = math.prod(shape[2:])
    philox = backend == "triton" and generator is None
    if philox and seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if not philox and generator is None:
        generator = seeded_generator(seed)

    def draw(*size):
        return torch.randn(size, generator=generator, device=generator.device, dtype=torch.float32).to(device)

    if philox:
        from .kernels.noise_search import philox_normal

        frames = [philox_normal(seed, 0, 1, batch, dim, device=device)[0]]
    else:
        frames = [draw(batch, dim)]
    indices, alphas, kls = [], [], []
    for frame in range(1, num_frames):
        candidates = None if philox else draw(num_candidates, batch, dim)
        index, alpha, kl = ops.call("search_frame", frames[-1], candidates, num_candidates, seed or 0, frame,
                                    noise_lambda, search, line_steps, backend)
        frames.append(ops.call("compose", frames[-1], candidates, index, alpha, num_candidates, seed or 0, frame,
                               backend))
        indices.append(index)
        alphas.append(alpha)
        kls.append(kl)
    noise = torch.stack(frames, dim=1)
    out = noise.to(dtype).view(shape)
    if not return_stats:
        return out

    def per_pair(values, dtype):
        return torch.stack(values, dim=1) if values else torch.zeros((batch, 0), dtype=dtype, device=device)

    stats = {
        "alpha": per_pair(alphas, torch.float64),
        "achieved_kl": per_pair(kls, torch.float64),
        "correlation": _adjacent_correlation(noise),
        "candidate_index": per_pair(indices, torch.int64),
        "backend": backend,
        "search": search,
        "noise_lambda": noise_lambda,
    }
    return out, stats
