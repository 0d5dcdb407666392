"""The ablation study on a tiny pipeline: outputs, resume after kill -9, 2-process gloo run, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_pipelines import tiny_pipeline

from zs2_kernels.evaluation import cli as ablate_cli
from zs2_kernels.evaluation.ablation import IMAGE_PRIOR, MAX_PROMPTS, MAX_SEEDS, study_configs, unit_seed
from zs2_kernels.evaluation.metrics import FeatureFID, consistency_metrics, motion_metrics

ROOT = Path(__file__).resolve().parents[2]
# CI-sized runs have fewer frames than feature dimensions: the warning is tested in test_metrics.py.
pytestmark = pytest.mark.filterwarnings("ignore:FID with .* rank-deficient:RuntimeWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-ablate")
    tiny_pipeline("sd15").save_pretrained(folder, safe_serialization=True)
    return str(folder)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("a handwritten digit one\nthe number 7\n")
    return str(path)


def args(model_dir, prompts_file, out, *extra):
    return ["--study", "components", "--model", model_dir, "--prompts", prompts_file, "--seeds", "2", "--frames", "3",
            "--steps", "2", "--batch", "2", "--scorer", "digits", "--out", str(out), "--no-progress", *extra]


def script_command(model_dir, prompts_file, out):
    return [sys.executable, str(ROOT / "python" / "ablate.py"), *args(model_dir, prompts_file, out)]


@pytest.fixture(scope="module")
def uninterrupted(model_dir, prompts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate-full")
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, out)) == 0
    return out


def test_outputs(uninterrupted):
    names = {p.name for p in uninterrupted.iterdir()}
    assert {"results.json", "results.csv", "results.md", "components.png", "samples.gif", "units"} <= names
    results = json.loads((uninterrupted / "results.json").read_text())
    assert len(results["units"]) == 4 * 2 * 2
    assert results["scorer"].startswith("digit-classifier") and "git_revision" in results["environment"]
    summary = results["summary"]
    assert abs(summary["zs2"]["achieved_kl"]["mean"] - 0.01) < 1e-4
    assert "achieved_kl" not in summary["neither"] and summary["zs2"]["fid"]["n"] == 2 * 2 * 3
    # Both components on vs off: correlated noise makes consecutive frames more alike (pixels move less).
    assert summary["zs2"]["motion_pixel"]["mean"] < summary["neither"]["motion_pixel"]["mean"]
    table = (uninterrupted / "results.md").read_text()
    assert "## components" in table and "| zs2 |" in table and "±" in table
    rows = (uninterrupted / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 16 and rows[0].startswith("config,")


def test_rerun_skips_finished_units(model_dir, prompts_file, uninterrupted):
    before = {p: p.stat().st_mtime_ns for p in (uninterrupted / "units").rglob("*.json")}
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, uninterrupted)) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (uninterrupted / "units").rglob("*.json")}


def test_resume_after_kill_gives_the_same_table(model_dir, prompts_file, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen(script_command(model_dir, prompts_file, out), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("units/*/*.json"))) < 4 and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = list(out.glob("units/*/*.json"))
    assert 0 < len(done) < 16, "the kill must land mid-run for this test to mean anything"
    for path in done:  # nothing partial under a final name
        json.loads(path.read_text())
        np.load(path.with_suffix(".npz"))
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, out)) == 0
    assert (out / "results.md").read_text() == (uninterrupted / "results.md").read_text()


def test_two_processes_give_the_same_table(model_dir, prompts_file, uninterrupted, tmp_path):
    out = tmp_path / "ranks"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(29500 + os.getpid() % 1000), str(ROOT / "python" / "ablate.py"),
               *args(model_dir, prompts_file, out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "results.md").read_text() == (uninterrupted / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["world_size"] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--metrics", "clip,speed"], "--metrics"),
        (["--seeds", "0"], "--seeds"),
        (["--seeds", "20001"], "--seeds must be between 1 and 20000"),
        (["--reference-images", "/nonexistent"], "--reference-images"),
        (["--scorer", "clip"], "--clip-model"),
        (["--scorer", "clip", "--clip-model", "/nonexistent/clip"], "--clip-model"),
    ],
)
def test_bad_input(model_dir, prompts_file, tmp_path, capsys, extra, message):
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, tmp_path / "o", *extra)) == 2
    assert message in capsys.readouterr().err


def test_bad_prompt_files(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert ablate_cli.ablate_main(args(model_dir, str(empty), tmp_path / "o")) == 2
    assert "no prompts" in capsys.readouterr().err
    not_digits = tmp_path / "cats.txt"
    not_digits.write_text("a cat\n")
    assert ablate_cli.ablate_main(args(model_dir, str(not_digits), tmp_path / "o")) == 2
    assert "naming one digit" in capsys.readouterr().err


def test_unwritable_out(model_dir, prompts_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, blocker / "out")) == 2
    assert "--out" in capsys.readouterr().err


def test_study_definitions():
    everything = study_configs("all")
    lam = [c for c in everything if c.study == "lambda"]
    assert sorted({(c.noise_lambda, c.search) for c in lam}) == sorted(
        (x, m) for x in (0.001, 0.01, 0.1, 1.0) for m in ("paper", "exact"))
    assert [c.momentum for c in everything if c.study == "momentum"] == [0.0, 0.5, 0.9, 0.98, 1.0]
    assert len({c.name for c in everything}) == len(everything) and IMAGE_PRIOR not in everything


def test_unit_seeds_pair_configurations_and_keep_the_reference_apart():
    import torch

    zs2, neither = study_configs("components")[0], study_configs("components")[-1]
    corners = [(p, s) for p in (0, 1, MAX_PROMPTS - 1) for s in (0, 1, MAX_SEEDS - 1)]
    studied = {unit_seed(zs2, p, s) for p, s in corners}
    assert studied == {unit_seed(neither, p, s) for p, s in corners} and len(studied) == len(corners)
    reference = {unit_seed(IMAGE_PRIOR, p, s) for p, s in corners}
    # torch's CPU generator keeps the low 32 bits of a seed: all must be distinct there, and below 2**32.
    assert max(studied | reference) < 2**32 and len(studied | reference) == 2 * len(corners)

    def draw(seed):
        return torch.randn(4, generator=torch.Generator().manual_seed(seed))

    assert not torch.equal(draw(unit_seed(IMAGE_PRIOR, 0, 0)), draw(unit_seed(neither, 0, 0)))


def test_metric_helpers_on_known_inputs():
    import torch

    still = torch.full((4, 3, 8, 8), 100, dtype=torch.uint8)
    embeddings = torch.ones(4, 5)
    assert consistency_metrics(embeddings) == pytest.approx({"consistency_adjacent": 100.0, "consistency_all": 100.0})
    flipped = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert consistency_metrics(flipped) == pytest.approx({"consistency_adjacent": 0.0, "consistency_all": 100 / 3})
    assert motion_metrics(still, embeddings) == {"motion_pixel": 0.0, "motion_embedding": 0.0}
    moving = still.clone()
    moving[1::2] = 110
    assert motion_metrics(moving, embeddings)["motion_pixel"] == 10.0
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 4, generator=gen, dtype=torch.float64)
    fid = FeatureFID(real)
    assert fid.distance(torch.randn(2000, 4, generator=gen, dtype=torch.float64)) < 0.05
    assert abs(fid.distance(torch.randn(2000, 4, generator=gen, dtype=torch.float64) + 2.0) - 16.0) < 0.5


def test_torchrun_rank_makes_its_gpu_current(monkeypatch):
    from zs2_kernels.evaluation import ablation

    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ablation._rank_device("cuda", 1) == torch.device("cuda", 1)
    assert current == [torch.device("cuda", 1)]  # Triton launches on the current device
    current.clear()
    assert ablation._rank_device("cpu", 1) == torch.device("cpu") and not current
