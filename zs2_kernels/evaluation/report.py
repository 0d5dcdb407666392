"""Tables, plots and the sample grid of the ablation study (results.csv, results.md, *.png, samples.gif)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from ..video_io import encode_gif

#: Columns of the markdown tables: (key in the summary, header).
COLUMNS = (
    ("achieved_kl", "achieved KL"),
    ("correlation", "noise corr."),
    ("clip_score", "CLIP score"),
    ("prompt_accuracy", "prompt acc. %"),
    ("prompt_probability", "prompt prob. %"),
    ("fid", "FID"),
    ("consistency_adjacent", "consist. adj."),
    ("consistency_all", "consist. all"),
    ("consistency_first", "consist. to frame 0"),
    ("consistency_last_first", "last vs frame 0"),
    ("consistency_adjacent_min", "min consist. adj."),
    ("travel_start", "first prompt, first 1/4"),
    ("travel_end", "second prompt, last 1/4"),
    ("travel_switch", "switch frame"),
    ("travel_lag", "switch lag (frames)"),
    ("motion_pixel", "motion px"),
    ("motion_embedding", "motion emb."),
    ("guide_fidelity", "guide fidelity"),
    ("image_distance", "image dist."),
    ("frame0_psnr", "frame-0 PSNR dB"),
    ("input_psnr", "input PSNR dB"),
    ("motion_correlation", "motion corr."),
)
#: The studies in the order of the tables; "reference" is the image prior (the FID reference of a run).
STUDY_ORDER = ("components", "lambda", "momentum", "length", "travel", "conditional", "reference")


def t_interval(values) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval (None for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, None
    from scipy.stats import t

    return mean, float(t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))


def summarise(units: list[dict]) -> dict:
    """Per metric: mean, 95% interval half-width and count over the units (prompts x seeds) of one config."""
    columns = {}
    for unit in units:
        for key, value in {**unit["metrics"], **unit["noise"]}.items():
            if value is not None:
                columns.setdefault(key, []).append(value)
    summary = {}
    for key, values in sorted(columns.items()):
        mean, ci = t_interval(values)
        summary[key] = {"mean": mean, "ci95": ci, "n": len(values)}
    summary["seconds_per_video"] = {"mean": float(np.mean([u["seconds"] for u in units])), "ci95": None,
                                    "n": len(units)}
    curves = {key for u in units for key in u.get("curves", {})}
    summary["curves"] = {key: _curve([u["curves"][key] for u in units]) for key in sorted(curves)}
    return summary


def _curve(rows: list[list[float]]) -> dict:
    """Per index over the units: mean and 95% interval half-width (the units of one configuration are alike)."""
    points = [t_interval(column) for column in zip(*rows)]
    return {"mean": [mean for mean, _ in points], "ci95": [ci for _, ci in points], "n": len(rows)}


#: Metrics of the paired-differences table (those both configurations of a pair have).
PAIRED_METRICS = ("clip_score", "prompt_probability", "consistency_adjacent", "consistency_first", "motion_pixel",
                  "consistency_adjacent_min", "travel_end", "travel_lag", "guide_fidelity", "image_distance",
                  "input_psnr", "motion_correlation")


def paired_differences(units: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """Per pair (A, B): for each metric both have, the mean and 95% interval of A - B over the units of one
    prompt and seed in both (the same noise), with their count."""
    by_config = {}
    for unit in units:
        by_config.setdefault(unit["config_name"], {})[(unit["prompt_index"], unit["seed"])] = unit["metrics"]
    rows = []
    for a, b in pairs:
        shared = sorted(set(by_config.get(a, {})) & set(by_config.get(b, {})))
        row = {"a": a, "b": b, "differences": {}}
        for key in PAIRED_METRICS:
            values = [by_config[a][x][key] - by_config[b][x][key] for x in shared
                      if key in by_config[a][x] and key in by_config[b][x]]
            if values:
                mean, ci = t_interval(values)
                row["differences"][key] = {"mean": mean, "ci95": ci, "n": len(values)}
        rows.append(row)
    return rows


def write_json(path: Path, payload) -> None:
    """``payload`` as indented JSON with sorted keys, written atomically (a unit's record, results.json)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1, sort_keys=True)))


def write_csv(path: Path, units: list[dict]) -> None:
    keys = sorted({k for u in units for k in {**u["metrics"], **u["noise"]}})
    config_keys = ("method", "dependency_noise", "momentum_attention", "noise_lambda", "search", "noise_anchor",
                   "momentum", "mode", "strength", "frames", "frame_chunk")

    def write(tmp):
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["config", *config_keys, "prompt", "seed", *keys, "seconds"])
            for u in units:
                values = {**u["metrics"], **u["noise"]}
                writer.writerow([u["config_name"], *(u["config"][k] for k in config_keys), u["prompt"], u["seed"],
                                 *(values.get(k) for k in keys), u["seconds"]])

    atomic_write(path, write)


def _cell(entry) -> str:
    if entry is None:
        return "–"
    mean, ci = entry["mean"], entry["ci95"]
    return f"{mean:.4g}" if ci is None else f"{mean:.4g} ± {ci:.2g}"


def write_markdown(path: Path, results: dict, configs) -> None:
    summary = results["summary"]
    studies = [s for s in STUDY_ORDER if any(c.study == s for c in configs)]
    settings = results["settings"]
    lines = [
        "# ZS² ablation results",
        "",
        f"Model: `{settings['model'] or 'embedded digits model'}`; {len(settings['prompts'])} prompts x "
        f"{settings['seeds']} seeds; {settings['frames']} frames (the length study: as named); {settings['steps']} "
        f"DDIM steps; guidance {settings['guidance']}.",
        f"Metric backend: {results['scorer']}. FID: {results['fid_reference'] or 'not computed'}.",
        "Cells: mean ± half-width of the 95% t-interval over prompts x seeds (FID: one value over all frames).",
        "Noise corr.: correlation of adjacent frames' initial noise; achieved KL: the paper's KL statistic between",
        "adjacent initial noises. Consist.: cosine similarity x100 of frame embeddings (adjacent frames, all pairs,",
        "each later frame to frame 0, the last to frame 0: drift). Motion: mean change between consecutive frames",
        "(pixels 0-255; embedding L2 x100): a still video has perfect consistency and zero motion.",
    ]
    if "travel" in studies:
        lines += ["Travel: each video's prompt travels from its prompt (frame 0) to the prompt half the list away",
                  "(last frame), or cuts to it at the midpoint; prompt scores per frame (digits: probability %; CLIP:",
                  "CLIP score); switch frame = first frame from which the second prompt leads on every later frame;",
                  "lag = switch frame - the midpoint frame (where the cut switches)."]
    if "conditional" in studies:
        lines += ["Conditional modes: guide fidelity = edge-map correlation with the guide; image dist. = feature",
                  "distance of frames 1.. to the image; PSNR of frame 0 to the image, and of the edit to its input;",
                  "motion corr. = correlation of the edit's frame-to-frame shifts with the input's (0: a still video)."]
    lines.append("")
    for study in studies:
        chosen = [c for c in configs if c.study == study]
        present = [(k, h) for k, h in COLUMNS if any(k in summary[c.name] for c in chosen)]
        lines += [f"## {study}", "", "| config | " + " | ".join(h for _, h in present) + " |",
                  "|---|" + "---|" * len(present)]
        for config in chosen:
            lines.append(f"| {config.name} | " + " | ".join(_cell(summary[config.name].get(k)) for k, _ in present)
                         + " |")
        lines.append("")
    lines += _paired_lines(results.get("paired", []))
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines), encoding="utf-8"))


def _paired_lines(paired: list[dict]) -> list[str]:
    """The paired-differences table: A - B per metric, mean ± 95% interval over shared prompts and seeds."""
    present = [(k, h) for k, h in COLUMNS if k in PAIRED_METRICS and any(k in p["differences"] for p in paired)]
    if not paired or not present:
        return []
    lines = ["## paired differences", "", "A - B over the units of one prompt and seed in both (the same noise), mean "
             "± half-width of the 95% t-interval: an interval that excludes 0 is a difference these runs show.", "",
             "| A - B | " + " | ".join(h for _, h in present) + " |", "|---|" + "---|" * len(present)]
    for pair in paired:
        cells = " | ".join(_cell(pair["differences"].get(k)) for k, _ in present)
        lines.append(f"| {pair['a']} - {pair['b']} | {cells} |")
    return lines + [""]


TITLES = dict(COLUMNS)
#: Metrics drawn in the plots (those a run has), and the conditional study's own.
PLOTTED = ("achieved_kl", "correlation", "clip_score", "prompt_probability", "fid", "consistency_adjacent",
           "motion_pixel")
CONDITIONAL_PLOTTED = ("guide_fidelity", "image_distance", "frame0_psnr", "input_psnr", "motion_correlation",
                       "motion_pixel", "prompt_probability", "clip_score")
LENGTH_PLOTTED = ("consistency_adjacent", "consistency_last_first", "motion_pixel", "prompt_probability",
                  "clip_score", "fid")


TRAVEL_PLOTTED = ("travel_lag", "consistency_adjacent_min", "consistency_adjacent", "motion_pixel", "travel_start",
                  "travel_end")


class _Plots:
    """The figures of one run: lambda.png (metrics vs lambda, one line per search mode), components.png and
    momentum.png (bars / lines), length.png (drift curve of the longest videos; metrics vs length, one line per
    method), travel.png (both prompts' scores against frame index; the travel metrics per configuration) and
    conditional.png (the conditional metrics per configuration)."""

    def __init__(self, out: Path, results: dict, configs):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.out, self.summary, self.configs = plt, out, results["summary"], configs

    def value(self, config, key) -> tuple[float, float]:
        entry = self.summary[config.name].get(key)
        return (np.nan, 0.0) if entry is None else (entry["mean"], entry["ci95"] or 0.0)

    def keys(self, chosen, candidates) -> list[str]:
        return [k for k in candidates if any(k in self.summary[c.name] for c in chosen)]

    def axes(self, count: int, width: float = 3.2):
        figure, axes = self.plt.subplots(1, count, figsize=(width * count, 3), squeeze=False)
        return figure, axes[0]

    def save(self, figure, name: str) -> None:
        atomic_write(self.out / name, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        self.plt.close(figure)

    def lines(self, axis, chosen, key, x, label=None) -> None:
        """One error-bar line of ``key`` over the configurations ``chosen``, at x = ``x(config)``."""
        points = sorted((x(c), *self.value(c, key)) for c in chosen)
        xs, mean, ci = zip(*points)
        axis.errorbar(xs, mean, yerr=ci, marker="o", capsize=3, label=label)

    def lambda_plot(self, chosen) -> None:
        keys = self.keys(chosen, PLOTTED)
        figure, axes = self.axes(len(keys))
        for axis, key in zip(axes, keys):
            for mode in sorted({c.search for c in chosen}, reverse=True):
                self.lines(axis, [c for c in chosen if c.search == mode], key, lambda c: c.noise_lambda, mode)
            axis.set_xscale("log")
            axis.set_xlabel("lambda")
            axis.set_title(TITLES.get(key, key))
        axes[0].legend(title="search")
        self.save(figure, "lambda.png")

    def bars(self, chosen, candidates, name: str, curves: tuple[str, ...] = ()) -> None:
        """One bar chart per metric (a bar per configuration that has it); first, for each of ``curves`` the
        configurations have, its mean curve against frame index (a band for the interval)."""
        keys = self.keys(chosen, candidates)
        curves = [k for k in curves if any(k in self.summary[c.name].get("curves", {}) for c in chosen)]
        figure, axes = self.axes(len(curves) + len(keys), width=max(3.2, 0.4 * len(chosen)))
        for axis, key in zip(axes, curves):
            for config in chosen:
                curve = self.summary[config.name].get("curves", {}).get(key)
                if curve:
                    mean, ci = np.asarray(curve["mean"]), np.asarray([c or 0.0 for c in curve["ci95"]])
                    axis.plot(mean, label=config.name)
                    axis.fill_between(range(len(mean)), mean - ci, mean + ci, alpha=0.2)
            axis.set_xlabel("frame index")
            axis.set_title(key.replace("_", " "))
        if curves:
            axes[0].legend(fontsize="small")
        for axis, key in zip(axes[len(curves):], keys):
            having = [c for c in chosen if key in self.summary[c.name]]  # a bar only where the metric applies
            mean, ci = zip(*(self.value(c, key) for c in having))
            axis.bar(range(len(having)), mean, yerr=ci, capsize=3)
            axis.set_xticks(range(len(having)), [c.name for c in having], rotation=35, ha="right")
            axis.set_title(TITLES.get(key, key))
        self.save(figure, name)

    def momentum_plot(self, chosen) -> None:
        keys = [k for k in self.keys(chosen, PLOTTED) if k not in ("achieved_kl", "correlation")]
        figure, axes = self.axes(len(keys))
        for axis, key in zip(axes, keys):
            self.lines(axis, chosen, key, lambda c: c.momentum)
            axis.set_xlabel("momentum")
            axis.set_title(TITLES.get(key, key))
        self.save(figure, "momentum.png")

    def length_plot(self, chosen) -> None:
        """Drift: consistency to frame 0 against frame index (the longest videos, a band for the interval), then
        each metric against video length, one line per method."""
        methods = {}
        for config in chosen:
            methods.setdefault(config.name.split("/")[0], []).append(config)
        keys = self.keys(chosen, LENGTH_PLOTTED)
        drift = any(self.summary[c.name].get("curves", {}).get("consistency_to_first") for c in chosen)
        figure, axes = self.axes(int(drift) + len(keys))
        metric_axes = axes[int(drift):]
        for method, group in methods.items():
            longest = max(group, key=lambda c: c.frames)
            curve = self.summary[longest.name].get("curves", {}).get("consistency_to_first")
            if curve:
                mean, ci = np.asarray(curve["mean"]), np.asarray([c or 0.0 for c in curve["ci95"]])
                axes[0].plot(mean, label=method)
                axes[0].fill_between(range(len(mean)), mean - ci, mean + ci, alpha=0.25)
            for axis, key in zip(metric_axes, keys):
                self.lines(axis, group, key, lambda c: c.frames, method)
        if drift:
            axes[0].set_xlabel("frame index")
            axes[0].set_title("consistency to frame 0 (longest)")
        for axis, key in zip(metric_axes, keys):
            axis.set_xscale("log", base=2)
            axis.set_xlabel("frames")
            axis.set_title(TITLES.get(key, key))
        axes[0].legend()
        self.save(figure, "length.png")


def write_plots(out: Path, results: dict, configs) -> None:
    """Every plot of the studies the run has (see _Plots)."""
    plots = _Plots(out, results, configs)
    by_study = {}
    for config in configs:
        by_study.setdefault(config.study, []).append(config)
    drawers = {"lambda": plots.lambda_plot, "momentum": plots.momentum_plot, "length": plots.length_plot,
               "components": lambda chosen: plots.bars(chosen, [k for k in PLOTTED if k not in ("achieved_kl",
                                                                                                "correlation")],
                                                       "components.png"),
               "travel": lambda chosen: plots.bars(chosen, TRAVEL_PLOTTED, "travel.png",
                                                   curves=("travel_first_score", "travel_second_score")),
               "conditional": lambda chosen: plots.bars(chosen, CONDITIONAL_PLOTTED, "conditional.png")}
    for study, chosen in by_study.items():
        if study in drawers:
            drawers[study](chosen)


def write_gif_grid(path: Path, rows: list[tuple[str, np.ndarray]], fps: int = 6) -> None:
    """One labelled row per configuration (its first prompt/seed video), animated over frames."""
    from PIL import Image, ImageDraw

    label_width = 190
    height = max(frames.shape[1] for _, frames in rows)
    width = max(frames.shape[2] for _, frames in rows)
    count = max(frames.shape[0] for _, frames in rows)
    canvas = np.full((count, height * len(rows), label_width + width, 3), 255, dtype=np.uint8)
    for index, (name, frames) in enumerate(rows):
        label = Image.new("RGB", (label_width, height), "white")
        ImageDraw.Draw(label).text((6, height // 2 - 6), name, fill="black")
        top = index * height
        canvas[:, top:top + height, :label_width] = np.asarray(label)
        for f in range(count):
            frame = frames[min(f, frames.shape[0] - 1)]
            canvas[f, top:top + frame.shape[0], label_width:label_width + frame.shape[1]] = frame
    data = encode_gif(canvas, fps)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
