"""Scheduler choice: names build fresh schedulers from the pipeline's config; instances are copied, never used."""

import pytest
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

from zs2_kernels.schedulers import SCHEDULERS, make_scheduler

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
