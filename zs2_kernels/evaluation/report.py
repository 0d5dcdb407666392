"""Tables, plots and the sample grid of the ablation study (results.csv, results.md, *.png, samples.gif)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .._atomic import atomic_write

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
    ("motion_pixel", "motion px"),
    ("motion_embedding", "motion emb."),
)


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
    return summary


def write_csv(path: Path, units: list[dict]) -> None:
    keys = sorted({k for u in units for k in {**u["metrics"], **u["noise"]}})
    config_keys = ("dependency_noise", "momentum_attention", "noise_lambda", "search", "momentum")

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
    studies = [s for s in ("components", "lambda", "momentum", "reference") if any(c.study == s for c in configs)]
    present = [(k, h) for k, h in COLUMNS if any(k in summary[c.name] for c in configs)]
    settings = results["settings"]
    lines = [
        "# ZS² ablation results",
        "",
        f"Model: `{settings['model'] or 'embedded digits model'}`; {len(settings['prompts'])} prompts x "
        f"{settings['seeds']} seeds; {settings['frames']} frames; {settings['steps']} DDIM steps; guidance "
        f"{settings['guidance']}.",
        f"Scorer: {results['scorer']}. FID: {results['fid_reference'] or 'not computed'}.",
        "Cells: mean ± half-width of the 95% t-interval over prompts x seeds (FID: one value over all frames).",
        "Noise corr.: correlation of adjacent frames' initial noise; achieved KL: the paper's KL statistic between",
        "adjacent initial noises. Motion: mean change between consecutive frames (pixels 0-255; embedding L2 x100):",
        "a still video has perfect consistency and zero motion.",
        "",
    ]
    for study in studies:
        lines += [f"## {study}", "", "| config | " + " | ".join(h for _, h in present) + " |",
                  "|---|" + "---|" * len(present)]
        for config in (c for c in configs if c.study == study):
            lines.append(f"| {config.name} | " + " | ".join(_cell(summary[config.name].get(k)) for k, _ in present)
                         + " |")
        lines.append("")
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines), encoding="utf-8"))


def _prompt_metric(summary) -> str | None:
    return next((k for k in ("clip_score", "prompt_probability") if k in summary), None)


def write_plots(out: Path, results: dict, configs) -> None:
    """lambda.png (metrics vs lambda, one line per search mode), components.png and momentum.png (bars/lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    metric_keys = [k for k in ("achieved_kl", "correlation", "clip_score", "prompt_probability", "fid",
                               "consistency_adjacent", "motion_pixel")
                   if any(k in summary[c.name] for c in configs)]

    def save(figure, name):
        atomic_write(out / name, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        plt.close(figure)

    def value(config, key):
        entry = summary[config.name].get(key)
        return (np.nan, 0.0) if entry is None else (entry["mean"], entry["ci95"] or 0.0)

    lam_configs = [c for c in configs if c.study == "lambda"]
    if lam_configs:
        figure, axes = plt.subplots(1, len(metric_keys), figsize=(3.2 * len(metric_keys), 3), squeeze=False)
        for axis, key in zip(axes[0], metric_keys):
            for mode in ("paper", "exact"):
                points = sorted((c.noise_lambda, *value(c, key)) for c in lam_configs if c.search == mode)
                lam, mean, ci = zip(*points)
                axis.errorbar(lam, mean, yerr=ci, marker="o", capsize=3, label=mode)
            axis.set_xscale("log")
            axis.set_xlabel("lambda")
            axis.set_title(key)
        axes[0][0].legend(title="search")
        save(figure, "lambda.png")
    for study, xlabel in (("components", None), ("momentum", "momentum")):
        chosen = [c for c in configs if c.study == study]
        if not chosen:
            continue
        keys = [k for k in metric_keys if k not in ("achieved_kl", "correlation")]
        figure, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
        for axis, key in zip(axes[0], keys):
            mean, ci = zip(*(value(c, key) for c in chosen))
            if xlabel:
                axis.errorbar([c.momentum for c in chosen], mean, yerr=ci, marker="o", capsize=3)
                axis.set_xlabel(xlabel)
            else:
                axis.bar(range(len(chosen)), mean, yerr=ci, capsize=3)
                axis.set_xticks(range(len(chosen)), [c.name for c in chosen], rotation=35, ha="right")
            axis.set_title(key)
        save(figure, f"{study}.png")


def write_gif_grid(path: Path, rows: list[tuple[str, np.ndarray]], fps: int = 6) -> None:
    """One labelled row per configuration (its first prompt/seed video), animated over frames."""
    import imageio.v3 as iio
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
    atomic_write(path, lambda tmp: iio.imwrite(tmp, canvas, extension=".gif", duration=1000 / fps, loop=0))
