"""The ablation study: component isolation (with Text2Video-Zero, the paper's baseline), the KL-threshold (lambda)
sweep in both search modes, a momentum sweep, video length (drift) and, on the embedded model, the conditional modes
(guided, image-to-video, video-to-video), with prompt fidelity, FID, consistency and motion metrics.

Work is split into units (configuration, prompt, seed); units of one configuration are sampled in fixed
batches with one generator per video, on one CPU thread, so a unit's result does not depend on which process
or which run computed it. A unit's file is named by a key over everything that determines it (the model's
content, sampler settings, prompt text, seed, configuration, batch size, metrics, library and study version,
op backend, dtype, device type): a rerun with other settings computes its units beside the old ones and
never reads those. Each finished unit is written atomically (features .npz first, then the .json that marks
it done), a rerun skips finished units, and after any interruption a rerun ends with the same tables. Under
``torchrun`` batches are sharded across ranks (the output folder must be shared); rank 0 writes the tables.
"""

from __future__ import annotations

import time

from .aggregation import Aggregation
from .planning import StudyPlan
from .running import UnitRunner, barrier, one_thread


class Ablation:
    """A study run: its plan (settings checked before any heavy work, units), this rank's units run, and on rank 0
    the aggregation into tables, plots and GIFs."""

    def __init__(self, settings):
        self.plan = StudyPlan(settings)

    @property
    def out(self):
        return self.plan.out

    def run(self, progress: bool = True) -> dict | None:
        """Run this rank's unfinished units, then (rank 0) aggregate; returns the results on rank 0."""
        started = time.perf_counter()
        with one_thread():  # the aggregation too: its float sums must not depend on the thread count either
            UnitRunner(self.plan).run(progress)
            barrier(self.plan.world)
            if self.plan.rank != 0:
                return None
            return Aggregation(self.plan).aggregate(time.perf_counter() - started)
