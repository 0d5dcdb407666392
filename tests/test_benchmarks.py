"""Smoke tests of the benchmark scripts: they run on CPU (under TRITON_INTERPRET=1, inherited from conftest)
and write valid JSON records with every required field, plus the markdown summary. No timing assertions."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
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


def run_script(script, *args):
    """Run a benchmark script the way a user does; the package comes from this checkout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
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
])
def test_benchmarks_refuse_bad_arguments_before_work(script, args, flag, monkeypatch, capsys):
    """Every number is checked when parsed (a NaN guidance once crashed only at the JSON save, after measuring)."""
    module = load_benchmark(script, monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--device", "cpu", *args])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err
