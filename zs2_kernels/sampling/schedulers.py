"""The schedulers ``sample_video`` and ``zs2-sample`` offer by name, and how a given one is taken.

A scheduler is always a fresh instance made from a config (the pipeline's, or the given scheduler's): the
multistep solvers keep state across steps, and a user's instance must come out of a call unchanged.
"""

from __future__ import annotations

#: name -> (diffusers class name, config overrides). DDIM is the default; the multistep solvers give good
#: videos in ~20 steps; "euler-a" draws fresh noise every step (made a dependency chain, see noise_hooks).
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


def max_steps(scheduler_config) -> int:
    """The most inference steps a scheduler of this config runs through: its training timesteps less
    max(1, steps_offset). diffusers fails past it only when the loop reaches the last step (DDIM's "leading" spacing
    at 1000 of 1000 steps with offset 1 indexes timestep 1000; DPM++ and UniPC fail at 1000 even with offset 0):
    tests/test_schedulers.py runs every named scheduler, spacing and offset at this limit."""
    config = dict(scheduler_config)
    return config.get("num_train_timesteps", 1000) - max(1, config.get("steps_offset", 0))


def check_steps(steps: int, scheduler_config, name: str = "num_inference_steps") -> None:
    """Raise ValueError naming ``name`` when ``steps`` is past :func:`max_steps` of the scheduler's config."""
    limit = max_steps(scheduler_config)
    if steps > limit:
        raise ValueError(f"{name} must be at most {limit} (the scheduler's training timesteps less "
                         f"max(1, steps_offset)), got {steps}")
