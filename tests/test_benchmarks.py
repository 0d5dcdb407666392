"""Smoke tests of the benchmark scripts: they run on CPU (under TRITON_INTERPRET=1, inherited from conftest)
and write valid JSON records with every required field, plus the markdown summary. No timing assertions."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from zs2_kernels.evaluation import text2video_zero

from tiny_pipelines import tiny_pipeline

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"

ENVIRONMENT_FIELDS = {"benchmark", "run_id", "device", "device_name", "torch", "triton", "git_revision", "timestamp"}
OPS_FIELDS = ENVIRONMENT_FIELDS | {"op", "impl", "backend", "shape", "dtype", "bytes_moved", "reference_impl"}
OPS_TIMING_FIELDS = {"median_ms", "p20_ms", "p80_ms", "gbps", "copy_gbps", "pct_of_copy_bw", "speedup_vs_reference"}
SAMPLER_FIELDS = ENVIRONMENT_FIELDS | {"impl", "backend", "model", "frames", "steps", "height", "width",
                                       "guidance_scale", "dtype", "repeats"}
SAMPLER_TIMING_FIELDS = {"frames_per_s", "median_s", "p20_s", "p80_s", "time_ratio_plain_ddim",
                         "time_ratio_text2video_zero"}


def run_script(script, *args, **environment):
    """Run a benchmark script the way a user does; the package comes from this checkout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           **environment}
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *map(str, args)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def load_records(path):
    records = json.loads(path.read_text())
    assert isinstance(records, list) and records
    assert path.with_suffix(".md").read_text().startswith("# Benchmark results")
    return records


def assert_fields(record, required, timing):
    missing = required - record.keys()
    assert not missing, f"{record.get('impl')}: missing {sorted(missing)}"
    if "error" in record:
        assert isinstance(record["error"], str) and record["error"]
        return
    missing = timing - record.keys()
    assert not missing, f"{record.get('impl')}: missing {sorted(missing)}"
    for name in timing:
        assert isinstance(record[name], float) and math.isfinite(record[name]) and record[name] > 0, (name, record)


def test_bench_ops_smoke(tmp_path):
    out = tmp_path / "ops.json"
    run_script("bench_ops.py", "--smoke", "--out", out)
    records = load_records(out)
    for record in records:
        assert_fields(record, OPS_FIELDS, OPS_TIMING_FIELDS)
        assert record["benchmark"] == "ops" and record["device"] == "cpu"
    measured = {(r["op"], r["impl"]) for r in records if "error" not in r}
    # Ours and the eager references always run; torch.compile may time out in smoke mode (an error record).
    for op, impls in {"momentum_update": ["zs2", "reference_loop", "reference_matrix"],
                      "dependency_noise_chain": ["zs2", "zs2_predrawn", "reference_literal"],
                      "kl_sums": ["zs2", "reference_literal"]}.items():
        for impl in impls:
            assert (op, impl) in measured
    assert {r["impl"] for r in records} >= {"compile_matrix", "compile_loop", "compile_literal"}
    assert all(r["backend"] == "torch" for r in records if r["impl"].startswith("zs2")), \
        "on CPU ours must be the torch path, never the Triton interpreter"


def test_bench_sampler_smoke(tmp_path):
    model = tmp_path / "tiny-sd15"
    tiny_pipeline("sd15").save_pretrained(model, safe_serialization=True)
    out = tmp_path / "sampler.json"
    run_script("bench_sampler.py", "--smoke", "--model", model, "--out", out)
    records = load_records(out)
    assert [r["impl"] for r in records] == ["plain_ddim", "zs2", "zs2_reference", "text2video_zero"]
    for record in records:
        assert_fields(record, SAMPLER_FIELDS, SAMPLER_TIMING_FIELDS)
        assert "error" not in record, record["error"]
        assert record["benchmark"] == "sampler" and record["device"] == "cpu" and record["model"] == str(model)
    assert records[0]["time_ratio_plain_ddim"] == pytest.approx(1.0)


def test_bench_sampler_compiled_rows(tmp_path, monkeypatch):
    """--compile adds the compiled impls, their compile time apart and ratios to their compiled baselines (traced
    with dynamo's eager backend here: inductor's compile would take minutes on CI's CPU)."""
    model = tmp_path / "tiny-sd15"
    tiny_pipeline("sd15").save_pretrained(model, safe_serialization=True)
    bench = load_benchmark("bench_sampler", monkeypatch)
    args = bench.parse_args(["--smoke", "--device", "cpu", "--model", str(model), "--compile", "--out",
                             str(tmp_path / "sampler.json")])
    assert args.compile == "default"
    args.compile = {"backend": "eager"}
    records = {r["impl"]: r for r in bench.run(args)}
    assert list(records) == ["plain_ddim", "zs2", "zs2_reference", "text2video_zero", "plain_compiled",
                             "zs2_compiled", "text2video_zero_compiled"]
    for name in bench.COMPILED_IMPLS:
        record = records[name]
        assert "error" not in record, record["error"]
        assert record["compile_s"] > 0 and record["time_ratio_compiled_baseline"] > 0
        assert record["time_ratio_compiled_baseline"] == pytest.approx(
            record["median_s"] / records[bench.COMPILED_BASELINES[name]]["median_s"])
        assert record["paired_ratio_plain_ddim"]["rounds"] == len(record["round_s"]) == 1


def test_median_interval_is_distribution_free(monkeypatch):
    bench = load_benchmark("bench_sampler", monkeypatch)
    assert bench.median_interval(list(range(1, 11))) == (5.5, 2, 9)  # n = 10: 2nd and 9th smallest (97.9 %)
    assert bench.median_interval([1.0, 2.0, 3.0]) == (2.0, None, None)  # 3 rounds cannot give 95 % (JSON: null)


def test_results_file_appends(tmp_path):
    spec = importlib.util.spec_from_file_location("zs2_benchmarks_common", BENCHMARKS / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)

    environment = common.run_environment("sampler", torch.device("cpu"))
    out = tmp_path / "results.json"
    for frames_per_s in (1.0, 2.0):
        common.save_results(out, [common.make_record(environment, impl="zs2", backend="torch",
                                                     frames_per_s=frames_per_s)])
    assert [r["frames_per_s"] for r in json.loads(out.read_text())] == [1.0, 2.0]
    assert out.with_suffix(".md").read_text().count("| zs2 | torch |") == 2


def test_random_sd15_has_stable_diffusion_15_sizes():
    # Built on the meta device (no memory, no time): the parameter counts of SD1.5's published checkpoint.
    spec = importlib.util.spec_from_file_location("zs2_benchmarks_random_models", BENCHMARKS / "random_models.py")
    random_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(random_models)

    pipe = random_models.random_pipeline("sd15", "meta", torch.float16)
    counts = {name: sum(p.numel() for p in getattr(pipe, name).parameters())
              for name in ("unet", "vae", "text_encoder")}
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    assert pipe.unet.dtype == torch.float16 and pipe.tokenizer.model_max_length == 77
    with pytest.raises(ValueError, match="sd15"):
        random_models.random_pipeline("sd14", "meta", torch.float16)


def test_bench_sampler_refuses_model_and_random_model_together():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "bench_sampler.py"), "--device", "cpu", "--model", "x",
                             "--random-model", "sd15"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_git_revision_can_be_given_for_a_shipped_tree(monkeypatch):
    from zs2_kernels.environment import git_revision

    monkeypatch.setenv("ZS2_GIT_REVISION", "0123abc (tree shipped to a GPU machine)")
    assert git_revision() == "0123abc (tree shipped to a GPU machine)"
    monkeypatch.delenv("ZS2_GIT_REVISION")
    assert git_revision() == "unknown" or git_revision()[:40].isalnum()


def load_benchmark(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"zs2_benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script, args, flag", [
    ("bench_sampler", ["--guidance-scale", "nan"], "--guidance-scale"),
    ("bench_sampler", ["--guidance-scale", "inf"], "--guidance-scale"),
    ("bench_sampler", ["--noise-lambda", "-1"], "--noise-lambda"),
    ("bench_sampler", ["--momentum", "1.5"], "--momentum"),
    ("bench_sampler", ["--seed", "-1"], "--seed"),
    ("bench_sampler", ["--height", "0"], "--height"),
    ("bench_sampler", ["--frames", "0"], "--frames"),
    ("bench_sampler", ["--device", "tpu"], "--device"),
    ("bench_sampler", ["--device", "meta"], "--device"),
    ("bench_ops", ["--repeats", "0"], "--repeats"),
    ("bench_ops", ["--reference-repeats", "-2"], "--reference-repeats"),
    ("bench_ops", ["--compile-timeout", "0"], "--compile-timeout"),
    ("bench_ops", ["--compile-timeout", "nan"], "--compile-timeout"),
    ("bench_ops", ["--device", "cuda:7"], "--device"),
    ("bench_scaling", ["--frames", "8", "0"], "--frames"),
    ("bench_scaling", ["--chunk", "1"], "--chunk"),
    ("bench_scaling", ["--steps", "1"], "--steps"),
    ("bench_scaling", ["--time-cap", "nan"], "--time-cap"),
    ("bench_scaling", ["--impls", "plain_ddim"], "--impls"),
])
def test_benchmarks_refuse_bad_arguments_before_work(script, args, flag, monkeypatch, capsys):
    """Every number is checked when parsed (a NaN guidance once crashed only at the JSON save, after measuring)."""
    module = load_benchmark(script, monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--device", "cpu", *args])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


SCALING_FIELDS = ENVIRONMENT_FIELDS | {"impl", "frames", "frame_chunk", "chunking", "model", "steps", "chunk",
                                       "memory_method", "settings_label"}
SCALING_TIMING_FIELDS = {"median_s", "seconds_per_frame"}


def test_bench_scaling_smoke(tmp_path):
    """Every (impl, frames, chunking) point measured in its own process; goals recorded; table and plot written."""
    out = tmp_path / "scaling.json"
    # One thread: on a shared machine two OpenMP threads stall whenever another job holds a core (minutes, not 30 s).
    run_script("bench_scaling.py", "--smoke", "--note", "smoke test", "--out", out, OMP_NUM_THREADS="1")
    records = load_records(out)
    points = [r for r in records if r["benchmark"] == "scaling"]
    assert [(r["impl"], r["frames"], r["frame_chunk"]) for r in points] == [
        (impl, frames, chunk) for frames in (2, 4) for impl in ("zs2", "text2video_zero") for chunk in (None, 2)]
    for record in points:
        assert_fields(record, SCALING_FIELDS, SCALING_TIMING_FIELDS)
        assert "error" not in record, record["error"]
        assert record["device"] == "cpu" and record["machine_note"] == "smoke test"
        assert isinstance(record["peak_bytes"], int) and record["peak_bytes"] >= 0 < record["baseline_bytes"]
    calls = {(r["impl"], r["frames"], r["frame_chunk"]): r["calls"] for r in points}
    assert calls[("zs2", 4, 2)] == 1 and calls[("text2video_zero", 4, None)] == 1
    assert calls[("text2video_zero", 4, 2)] == 4  # 1 new frame per call of 2 (frame 0 is re-included)
    goals = [r for r in records if r["benchmark"] == "scaling_goals"]
    assert {g["verdict"] for g in goals} <= {"met", "NOT met", "not evaluated"}
    assert {g["goal"].split(" ")[0] for g in goals} == {"time", "chunked", "sanity:", "ZS²"}
    markdown = out.with_suffix(".md").read_text()
    assert "## scaling:" in markdown and "## scaling_goals:" in markdown
    if importlib.util.find_spec("matplotlib"):
        assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_text2video_zero_chunk_recipe_makes_every_frame_once(monkeypatch):
    """diffusers' recipe: calls of at most `chunk` frames, each starting with frame 0, whose first output is dropped,
    every call seeded alike; a chunk as long as the video (or none) is one plain call."""
    scaling = load_benchmark("bench_scaling", monkeypatch)
    assert text2video_zero.chunk_frame_ids(8, 4) == [[0, 0, 1, 2], [0, 3, 4, 5], [0, 6, 7]]
    assert text2video_zero.chunk_frame_ids(5, None) == text2video_zero.chunk_frame_ids(5, 5) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="at least 2"):
        text2video_zero.chunk_frame_ids(8, 1)
    seen = []

    def fake_pipeline(prompt, video_length, frame_ids, generator, **settings):
        seen.append((frame_ids, generator.initial_seed()))
        ids = list(range(video_length)) if frame_ids is None else frame_ids
        return SimpleNamespace(images=torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1))

    args = SimpleNamespace(prompt="p", seed=5, height=32, width=32, vae_factor=4, guidance_scale=7.5)
    for frames, chunk in [(1, 3), (7, 3), (16, 8), (9, 2), (6, None)]:
        seen.clear()
        video, calls = scaling.text2video_zero_video(fake_pipeline, args, frames, chunk, steps=10)
        assert video.flatten().tolist() == list(range(frames)) and calls == len(seen)
        if chunk is not None and chunk < frames:
            assert all(len(ids) <= chunk and ids[0] == 0 and seed == 5 for ids, seed in seen)
        else:
            assert seen == [(None, 5)]


def scaling_point(impl, frames, chunk, seconds, peak_mib):
    return {"benchmark": "scaling", "impl": impl, "frames": frames, "frame_chunk": chunk,
            "chunking": "none" if chunk is None else f"chunk {chunk}", "median_s": seconds,
            "peak_bytes": int(peak_mib * 2**20), "peak_mib": peak_mib}


def test_scaling_goals_are_evaluated_from_the_points(monkeypatch):
    scaling = load_benchmark("bench_scaling", monkeypatch)
    frames = [8, 16, 32, 64, 128]
    records = [scaling_point("zs2", n, None, 0.1 + 0.01 * n, 1.0 * n) for n in frames]
    records += [scaling_point("zs2", n, 8, 0.1 + 0.011 * n, 8.5 if n > 8 else 8.0) for n in frames]
    records += [scaling_point("text2video_zero", n, None, 0.001 * n * n, 2.0 * n) for n in frames]
    records += [scaling_point("text2video_zero", n, 8, 0.2 + 0.02 * n, 8.0 + n / 8) for n in frames[:-1]]
    goals = scaling.evaluate_goals({}, {}, records, 8, scaling.IMPLS)
    verdicts = {(g["goal"].split(" ")[0], g["impl"], g["chunking"]): g["verdict"] for g in goals}
    assert verdicts == {
        ("time", "zs2", "none"): "met", ("time", "zs2", "chunk 8"): "met",
        ("time", "text2video_zero", "none"): "NOT met",  # quadratic
        ("time", "text2video_zero", "chunk 8"): "met",
        ("chunked", "zs2", "frame_chunk=8"): "met", ("sanity:", "zs2", "none vs frame_chunk=8"): "met",
        ("chunked", "text2video_zero", "recipe, 8/call"): "NOT met",  # 16 / 9 MiB at 64 frames
        ("sanity:", "text2video_zero", "none vs recipe, 8/call"): "met",
        ("ZS²", "zs2", "frame_chunk=8"): "met", ("ZS²", "zs2", "none"): "met"}
    fit = next(g for g in goals if g["impl"] == "zs2" and g["chunking"] == "none" and "r2" in g)
    assert fit["seconds_per_frame_fit"] == pytest.approx(0.01) and fit["r2"] == pytest.approx(1.0)
    flat = [scaling_point("zs2", n, c, 1.0, 5.0) for n in (8, 128) for c in (None, 8)]
    sanity = next(g for g in scaling.evaluate_goals({}, {}, flat, 8, ["zs2"]) if g["goal"].startswith("sanity"))
    assert sanity["verdict"] == "NOT met" and "do not trust" in sanity["detail"]


def test_scaling_run_saves_each_point_and_honours_the_time_cap(tmp_path, monkeypatch):
    """Points are written as measured; past --time-cap the rest are skipped; a failed series skips longer videos."""
    scaling = load_benchmark("bench_scaling", monkeypatch)
    args = scaling.parse_args(["--device", "cpu", "--frames", "2", "4", "8", "--chunk", "2", "--time-cap", "0.3",
                               "--out", str(tmp_path / "capped.json")])
    measured = []

    def measure(args, impl, frames, chunk, remaining):
        measured.append((impl, frames, chunk))
        assert remaining is not None and remaining > 0
        if impl == "text2video_zero" and chunk is None:
            return {"error": "CUDA out of memory"}
        time.sleep(0.05)
        return {"samples_s": [0.05], "calls": 1, "peak_bytes": 10, "baseline_bytes": 100}

    records = scaling.run_points(args, measure, scaling.run_environment("scaling", torch.device("cpu")), {})
    assert json.loads(args.out.read_text()) == records and len(records) == 12
    errors = {(r["impl"], r["frames"], r["frame_chunk"]): r.get("error", "") for r in records}
    assert errors[("text2video_zero", 4, None)].startswith("skipped: a shorter video")
    assert any(e.startswith("skipped: --time-cap") for e in errors.values())
    assert len(measured) < 11 and all(errors[point] in ("", "CUDA out of memory") for point in measured)


def test_run_gpu_imports_what_exists():
    """run_gpu.sh's inline Python names package modules: a rename must not break the GPU run (it once did)."""
    import re

    script = (BENCHMARKS / "run_gpu.sh").read_text()
    imports = re.findall(r"from (zs2_kernels[\w.]*) import (\w+)", script)
    assert imports
    for module, name in imports:
        exec(f"from {module} import {name}", {})  # a submodule or an attribute, as the script imports it
