"""The schedulers ``sample_video`` and ``zs2-sample`` offer by name, and how a given one is taken.

A scheduler is always a fresh instance made from a config (the pipeline's, or the given scheduler's): the
multistep solvers keep state across steps, and a user's instance must come out of a call unchanged.
"""

from __future__ import annotations

#: name -> (diffusers class name, config overrides). DDIM is the default; the multistep solvers give good
#: videos in ~20 steps; "euler-a" draws fresh noise every step (made a dependency chain, see any_pipeline).
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
}


def make_scheduler(scheduler, pipeline_config):
    """A fresh scheduler: ``scheduler`` a name of :data:`SCHEDULERS` (built from the pipeline's scheduler
    config, so the model's betas and prediction type carry over) or a diffusers scheduler instance (copied
    from its own config). diffusers is imported here, not with the module: the command line's --help
    reads :data:`SCHEDULERS` without it."""
    import diffusers

    if isinstance(scheduler, str):
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {list(SCHEDULERS)} or a diffusers scheduler instance, "
                             f"got {scheduler!r}")
        class_name, overrides = SCHEDULERS[scheduler]
        return getattr(diffusers, class_name).from_config(pipeline_config, **overrides)
    if not isinstance(scheduler, diffusers.SchedulerMixin):
        raise TypeError(f"scheduler must be one of {list(SCHEDULERS)} or a diffusers scheduler instance, "
                        f"got {type(scheduler).__name__}")
    return type(scheduler).from_config(scheduler.config)
