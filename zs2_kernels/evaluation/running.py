"""Running the ablation study's units: this rank's unfinished batches sampled on one CPU thread (so a unit's result
does not depend on which process or which run computed it), scored, and each written atomically (features .npz
first, then the .json that marks it done): a rerun skips finished units, and after any interruption a rerun ends
with the same tables. Under ``torchrun`` batches are sharded across ranks (the output folder must be shared).
"""

from __future__ import annotations

import contextlib
import json
import time
import zipfile

import numpy as np
import torch

from .._atomic import atomic_write
from .._checks import dtype_from_name
from ..video_io import to_uint8
from . import conditional
from . import metrics as zm
from .planning import GRID_SIDE, LENGTH_GRID_SIDE, StudyPlan, Unit, unit_seed
from .report import write_json


@contextlib.contextmanager
def one_thread():
    """Run on one intra-op thread. A float32 convolution on the CPU splits its sums by thread count, so a video
    sampled on two threads differs in the last bits from the same video on one, enough to move a uint8 pixel
    and a printed digit of the table; the study's numbers must not depend on how its work was split."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class UnitRunner:
    """Samples and scores a plan's units on this rank."""

    def __init__(self, plan: StudyPlan):
        self.plan = plan

    def run(self, progress: bool = True) -> None:
        """Sample, score and write this rank's unfinished units (call inside :func:`one_thread`)."""
        from tqdm.auto import tqdm

        from ..loading import load_pipeline

        plan = self.plan
        (plan.out / "units").mkdir(parents=True, exist_ok=True)
        mine = [b for i, b in enumerate(plan.batches()) if i % plan.world == plan.rank]
        todo = [b for b in mine if not all(_finished(u) for u in b)]
        if not todo:
            return
        dtype = dtype_from_name(plan.settings.dtype) if plan.settings.dtype else None
        pipe = load_pipeline(plan.settings.model, device=plan.device, dtype=dtype)
        bar = tqdm(total=sum(len(b) for b in mine), initial=sum(len(b) for b in mine if b not in todo),
                   desc=f"ablation units (rank {plan.rank}/{plan.world})", disable=not progress or plan.rank != 0)
        for batch in todo:
            self._run_batch(pipe, batch)
            bar.update(len(batch))
        bar.close()

    def _run_batch(self, pipe, batch: list[Unit]) -> None:
        from ..sampling.sampler import sample_video

        config = batch[0].config
        if config.method == "text2video_zero":
            self._run_text2video_zero(pipe, batch)
            return
        plan, settings = self.plan, self.plan.settings
        inputs = [self._conditional_inputs(unit) for unit in batch]
        result = sample_video(pipe, [plan.sampler_prompt(config, u.prompt_index) for u in batch],
                              num_frames=plan.frames_of(config),
                              height=plan.height, width=plan.width, num_inference_steps=settings.steps,
                              guidance_scale=settings.guidance, noise_lambda=config.noise_lambda,
                              noise_anchor=config.noise_anchor,
                              momentum=config.momentum, search=config.search, frame_chunk=config.frame_chunk,
                              dependency_noise=config.dependency_noise, momentum_attention=config.momentum_attention,
                              generator=[torch.Generator().manual_seed(unit_seed(config, u.prompt_index, u.seed))
                                         for u in batch], output_type="np", progress=False,
                              **conditional.sampler_arguments(config.mode, inputs, config.strength))
        seconds = result.stats["timings"]["total"] / len(batch)
        for video, (unit, unit_inputs) in enumerate(zip(batch, inputs)):
            self._finish_unit(unit, result.frames[video], result.stats, video, seconds, unit_inputs)

    def _conditional_inputs(self, unit: Unit) -> dict | None:
        """The conditional study's inputs of a unit (from its prompt's digit and its seed), else None."""
        if unit.config.study != "conditional":
            return None
        from .digits import parse_digit_prompt

        digit = parse_digit_prompt(self.plan.prompts[unit.prompt_index])
        return conditional.unit_inputs(digit, unit.seed, self.plan.frames_of(unit.config))

    def _run_text2video_zero(self, pipe, batch: list[Unit]) -> None:
        """Text2Video-Zero units, one video per call (its pipeline makes one video; long ones by its chunk recipe),
        same prompts and seeds; its UNet processors are put back afterwards (its constructor installs cross-frame
        attention)."""
        from . import text2video_zero

        plan, config = self.plan, batch[0].config
        processors = dict(pipe.unet.attn_processors)
        try:
            t2vz = text2video_zero.text2video_zero_pipeline(pipe)
            stats = {"device": str(pipe._execution_device), "backend": "diffusers"}
            for unit in batch:
                started = time.perf_counter()
                frames = text2video_zero.sample(
                    t2vz, plan.prompts[unit.prompt_index], frames=plan.frames_of(config), height=plan.height,
                    width=plan.width, steps=plan.settings.steps, guidance=plan.settings.guidance,
                    seed=unit_seed(config, unit.prompt_index, unit.seed), chunk=config.frame_chunk)
                self._finish_unit(unit, frames, stats, 0, time.perf_counter() - started)
        finally:
            pipe.unet.set_attn_processor(processors)

    def _finish_unit(self, unit: Unit, frames, stats, video, seconds, inputs: dict | None = None) -> None:
        frames_u8 = zm.to_uint8_chw(frames)
        prompt = self.plan.prompts[unit.prompt_index]
        values, arrays, curves, extra = {}, {}, {}, {}
        travel = unit.config.travel is not None
        if travel:
            extra["travel_to"] = self.plan.travel_target(unit.prompt_index)
        if "clip" in self.plan.settings.metrics and travel:
            first = self.plan.scorer.frame_scores(frames_u8, prompt)
            second = self.plan.scorer.frame_scores(frames_u8, extra["travel_to"])
            values.update(zm.travel_metrics(first, second, switch_frame=frames_u8.shape[0] // 2))
            curves["travel_first_score"], curves["travel_second_score"] = first.tolist(), second.tolist()
        elif "clip" in self.plan.settings.metrics:
            values.update(self.plan.scorer.prompt_metrics(frames_u8, prompt))
        if "consistency" in self.plan.settings.metrics:
            embeddings = self.plan.scorer.embed(frames_u8)
            values.update(zm.consistency_metrics(embeddings))
            values.update(zm.motion_metrics(frames_u8, embeddings))
            curves["consistency_to_first"] = zm.consistency_to_first(embeddings).tolist()
            if travel:
                values["consistency_adjacent_min"] = zm.adjacent_consistency_min(embeddings)
        if inputs is not None:
            values.update(conditional.unit_metrics(unit.config.mode, frames_u8.float() / 255, inputs,
                                                   self.plan.scorer.embed))
        if "fid" in self.plan.settings.metrics:
            arrays["fid_features"] = self.plan.scorer.fid_features(frames_u8).numpy()
        noise = {}
        if unit.config.dependency_noise:
            for key in ("achieved_kl", "alpha", "correlation"):
                pairs = np.asarray(stats[key][video], dtype=np.float64)
                noise[key] = float(pairs.mean()) if pairs.size else None
        if unit.prompt_index == 0 and unit.seed == 0:
            side = LENGTH_GRID_SIDE if unit.config.study in ("length", "travel") else GRID_SIDE
            arrays["grid_frames"] = to_uint8(frames, max(1, side // max(frames.shape[1:3])))
        unit.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(unit.path.with_suffix(".npz"), lambda tmp: _save_npz(tmp, arrays))
        write_json(unit.path, {"key": unit.key, "config": self.plan.config_record(unit.config), "prompt": prompt,
                                "prompt_index": unit.prompt_index, "seed": unit.seed, "metrics": values,
                                "curves": curves, "noise": noise, "seconds": seconds, "device": stats["device"],
                                "backend": stats["backend"], **extra})

def _finished(unit: Unit) -> bool:
    """A unit whose files both read back (they are written atomically, so anything else was damaged from outside:
    the unit is computed again and its files replaced)."""
    try:
        record = json.loads(unit.path.read_text())
        with np.load(unit.path.with_suffix(".npz")) as arrays:
            for name in arrays.files:
                arrays[name]  # reads and checks every member
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return False
    return isinstance(record, dict) and isinstance(record.get("metrics"), dict)


def _save_npz(path, arrays) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def barrier(world: int) -> None:
    """Wait for every rank (the aggregation reads all ranks' units)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


