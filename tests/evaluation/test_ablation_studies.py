"""The length and conditional studies of the ablation: their configurations, their units' records and metrics,
their tables, plots and GIF grids, resuming, and bad input. (The quality gates behind the conditional metrics are in
test_embedded_controlnet.py and test_embedded_editing.py; the shared study machinery in test_ablation.py.)"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zs2_kernels.evaluation import cli as ablate_cli
from zs2_kernels.evaluation import conditional, planning, report
from zs2_kernels.evaluation.metrics import (
    adjacent_consistency_min,
    consistency_metrics,
    consistency_to_first,
    travel_metrics,
)
from zs2_kernels.evaluation.planning import (
    ANCHORS,
    LENGTH_CHUNK,
    LENGTHS,
    LONG_VIDEO_FRAMES,
    LONG_VIDEO_SEEDS,
    STRENGTHS,
    TRAVEL_FRAMES,
    paired_comparisons,
    study_configs,
    travel_keyframes,
)

from tiny_pipelines import tiny_pipeline

pytestmark = pytest.mark.filterwarnings("ignore:FID with .* rank-deficient:RuntimeWarning")
SHORT, LONG = 3, LENGTH_CHUNK + 2  # the long one is chunked: ZS² in 16 + 2, Text2Video-Zero in 2 calls


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


# --------------------------------------------------------------------------- definitions
def test_length_and_conditional_configurations():
    length = study_configs("length")
    methods = ("zs2", *(f"zs2_anchor={a:g}" for a in ANCHORS), "text2video_zero", "per_frame")
    assert [(c.name.split("/")[0], c.frames) for c in length] == [(method, n) for n in LENGTHS for method in methods]
    assert [c.noise_anchor for c in length[:len(methods)]] == [0.0, *ANCHORS, 0.0, 0.0]
    assert all((c.frame_chunk == LENGTH_CHUNK) == (c.frames > LENGTH_CHUNK) for c in length
               if not c.name.startswith("per_frame"))
    assert all(not (c.dependency_noise or c.momentum_attention) for c in length if not c.name.startswith("zs2"))
    assert [c.frames for c in study_configs("length", lengths=(4, 9))] == [4] * len(methods) + [9] * len(methods)
    assert {c.frames for c in length if c.seeds is not None} == {n for n in LENGTHS if n > LONG_VIDEO_FRAMES}
    assert {c.seeds for c in length if c.frames > LONG_VIDEO_FRAMES} == {LONG_VIDEO_SEEDS}
    image = [(c.name, c.frames, c.noise_anchor) for c in study_configs("conditional") if c.frames]
    assert [(frames, anchor > 0) for _, frames, anchor in image] == [(64, False), (64, True)]
    modes = [(c.name, c.mode, c.dependency_noise, c.momentum_attention, c.strength)
             for c in study_configs("conditional")]
    assert ("guided/no_momentum_attention", "guided", True, False, None) in modes
    assert [m[4] for m in modes if m[1] == "video"] == [*STRENGTHS, STRENGTHS[-1]]
    assert {m[1] for m in modes} == set(conditional.MODES)
    everything = study_configs("all")
    assert {c.study for c in everything} == {"components", "lambda", "momentum", "length", "travel", "conditional"}
    assert len({c.name for c in everything}) == len(everything)
    assert "conditional" not in {c.study for c in study_configs("all", embedded=False)}
    with pytest.raises(ValueError, match="embedded model only"):
        study_configs("conditional", embedded=False)


def test_paired_comparisons_name_existing_configurations():
    everything = study_configs("all")
    pairs = paired_comparisons(everything)
    names = {c.name for c in everything}
    assert all(a in names and b in names and a != b for a, b in pairs) and len(set(pairs)) == len(pairs)
    assert ("zs2", "text2video_zero") in pairs and ("zs2/frames=256", "zs2/frames=8") in pairs
    assert ("guided/zs2", "guided/no_momentum_attention") in pairs
    assert ("zs2_anchor=0.8/frames=128", "zs2/frames=128") in pairs
    assert ("travel/zs2", "travel/zs2_cut") in pairs and ("image/zs2_anchor=0.8/frames=64", "image/zs2/frames=64") \
        in pairs
    assert paired_comparisons(study_configs("components")) == [
        ("zs2", "text2video_zero"), ("zs2", "neither"), ("zs2", "no_dependency_noise"),
        ("zs2", "no_momentum_attention")]


def test_paired_differences_pair_units_by_prompt_and_seed():
    """A - B is taken unit by unit over the (prompt, seed) both have; metrics only one side has are left out."""
    def unit(config, prompt, seed, **metrics):
        return {"config_name": config, "prompt_index": prompt, "seed": seed, "metrics": metrics}

    units = [unit("a", 0, 0, motion_pixel=5.0, guide_fidelity=0.5), unit("a", 1, 0, motion_pixel=9.0),
             unit("a", 2, 0, motion_pixel=100.0), unit("b", 1, 0, motion_pixel=4.0), unit("b", 0, 0, motion_pixel=1.0)]
    [row] = report.paired_differences(units, [("a", "b")])
    assert row["differences"] == {"motion_pixel": {"mean": 4.5, "ci95": pytest.approx(6.353, abs=1e-3), "n": 2}}
    lines = report._paired_lines([row])
    assert "| a - b | 4.5 ± 6.4 |" in lines


def test_drift_metrics_on_known_embeddings():
    turning = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # 0, 45 and 90 degrees from frame 0
    assert consistency_to_first(turning).tolist() == pytest.approx([100.0, 100 / 2**0.5, 0.0])
    values = consistency_metrics(turning)
    assert values["consistency_first"] == pytest.approx((100 / 2**0.5) / 2)
    assert values["consistency_last_first"] == pytest.approx(0.0)
    assert consistency_metrics(turning[:1])["consistency_last_first"] == 100.0


def test_conditional_metrics_on_known_inputs():
    """Each metric against its own input scores perfectly; against something else, not."""
    inputs = conditional.unit_inputs(digit=3, seed=1, frames=5)
    assert inputs["guide"].shape == (5, 1, 32, 32) and inputs["video"].shape == (5, 3, 32, 32)
    assert torch.equal(inputs["image"], conditional.held_out_images(3)[1])
    assert torch.equal(conditional.unit_inputs(3, 1, 5)["guide"], inputs["guide"])  # the same for every config
    classifier_free = lambda frames: frames.flatten(1).double()  # noqa: E731 - an embedding: the pixels
    guide_video = inputs["guide"].expand(-1, 3, -1, -1)
    assert conditional.unit_metrics("guided", guide_video, inputs, classifier_free)["guide_fidelity"] == \
        pytest.approx(1.0)
    still = inputs["image"].expand(5, 3, -1, -1)
    image = conditional.unit_metrics("image", still, inputs, classifier_free)
    assert image["image_distance"] < 3 and image["frame0_psnr"] > 60  # uint8 rounding only
    video = conditional.unit_metrics("video", inputs["video"], inputs, classifier_free)
    assert video["motion_correlation"] == pytest.approx(1.0) and video["input_psnr"] > 100
    frozen = conditional.unit_metrics("video", inputs["video"][:1].expand(5, -1, -1, -1), inputs, classifier_free)
    assert frozen["motion_correlation"] == 0.0 and frozen["input_psnr"] < 30
    plain = conditional.unit_metrics("text", still, inputs, classifier_free)
    assert set(plain) == {"guide_fidelity", "image_distance"} and plain["guide_fidelity"] < 0.9
    with pytest.raises(ValueError, match="--seeds must be at most"):
        conditional.unit_inputs(digit=0, seed=conditional.max_seeds() + 5, frames=2)


def test_travel_configurations_keyframes_and_metrics():
    travel = {c.name: c for c in study_configs("travel")}
    assert all(c.frames == TRAVEL_FRAMES for c in travel.values())
    assert travel_keyframes(travel["travel/zs2"], "a", "b") == {0: "a", TRAVEL_FRAMES - 1: "b"}
    middle = TRAVEL_FRAMES // 2
    assert travel_keyframes(travel["travel/zs2_cut"], "a", "b") == {0: "a", middle - 1: "a", middle: "b"}
    assert not travel["travel/per_frame"].dependency_noise and travel["travel/zs2_momentum=0.5"].momentum == 0.5
    # Scores of 8 frames: the second prompt leads from frame 5 on (frame 2's lead does not count: it is lost again).
    first = torch.tensor([90.0, 80, 20, 70, 60, 40, 10, 0])
    second = torch.tensor([10.0, 20, 80, 30, 40, 60, 90, 100])
    values = travel_metrics(first, second, switch_frame=4)
    assert values == {"travel_start": 85.0, "travel_end": 95.0, "travel_switch": 5.0, "travel_lag": 1.0}
    assert travel_metrics(first, first - 1, switch_frame=4)["travel_switch"] == 8.0  # never switches: F
    assert travel_metrics(torch.zeros(8), torch.ones(8), switch_frame=4)["travel_lag"] == -4.0  # leads from 0
    steps = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # one 90-degree jump
    assert adjacent_consistency_min(steps) == pytest.approx(0.0) and adjacent_consistency_min(steps[:1]) == 100.0


# --------------------------------------------------------------------------- the length study (tiny model)
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-length")
    tiny_pipeline("sd15").save_pretrained(folder / "model", safe_serialization=True)
    (folder / "prompts.txt").write_text("a handwritten digit one\na handwritten digit six\n")
    return folder


@pytest.fixture(scope="module")
def length_run(tiny_model):
    out = tiny_model / "length"
    with pytest.MonkeyPatch.context() as patch:  # the long videos run with LONG_VIDEO_SEEDS seeds
        patch.setattr(planning, "LONG_VIDEO_FRAMES", SHORT)
        assert ablate_cli.ablate_main(["--study", "length", "--lengths", f"{SHORT},{LONG}", "--model",
                                       str(tiny_model / "model"), "--prompts", str(tiny_model / "prompts.txt"),
                                       "--seeds", "2", "--steps", "2", "--scorer", "digits", "--out", str(out),
                                       "--no-progress"]) == 0
    return out


def test_length_units_record_their_frames_and_drift(length_run):
    data = results(length_run)
    assert len(data["units"]) == (3 + len(ANCHORS)) * 2 * (2 + LONG_VIDEO_SEEDS)  # 2 prompts, 2 seeds / 1 seed
    assert {u["seed"] for u in data["units"] if u["config"]["frames"] == LONG} == set(range(LONG_VIDEO_SEEDS))
    for unit in data["units"]:
        frames = unit["config"]["frames"]
        assert frames == int(unit["config_name"].split("=")[-1]) == unit["key"]["config"]["frames"]
        assert len(unit["curves"]["consistency_to_first"]) == frames
        assert unit["curves"]["consistency_to_first"][0] == pytest.approx(100.0)
    curve = data["summary"][f"zs2/frames={LONG}"]["curves"]["consistency_to_first"]
    assert len(curve["mean"]) == LONG and curve["n"] == 2 * LONG_VIDEO_SEEDS
    backends = {u["config_name"]: u["backend"] for u in data["units"]}
    assert backends[f"text2video_zero/frames={LONG}"] == "diffusers"
    table = (length_run / "results.md").read_text()
    assert "## length" in table and "last vs frame 0" in table and "guide fidelity" not in table
    assert (length_run / "length.png").read_bytes()[:4] == b"\x89PNG"


def test_length_grid_shows_the_longest_videos(length_run):
    import imageio.v3 as iio

    grid = iio.imread(length_run / "samples-length.gif")
    assert grid.shape[0] == LONG and not (length_run / "samples.gif").exists()
    rows = 3 + len(ANCHORS)  # one per method (ZS², anchored ZS², Text2Video-Zero, per-frame)
    assert grid.shape[1] == rows * 64  # the tiny model's 32 px frames at 64 px


# --------------------------------------------------------------------------- the travel study (tiny model)
def test_travel_study_records_prompt_switches(tiny_model, capsys):
    out = tiny_model / "travel"
    argv = ["--study", "travel", "--model", str(tiny_model / "model"), "--seeds", "1", "--steps", "2",
            "--scorer", "digits", "--out", str(out), "--no-progress"]
    assert ablate_cli.ablate_main([*argv, "--prompts", str(tiny_model / "prompts.txt")]) == 0
    data = results(out)
    assert len(data["units"]) == 4 * 2
    for unit in data["units"]:
        assert unit["travel_to"] == ("a handwritten digit six" if unit["prompt_index"] == 0 else
                                     "a handwritten digit one")
        curves = unit["curves"]
        assert len(curves["travel_first_score"]) == len(curves["travel_second_score"]) == TRAVEL_FRAMES
        metrics = unit["metrics"]
        assert metrics["travel_lag"] == metrics["travel_switch"] - TRAVEL_FRAMES // 2
        assert "prompt_probability" not in metrics and 0 <= metrics["consistency_adjacent_min"] <= 100
    table = (out / "results.md").read_text()
    assert "## travel" in table and "| travel/zs2 - travel/zs2_cut |" in table and "switch lag" in table
    assert (out / "travel.png").read_bytes()[:4] == b"\x89PNG" and (out / "samples-travel.gif").is_file()
    one = tiny_model / "one.txt"
    one.write_text("a handwritten digit one\n")
    assert ablate_cli.ablate_main([*argv[:-2], str(tiny_model / "refused"), "--prompts", str(one)]) == 2
    assert "the travel study needs at least 2 prompts" in capsys.readouterr().err


# --------------------------------------------------------------------------- the conditional study (embedded)
def conditional_args(out, *extra):
    prompts = Path(out).parent / "digits.txt"
    prompts.write_text("a handwritten digit 2\na handwritten digit 7\n")
    return ["--study", "conditional", "--prompts", str(prompts), "--seeds", "1", "--frames", "4", "--steps", "5",
            "--metrics", "clip,consistency", "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conditional") / "out"
    assert ablate_cli.ablate_main(conditional_args(out)) == 0
    return out


def test_conditional_units_carry_their_modes_metrics(conditional_run):
    summary = results(conditional_run)["summary"]
    expected = {"text": {"guide_fidelity", "image_distance"}, "guided": {"guide_fidelity"},
                "image": {"image_distance", "frame0_psnr"}, "video": {"input_psnr", "motion_correlation"}}
    conditional_keys = {k for keys in expected.values() for k in keys}
    for config in study_configs("conditional"):
        assert conditional_keys & set(summary[config.name]) == expected[config.mode], config.name
    # The inputs reached the sampler: frame 0 of image-to-video is the image (through the VAE), and a light edit
    # stays nearer its input than a strong one.
    assert summary["image/zs2"]["frame0_psnr"]["mean"] > 30
    assert summary["video/strength=0.2"]["input_psnr"]["mean"] > summary["video/strength=0.8"]["input_psnr"]["mean"]
    assert summary["guided/zs2"]["guide_fidelity"]["mean"] > summary["plain/zs2"]["guide_fidelity"]["mean"]
    table = (conditional_run / "results.md").read_text()
    assert "## conditional" in table and "| guided/neither |" in table and "motion corr." in table
    assert (conditional_run / "conditional.png").read_bytes()[:4] == b"\x89PNG"
    assert (conditional_run / "samples-conditional.gif").is_file()


def test_conditional_study_resumes_to_the_same_table(conditional_run, tmp_path):
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(conditional_run, copy)
    removed = sorted(copy.glob("units/*/*.json"))[::2]
    for path in removed:
        path.unlink()
        path.with_suffix(".npz").unlink()
    assert ablate_cli.ablate_main(conditional_args(copy)) == 0
    assert (copy / "results.md").read_text() == (conditional_run / "results.md").read_text()
    assert np.array_equal(np.load(sorted(copy.glob("units/*/*.npz"))[0])["grid_frames"],
                          np.load(sorted(conditional_run.glob("units/*/*.npz"))[0])["grid_frames"])


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "36"], "--seeds must be at most 35 for the conditional study"),
    (["--steps", "4"], "--steps 4 is too few for the conditional study's video/strength=0.2"),
    (["--model", "/nonexistent"], "embedded model only"),
    (["--frames", "3"], "--frames must be >= 4 for the conditional study"),
    (["--height", "16", "--width", "16"], "the conditional study runs at the embedded model's 32 x 32"),
])
def test_conditional_bad_input(tmp_path, capsys, extra, message):
    assert ablate_cli.ablate_main(conditional_args(tmp_path / "o", *extra)) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_conditional_needs_digit_prompts(tmp_path, capsys):
    prompts = tmp_path / "cats.txt"
    prompts.write_text("a cat\n")
    assert ablate_cli.ablate_main(["--study", "conditional", "--prompts", str(prompts), "--scorer", "clip",
                                   "--clip-model", "/nonexistent", "--out", str(tmp_path / "o")]) == 2
    assert "naming one digit" in capsys.readouterr().err


@pytest.mark.parametrize("lengths, message", [("8,x", "comma-separated"), ("8,1", ">= 2"), ("8,8", "distinct")])
def test_bad_lengths(tmp_path, capsys, lengths, message):
    assert ablate_cli.ablate_main(["--study", "length", "--lengths", lengths, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--lengths" in err and message in err
