"""What both benchmark scripts share: the run environment, the results record, timing statistics, results files.

Every record is one flat JSON object: the run's environment (device, versions, git revision, timestamp,
``run_id``) plus the benchmark's own fields. Records are appended to one JSON list per results file, and a
markdown summary of the whole file is rewritten next to it (``.md``), one table per run and benchmark, so
``bench_ops.py``, ``bench_sampler.py`` and ``bench_scaling.py`` can share a file (``run_gpu.sh`` does).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import torch

from zs2_kernels._checks import check_device, check_number
from zs2_kernels.environment import describe, device_name

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Markdown columns per benchmark: (header, record field, format). Missing fields print as "".
TABLE_COLUMNS = {
    "ops": [
        ("op", "op", "{}"), ("shape", "shape_label", "{}"), ("dtype", "dtype", "{}"), ("impl", "impl", "{}"),
        ("backend", "backend", "{}"), ("median ms", "median_ms", "{:.4g}"), ("p20 ms", "p20_ms", "{:.4g}"),
        ("p80 ms", "p80_ms", "{:.4g}"), ("MB moved", "megabytes_moved", "{:.4g}"), ("GB/s", "gbps", "{:.4g}"),
        ("% copy BW", "pct_of_copy_bw", "{:.3g}"), ("speedup vs ref", "speedup_vs_reference", "{:.3g}x"),
        ("note / error", "error_or_note", "{}"),
    ],
    "sampler": [
        ("impl", "impl", "{}"), ("backend", "backend", "{}"), ("frames/s", "frames_per_s", "{:.4g}"),
        ("median s", "median_s", "{:.4g}"), ("p20 s", "p20_s", "{:.4g}"), ("p80 s", "p80_s", "{:.4g}"),
        ("time / plain DDIM", "time_ratio_plain_ddim", "{:.3g}"),
        ("per round / plain DDIM, median [95% CI]", "paired_ratio_plain_ddim_text", "{}"),
        ("time / Text2Video-Zero", "time_ratio_text2video_zero", "{:.3g}"),
        ("time / compiled baseline", "time_ratio_compiled_baseline", "{:.3g}"), ("compile s", "compile_s", "{:.3g}"),
        ("note / error", "error_or_note", "{}"),
    ],
    "scaling": [
        ("impl", "impl", "{}"), ("chunking", "chunking", "{}"), ("frames", "frames", "{}"), ("calls", "calls", "{}"),
        ("median s", "median_s", "{:.4g}"), ("s / frame", "seconds_per_frame", "{:.4g}"),
        ("peak MiB", "peak_mib", "{:.4g}"), ("baseline MiB", "baseline_mib", "{:.4g}"),
        ("note / error", "error_or_note", "{}"),
    ],
    "scaling_goals": [
        ("goal", "goal", "{}"), ("impl", "impl", "{}"), ("chunking", "chunking", "{}"),
        ("measured", "value_label", "{}"), ("target", "target", "{}"), ("verdict", "verdict", "{}"),
        ("detail", "detail", "{}"),
    ],
}


def slug(text: str) -> str:
    """``text`` as a file-name fragment: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def default_output(prefix: str, device: torch.device) -> Path:
    """``benchmarks/results/<prefix>-<device name>-<UTC date>.json``."""
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    return RESULTS_DIR / f"{prefix}-{slug(device_name(device))}-{date}.json"


def run_environment(benchmark: str, device: torch.device) -> dict:
    """The fields every record of one run carries: which benchmark and run, and ``environment.describe``."""
    environment = describe(device)
    stamp = dt.datetime.fromisoformat(environment["timestamp"]).strftime("%Y%m%dT%H%M%S")
    return {"benchmark": benchmark, "run_id": f"{benchmark}-{stamp}-{os.getpid()}", **environment}


def add_output_argument(parser, prefix: str) -> None:
    """``--out``: the JSON list both scripts append to (the .md summary is written next to it)."""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON list to append to (default benchmarks/results/{prefix}-<device>-<date>.json); "
                             "the .md summary is written next to it")


def checked_device(parser, name: str) -> torch.device:
    """The ``--device`` as a torch.device this machine can compute on; a parser error naming it otherwise."""
    try:
        return check_device(name)
    except ValueError as error:
        parser.error(f"--device: {error}")


def refuse_out_of_range(parser, args, ranges: dict) -> None:
    """A parser error naming the flag for every argument outside its [low, high] range, or not finite.

    ``ranges`` maps an argument's name (as in ``args``) to ``(low, high)``; None values (defaults still to be
    filled in) pass, and a list (``nargs``) has every element checked. Benchmarks must never measure, then fail
    on a NaN at the JSON save.
    """
    for name, (low, high) in ranges.items():
        values = getattr(args, name)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if value is None:
                continue
            try:
                check_number(name, value, low, high)
            except (TypeError, ValueError) as error:
                parser.error(f"--{name.replace('_', '-')}: {error}")
            if not math.isfinite(value):
                parser.error(f"--{name.replace('_', '-')} must be finite, got {value}")


def make_record(environment: dict, **fields) -> dict:
    """One results record: the run environment plus this measurement's fields (the only record constructor)."""
    return {**environment, **fields}


def summarize_seconds(samples: list[float]) -> dict:
    """Median, 20th and 80th percentile (linear interpolation) of wall-clock samples, in seconds."""
    p20, median, p80 = np.percentile(np.asarray(samples, dtype=np.float64), [20, 50, 80])
    return {"median_s": float(median), "p20_s": float(p20), "p80_s": float(p80)}


def _cell(record: dict, field: str, fmt: str) -> str:
    if field == "error_or_note":
        value = f"ERROR: {record['error']}" if record.get("error") else record.get("note")
    else:
        value = record.get(field)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return fmt.format(value).replace("|", "/").replace("\n", " ")


def render_markdown(records: list[dict]) -> str:
    """A summary of every record in a results file: one section per run and benchmark, one row per record.

    A run may write records of several benchmarks (``bench_scaling.py``: its points, then its goals), each
    rendered as its own table.
    """
    runs: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        runs.setdefault((record.get("run_id", "unknown"), record["benchmark"]), []).append(record)
    lines = ["# Benchmark results", "",
             "Generated from the JSON file of the same name (benchmarks/README.md explains every column).", ""]
    for (run_id, _), rows in runs.items():
        first = rows[0]
        columns = TABLE_COLUMNS[first["benchmark"]]
        lines += [f"## {first['benchmark']}: {first['device_name']} ({first['device']}), {first['timestamp']}", "",
                  f"torch {first['torch']}, triton {first['triton']}, diffusers {first['diffusers']}, "
                  f"git {first['git_revision']}, run `{run_id}`", ""]
        if first.get("settings_label"):
            lines += [first["settings_label"], ""]
        lines.append("| " + " | ".join(header for header, _, _ in columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines += ["| " + " | ".join(_cell(row, field, fmt) for _, field, fmt in columns) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def save_results(path: Path, records: list[dict]) -> tuple[Path, Path]:
    """Append ``records`` to the JSON list at ``path`` (created if missing) and rewrite its ``.md`` summary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.is_file() and path.stat().st_size else []
    if not isinstance(existing, list):
        raise ValueError(f"{path} does not hold a JSON list of records; pass another --out")
    existing.extend(records)
    path.write_text(json.dumps(existing, indent=1, allow_nan=False) + "\n")
    markdown = path.with_suffix(".md")
    markdown.write_text(render_markdown(existing))
    return path, markdown
