"""Scheduler choice: names build fresh schedulers from the pipeline's config; instances are copied, never used."""

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

from zs2_kernels.sampling.schedulers import SCHEDULERS, check_steps, make_scheduler, max_steps

CONFIG = DDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction", steps_offset=1).config


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_names_take_the_pipeline_config(name):
    scheduler = make_scheduler(name, CONFIG)
    assert type(scheduler).__name__ == SCHEDULERS[name][0]
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.beta_schedule == "scaled_linear"


def test_dpm_plus_plus_is_the_2m_solver():
    scheduler = make_scheduler("dpm++", CONFIG)
    assert isinstance(scheduler, DPMSolverMultistepScheduler)
    assert scheduler.config.algorithm_type == "dpmsolver++" and scheduler.config.solver_order == 2


def test_an_instance_is_copied_with_its_own_config():
    given = EulerAncestralDiscreteScheduler.from_config(CONFIG, timestep_spacing="trailing")
    scheduler = make_scheduler(given, CONFIG)
    assert scheduler is not given and isinstance(scheduler, EulerAncestralDiscreteScheduler)
    assert scheduler.config.timestep_spacing == "trailing"


@pytest.mark.parametrize("bad, error", [("dpm", ValueError), (3, TypeError), (DDIMScheduler, TypeError)])
def test_bad_schedulers_are_refused_naming_the_argument(bad, error):
    with pytest.raises(error, match="scheduler must be one of"):
        make_scheduler(bad, CONFIG)


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1, 2])
def test_every_scheduler_runs_its_step_limit(name, spacing, offset):
    """max_steps is safe for every named scheduler, spacing and steps_offset: all its steps run (one past it fails
    for some: DDIM leading with offset 1 indexes timestep 1000, DPM++ and UniPC leading fail at 1000 with offset 0)."""
    config = dict(CONFIG, prediction_type="epsilon", timestep_spacing=spacing, steps_offset=offset,
                  num_train_timesteps=1000)
    scheduler = make_scheduler(name, config)
    scheduler.set_timesteps(max_steps(config))
    sample = torch.zeros(1, 1, 2, 2)
    for t in scheduler.timesteps:
        scheduler.scale_model_input(sample, t)
        sample = scheduler.step(torch.zeros_like(sample), t, sample).prev_sample
    assert torch.isfinite(sample).all()


def test_steps_past_the_limit_are_refused_naming_the_argument():
    check_steps(999, CONFIG)
    with pytest.raises(ValueError, match=r"num_inference_steps must be at most 999 .* got 1000"):
        check_steps(1000, CONFIG)
    with pytest.raises(ValueError, match=r"--steps must be at most 297 .* got 298"):
        check_steps(298, dict(CONFIG, num_train_timesteps=300, steps_offset=3), "--steps")
