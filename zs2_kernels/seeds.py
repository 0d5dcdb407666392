"""Seeds: the one rule behind every seeded draw of the library.

A seed is an int in [0, 2**63) (every stream takes 63 bits without wrapping). From a seed, numpy's
``SeedSequence`` derives independent 63-bit seeds by a spawn key: video v of a batch gets key (v,), so its noise
does not depend on what else shares the batch (a plain ``seed + v`` would make seed 0's second video seed 1's
first); draw k of a pipeline call (a stochastic scheduler's k-th step noise) gets key (1, k).

A list of seeds gives one per video: video v is then drawn as the only video of a run seeded ``seed[v]`` (key
(0,) of it), so ``seed=[s]`` equals ``seed=s`` and a job's noise is fixed by its own seed whatever batch, call or
process it runs in.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from numpy.random import SeedSequence

#: Seeds are 63-bit: every seeded stream (torch generators, Philox keys) takes them without wrapping.
SEED_LIMIT = 2**63


def check_seed(seed) -> int:
    """Return ``seed`` after checking it is an int in [0, 2**63) (larger ones would wrap onto smaller ones)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return int(seed)


def check_seeds(seed, videos: int | None = None) -> int | list[int]:
    """``seed`` checked: an int in [0, 2**63), or a list (or tuple) of them, one per video (``videos`` when known),
    returned as a list."""
    if not isinstance(seed, (list, tuple)):
        return check_seed(seed)
    seeds = []
    for index, value in enumerate(seed):
        try:
            seeds.append(check_seed(value))
        except (TypeError, ValueError) as error:
            raise type(error)(f"seed[{index}]: {error}") from None
    if not seeds or (videos is not None and len(seeds) != videos):
        raise ValueError(f"a seed list needs one seed per video ({videos if videos is not None else 'at least 1'}), "
                         f"got {len(seeds)}")
    return seeds


def _derived(seed: int, key: tuple) -> int:
    return int(SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0] >> 1)


def video_seeds(seed: int | list[int], videos: int) -> list[int]:
    """One seed per video of a batch sampled with ``seed``: video v's depends only on (``seed``, v), or with a list
    of seeds only on ``seed[v]`` (as video 0 of a run seeded ``seed[v]``)."""
    seed = check_seeds(seed, videos)
    if isinstance(seed, list):
        return [_derived(value, (0,)) for value in seed]
    return [_derived(seed, (video,)) for video in range(videos)]


def video_generators(seed: int | list[int] | None, videos: int) -> list[torch.Generator]:
    """CPU generators of :func:`video_seeds` (a fresh random seed when ``seed`` is None)."""
    return [torch.Generator().manual_seed(s) for s in video_seeds(random_seed() if seed is None else seed, videos)]


def stream_seed(seed: int | list[int], stream: int) -> int | list[int]:
    """The seed of draw ``stream`` of a seeded run (a stochastic scheduler's per-step noise; stream 0 also seeds
    Img2Img's VAE sample in ``video_mode``), independent of the other streams' and of the videos'; for a list of
    per-video seeds, each video's own."""
    if isinstance(seed, (list, tuple)):
        return [_derived(value, (1, stream)) for value in seed]
    return _derived(seed, (1, stream))


def random_seed() -> int:
    """A fresh seed from torch's global RNG, for a run given neither seed nor generator."""
    return int(torch.randint(0, 2**62, (1,)).item())


def step_seed(seed: int | list[int] | None, generator) -> int | list[int]:
    """The seed of a stochastic scheduler's per-step chains: ``seed``, else drawn from the (first) generator, else
    from torch's global RNG."""
    if seed is not None:
        return seed
    first = generator[0] if isinstance(generator, (list, tuple)) else generator
    return int(torch.randint(0, SEED_LIMIT - 1, (1,), generator=first, device=first.device if first else "cpu"))
