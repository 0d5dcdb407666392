"""Aggregating the ablation study (rank 0): every unit read back, per-configuration means with 95 % intervals, FID
against the reference set, paired differences; results.json, .csv, .md, the plots and the GIF grids written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..environment import describe
from ..video_io import image_to_rgb8
from . import metrics as zm
from . import report
from .planning import IMAGE_PRIOR, StudyPlan, Unit, image_files, paired_comparisons
from .report import write_json


class Aggregation:
    """Reads a plan's finished units and writes the study's outputs."""

    def __init__(self, plan: StudyPlan):
        self.plan = plan

    def aggregate(self, wall_time: float) -> dict:
        """Read every unit, compute per-configuration means, 95% intervals and FID; write all outputs."""
        study = self.plan.units()
        units = [json.loads(unit.path.read_text()) | {"config_name": unit.config.name} for unit in study]
        summary = {config.name: report.summarise([u for u in units if u["config_name"] == config.name])
                   for config in self.plan.configs}
        if "fid" in self.plan.settings.metrics:
            fid = zm.FeatureFID(self._reference_features(study))
            for config in self.plan.configs:
                if config is IMAGE_PRIOR:
                    continue
                fake = np.concatenate([_fid_features(unit) for unit in study if unit.config == config])
                summary[config.name]["fid"] = {"mean": fid.distance(torch.from_numpy(fake)), "ci95": None,
                                               "n": int(fake.shape[0])}
        results = {
            "settings": dataclasses.asdict(self.plan.settings) | {"prompts": self.plan.prompts},
            "configs": [self.plan.config_record(c) for c in self.plan.configs],
            "scorer": self.plan.scorer.name,
            "fid_reference": self._fid_reference_name() if "fid" in self.plan.settings.metrics else None,
            "summary": summary,
            "paired": report.paired_differences(units, paired_comparisons(self.plan.configs)),
            "units": units,
            "environment": describe(self.plan.device),
            "world_size": self.plan.world,
            "wall_time_s": wall_time,
            "sampling_seconds": sum(unit["seconds"] for unit in units),
        }
        write_json(self.plan.out / "results.json", results)
        report.write_csv(self.plan.out / "results.csv", units)
        report.write_markdown(self.plan.out / "results.md", results, self.plan.configs)
        report.write_plots(self.plan.out, results, self.plan.configs)
        self._write_gif_grids(study)
        return results

    def _write_gif_grids(self, study: list[Unit]) -> None:
        """samples.gif: one row per configuration of the components, lambda and momentum studies (and the image
        prior); samples-length.gif: the length study's longest videos; samples-travel.gif and
        samples-conditional.gif: those studies' rows.
        Each row is the configuration's first prompt and seed."""
        longest = max((self.plan.frames_of(c) for c in self.plan.configs if c.study == "length"), default=None)
        grids = {}
        for unit in study:
            config = unit.config
            if unit.prompt_index or unit.seed or (config.study == "length" and self.plan.frames_of(config) != longest):
                continue
            name = {"length": "samples-length.gif", "travel": "samples-travel.gif",
                    "conditional": "samples-conditional.gif"}.get(config.study, "samples.gif")
            grids.setdefault(name, []).append((config.name, np.load(unit.path.with_suffix(".npz"))["grid_frames"]))
        for name, rows in grids.items():
            report.write_gif_grid(self.plan.out / name, rows)

    def _reference_features(self, study: list[Unit]) -> torch.Tensor:
        if self.plan.reference_folder is not None:
            return self.plan.scorer.fid_features(_load_images(self.plan.reference_folder))
        if self.plan.scorer.reference_name is not None:
            return self.plan.scorer.fid_features(self.plan.scorer.reference_images())
        return torch.from_numpy(np.concatenate([_fid_features(unit) for unit in study if unit.config == IMAGE_PRIOR]))

    def _fid_reference_name(self) -> str:
        if self.plan.reference_folder is not None:
            source = f"images in {self.plan.reference_folder}"
        elif self.plan.scorer.reference_name is not None:
            source = self.plan.scorer.reference_name
        else:
            source = "image prior: per-frame independent samples of the same model and prompts"
        return f"{self.plan.scorer.fid_name} vs {source}"


def _fid_features(unit: Unit) -> np.ndarray:
    return np.load(unit.path.with_suffix(".npz"))["fid_features"]


def _load_images(folder: Path) -> torch.Tensor:
    from PIL import Image

    images = [image_to_rgb8(Image.open(p)) for p in image_files(folder)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


