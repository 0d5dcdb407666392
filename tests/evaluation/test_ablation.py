"""The ablation study on a tiny pipeline: outputs, resume after kill -9, 2-process gloo run, reruns with other
settings, independence of the thread count, bad input."""

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zs2_kernels.evaluation import cli as ablate_cli
from zs2_kernels.evaluation.metrics import FeatureFID, consistency_metrics, motion_metrics
from zs2_kernels.evaluation.planning import (
    IMAGE_PRIOR,
    MAX_PROMPTS,
    MAX_SEEDS,
    source_identity,
    study_configs,
    unit_seed,
)
from zs2_kernels.evaluation.running import UnitRunner

from tiny_pipelines import tiny_pipeline

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


# Runs zs2-ablate in a child that, once its UNITS-th unit is on disk, prints a marker and waits inside the unit
# loop: the test signals it at that point whatever the machine's load (a signal on a timer raced the run's end).
PAUSED_ABLATION = """
import sys, time
from zs2_kernels.evaluation import cli
from zs2_kernels.evaluation.running import UnitRunner

finish, written = UnitRunner._finish_unit, []

def finish_then_pause(self, *args, **kwargs):
    finish(self, *args, **kwargs)
    written.append(1)
    if len(written) == int(sys.argv[1]):
        print("PAUSED", flush=True)
        time.sleep(600)

UnitRunner._finish_unit = finish_then_pause
sys.exit(cli.ablate_main(sys.argv[2:]))
"""


@contextlib.contextmanager
def paused_run(model_dir, prompts_file, out, units):
    """A zs2-ablate child paused after its `units`-th finished unit (stderr in out's folder as stderr.txt)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "stderr.txt", "w") as stderr:
        process = subprocess.Popen([sys.executable, "-c", PAUSED_ABLATION, str(units),
                                    *args(model_dir, prompts_file, out)],
                                   stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        deadline, line = time.monotonic() + 300, None
        while line != "PAUSED\n" and line != "" and select.select([process.stdout], [], [],
                                                                     max(0, deadline - time.monotonic()))[0]:
            line = process.stdout.readline()
        assert line == "PAUSED\n", f"the child did not pause: {(out.parent / 'stderr.txt').read_text()[-2000:]}"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.fixture(scope="module")
def uninterrupted(model_dir, prompts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate-full")
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, out)) == 0
    return out


def test_outputs(uninterrupted):
    names = {p.name for p in uninterrupted.iterdir()}
    assert {"results.json", "results.csv", "results.md", "components.png", "samples.gif", "units"} <= names
    results = json.loads((uninterrupted / "results.json").read_text())
    assert len(results["units"]) == 5 * 2 * 2  # zs2, text2video_zero, the two single-component ones, neither
    assert results["scorer"].startswith("digit-classifier") and "git_revision" in results["environment"]
    summary = results["summary"]
    assert abs(summary["zs2"]["achieved_kl"]["mean"] - 0.01) < 1e-4
    assert "achieved_kl" not in summary["neither"] and summary["zs2"]["fid"]["n"] == 2 * 2 * 3
    # Text2Video-Zero as a configuration: same metrics, no noise statistics, diffusers' pipeline ran it.
    assert "achieved_kl" not in summary["text2video_zero"] and summary["text2video_zero"]["fid"]["n"] == 2 * 2 * 3
    assert {u["backend"] for u in results["units"] if u["config_name"] == "text2video_zero"} == {"diffusers"}
    # Both components on vs off: correlated noise makes consecutive frames more alike (pixels move less).
    assert summary["zs2"]["motion_pixel"]["mean"] < summary["neither"]["motion_pixel"]["mean"]
    table = (uninterrupted / "results.md").read_text()
    assert "## components" in table and "| zs2 |" in table and "±" in table
    assert "## paired differences" in table and "| zs2 - text2video_zero |" in table
    assert results["sampling_seconds"] == pytest.approx(sum(u["seconds"] for u in results["units"]))
    rows = (uninterrupted / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 20 and rows[0].startswith("config,")


def test_rerun_skips_finished_units(model_dir, prompts_file, uninterrupted):
    before = {p: p.stat().st_mtime_ns for p in (uninterrupted / "units").rglob("*.json")}
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, uninterrupted)) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (uninterrupted / "units").rglob("*.json")}


def test_resume_after_kill_gives_the_same_table(model_dir, prompts_file, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    with paused_run(model_dir, prompts_file, out, units=4) as process:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    done = list(out.glob("units/*/*.json"))
    assert len(done) == 4
    for path in done:  # nothing partial under a final name
        json.loads(path.read_text())
        np.load(path.with_suffix(".npz"))
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, out)) == 0
    assert (out / "results.md").read_text() == (uninterrupted / "results.md").read_text()


def unit_files(out) -> dict:
    return {p: p.stat().st_mtime_ns for p in Path(out).glob("units/*/*.json")}


def test_a_rerun_with_other_settings_computes_them_beside_the_old_units(model_dir, prompts_file, uninterrupted,
                                                                         tmp_path):
    """Units are keyed by what determines them: a rerun into a used folder never reports the old rows."""
    other_model = tmp_path / "other-model"
    tiny_pipeline("sd15", seed=1).save_pretrained(other_model, safe_serialization=True)
    used = tmp_path / "used"
    shutil.copytree(uninterrupted, used)
    first = unit_files(used)
    changes = {"frames": ["--frames", "2"], "steps": ["--steps", "3"], "guidance": ["--guidance", "2.5"],
               "height": ["--height", "8"], "model": ["--model", str(other_model)]}
    for count, (setting, extra) in enumerate(changes.items(), start=2):
        assert ablate_cli.ablate_main(args(model_dir, prompts_file, used, *extra)) == 0
        assert len(unit_files(used)) == 20 * count, setting
        units = json.loads((used / "results.json").read_text())["units"]
        before = json.loads((uninterrupted / "results.json").read_text())["units"][0]["key"][setting]
        assert len(units) == 20 and all(u["key"][setting] != before for u in units), setting
    # The first settings' units are still there, untouched: asking for them again computes nothing.
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, used)) == 0
    assert {p: t for p, t in unit_files(used).items() if p in first} == first
    assert (used / "results.md").read_text() == (uninterrupted / "results.md").read_text()


def test_the_summary_names_only_the_figures_this_run_wrote(model_dir, prompts_file, uninterrupted, tmp_path, capsys):
    """The attack found 'wrote ... components.png' printed for a figure an earlier run (another study) had left."""
    used = tmp_path / "used"
    shutil.copytree(uninterrupted, used)
    (used / "lambda.png").write_bytes(b"an earlier run's figure")
    capsys.readouterr()
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, used)) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    written = summary.split(" (")[0]
    assert "components.png" in written and "lambda.png" not in written, summary
    assert summary.endswith("lambda.png there are from an earlier run with other settings"), summary


def test_swapped_prompt_lines_give_each_prompt_its_own_rows(model_dir, uninterrupted, tmp_path):
    swapped = tmp_path / "swapped.txt"
    swapped.write_text("the number 7\na handwritten digit one\n")
    used, fresh = tmp_path / "used", tmp_path / "fresh"
    shutil.copytree(uninterrupted, used)
    for out in (used, fresh):
        assert ablate_cli.ablate_main(args(model_dir, str(swapped), out)) == 0

    def rows(out):
        return [(u["config_name"], u["prompt"], u["seed"], u["metrics"], u["noise"])
                for u in json.loads((out / "results.json").read_text())["units"]]

    assert rows(used) == rows(fresh)


def test_model_identity_follows_the_content(model_dir, tmp_path, monkeypatch):
    """A folder is known by its configuration and weights (a copy keeps it, an edit changes it); a hub id by the
    commit it resolves to."""
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert source_identity(str(copy)) == source_identity(model_dir)
    (copy / "notes.md").write_text("not loaded")
    assert source_identity(str(copy)) == source_identity(model_dir)
    config = copy / "unet" / "config.json"
    config.write_text(config.read_text().replace('"sample_size": 8', '"sample_size": 16'))
    assert source_identity(str(copy)) != source_identity(model_dir)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--name"
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("a" * 40) / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    assert source_identity("org/name") == "hub:org/name@" + "a" * 40


def test_a_units_video_does_not_depend_on_the_thread_count(model_dir, prompts_file, tmp_path, monkeypatch):
    """A float32 convolution on the CPU splits its sums by thread count; units are sampled on one thread."""
    videos = {}
    finish = UnitRunner._finish_unit

    def spy(self, unit, frames, *rest):
        videos.setdefault(unit.path.name, []).append(frames.copy())
        finish(self, unit, frames, *rest)

    monkeypatch.setattr(UnitRunner, "_finish_unit", spy)
    threads = torch.get_num_threads()
    try:
        for count in (2, 1):
            torch.set_num_threads(count)
            assert ablate_cli.ablate_main(args(model_dir, prompts_file, tmp_path / str(count), "--seeds", "1",
                                               "--metrics", "consistency")) == 0
            assert torch.get_num_threads() == count
    finally:
        torch.set_num_threads(threads)
    assert len(videos) == 10 and all(len(v) == 2 and np.array_equal(*v) for v in videos.values())


def test_two_processes_give_the_same_table(model_dir, prompts_file, uninterrupted, tmp_path):
    out = tmp_path / "ranks"
    # --standalone: a free port of its own (a fixed one clashed when two test runs shared the machine)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(ROOT / "python" / "ablate.py"), *args(model_dir, prompts_file, out)]
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
        (["--frames", "1"], "--frames must be >= 2, got 1"),
        (["--steps", "1001"], "--steps must be at most"),
        (["--clip-model", "some/clip"], "--clip-model applies to --scorer clip only"),
        (["--fid-feature", "64"], "--fid-feature applies to --scorer clip only"),
        (["--fid-feature", "2048"], "--fid-feature applies to --scorer clip only"),
        (["--seeds", "20001"], "--seeds must be between 1 and 20000"),
        (["--steps", "1"], "--steps must be >= 2 for the text2video_zero configurations"),
        (["--guidance", "-3"], "--guidance must be in [0.0, 1000.0], got -3"),
        # Text2Video-Zero raised a TypeError traceback after the first configuration's work
        (["--guidance", "1"], "--guidance must be > 1 for the text2video_zero configurations"),
        (["--guidance", "0.5", "--study", "length", "--lengths", "2"],
         "--guidance must be > 1 for the text2video_zero"),
        (["--width", "0"], "--width must be an int >= 2, got 0"),
        (["--reference-images", "/nonexistent"], "--reference-images"),
        (["--scorer", "clip"], "--clip-model"),
        (["--scorer", "clip", "--clip-model", "/nonexistent/clip"], "--clip-model"),
    ],
)
def test_bad_input(model_dir, prompts_file, tmp_path, capsys, extra, message):
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, tmp_path / "o", *extra)) == 2
    assert message in capsys.readouterr().err


def test_a_prompts_path_that_is_no_text_file_is_named(model_dir, tmp_path, capsys):
    """The attack found a folder reported as "does not exist" and binary bytes as a bare codec error."""
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00digit")
    for given, message in ((tmp_path, f"--prompts {tmp_path} is not a regular file"),
                           (tmp_path / "binary.txt", "--prompts file " + str(tmp_path / "binary.txt") +
                            " is not UTF-8 text")):
        assert ablate_cli.ablate_main(args(model_dir, str(given), tmp_path / "o")) == 2
        assert message in capsys.readouterr().err


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    """The command line, as users run it: a message naming the argument and its range, no traceback, and no
    output folder left behind (all cases at once, each in its own process)."""
    no_gpu = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    cases = {("--guidance", "nan"): "--guidance must be in [0.0, 1000.0], got nan",
             ("--height", "30"): "--height must be a multiple of the model's downscale factor 4, got 30",
             ("--device", no_gpu): f"--device: device '{no_gpu}' is not available",
             ("--device", "tpu"): "--device: device 'tpu' is not a device name",
             # its scheduler's steps_offset 1: 1000 steps would reach timestep 1000 (IndexError after the work)
             ("--steps", "1000"): "--steps must be at most 999 (the scheduler's training timesteps less "
                                  "max(1, steps_offset)), got 1000"}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = {case: subprocess.Popen([sys.executable, str(ROOT / "python" / "ablate.py"), *case, "--out",
                                    str(tmp_path / str(index))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env)
            for index, case in enumerate(cases)}
    for index, (case, process) in enumerate(runs.items()):
        _, err = process.communicate(timeout=120)
        assert process.returncode == 2 and cases[case] in err and "Traceback" not in err, (case, err)
        assert not (tmp_path / str(index)).exists(), case


@pytest.mark.parametrize("module", sorted(ablate_cli.EVAL_MODULES))
def test_missing_evaluation_dependencies_name_the_extra(module, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # what an interpreter without the package finds
    assert ablate_cli.ablate_main(["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert ablate_cli.EVAL_MODULES[module] in err and "pip install 'zs2_kernels[eval]'" in err
    assert not (tmp_path / "o").exists()


def test_bad_prompt_files(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert ablate_cli.ablate_main(args(model_dir, str(empty), tmp_path / "o")) == 2
    assert "no prompts" in capsys.readouterr().err
    not_digits = tmp_path / "cats.txt"
    not_digits.write_text("a cat\n")
    assert ablate_cli.ablate_main(args(model_dir, str(not_digits), tmp_path / "o")) == 2
    assert "naming one digit" in capsys.readouterr().err
    # Only the prompt metrics need the digit: consistency and FID score any prompt.
    assert ablate_cli.ablate_main(args(model_dir, str(not_digits), tmp_path / "o", "--metrics", "consistency")) == 0


def test_unwritable_out(model_dir, prompts_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, blocker / "out")) == 2
    assert "--out" in capsys.readouterr().err
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, "")) == 2
    assert "--out must name a folder" in capsys.readouterr().err
    if Path("/proc/self").is_dir():  # os.access says yes there (as root), but no folder can be made
        assert ablate_cli.ablate_main(args(model_dir, prompts_file, "/proc/zs2-out")) == 2
        assert "--out /proc/zs2-out is not writable: cannot create a folder in /proc" in capsys.readouterr().err


def test_a_run_that_would_not_fit_is_refused_before_any_work(model_dir, prompts_file, tmp_path, capsys,
                                                              monkeypatch):
    from zs2_kernels.sampling import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 2**20)
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "--frames 3: zs2 needs about" in err and "GiB free; lower --frames or --batch" in err
    assert not (tmp_path / "o").exists()


def test_a_damaged_unit_is_computed_again(model_dir, prompts_file, uninterrupted, tmp_path):
    """Units are written atomically; a file damaged from outside (emptied, truncated) is not a finished unit."""
    used = tmp_path / "used"
    shutil.copytree(uninterrupted, used)
    damaged = sorted(used.glob("units/*/*.json"))
    damaged[0].write_text("")
    damaged[1].with_suffix(".npz").write_bytes(b"PK")
    damaged[2].write_text("{}")  # valid JSON, not a unit
    npz = damaged[3].with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:len(npz.read_bytes()) // 2])  # truncated archive
    npz = damaged[4].with_suffix(".npz")
    data = bytearray(npz.read_bytes())
    data[100:140] = bytes(40)  # a damaged member (its CRC no longer matches)
    npz.write_bytes(bytes(data))
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, used)) == 0
    json.loads(damaged[0].read_text())
    assert (used / "results.md").read_text() == (uninterrupted / "results.md").read_text()


def test_ctrl_c_keeps_the_finished_units_and_says_how_to_resume(model_dir, prompts_file, uninterrupted, tmp_path):
    out = tmp_path / "interrupted"
    with paused_run(model_dir, prompts_file, out, units=4) as process:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
    err = (out.parent / "stderr.txt").read_text()
    assert "Traceback" not in err and "interrupted; the finished units are kept" in err, err
    assert len(list(out.glob("units/*/*.json"))) == 4
    assert ablate_cli.ablate_main(args(model_dir, prompts_file, out)) == 0
    assert (out / "results.md").read_text() == (uninterrupted / "results.md").read_text()


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
    assert consistency_metrics(embeddings) == pytest.approx({"consistency_adjacent": 100.0, "consistency_all": 100.0,
                                                             "consistency_first": 100.0,
                                                             "consistency_last_first": 100.0})
    flipped = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert consistency_metrics(flipped) == pytest.approx({"consistency_adjacent": 0.0, "consistency_all": 100 / 3,
                                                          "consistency_first": 50.0,
                                                          "consistency_last_first": 100.0})
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
    from zs2_kernels.evaluation import planning

    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert planning._rank_device("cuda", 1) == torch.device("cuda", 1)
    assert current == [torch.device("cuda", 1)]  # Triton launches on the current device
    current.clear()
    assert planning._rank_device("cpu", 1) == torch.device("cpu") and not current
