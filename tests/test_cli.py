"""The sample CLI: writes .gif/.mp4/PNG folders that read back with the right frame count; bad input refused
before any work (and before any weights load); nothing of the user's is ever lost."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from zs2_kernels import cli
from zs2_kernels.embedded import embedded_model_path
from zs2_kernels.sampling import sampler

from tiny_pipelines import tiny_pipeline


def read_video(path) -> np.ndarray:
    """Read a written .gif/.mp4 file or PNG folder back as uint8 [F, H, W, C]."""
    path = Path(path)
    if path.is_dir():
        return np.stack([iio.imread(p) for p in sorted(path.glob("frame_*.png"))])
    if path.suffix.lower() == ".gif":
        return iio.imread(path, index=None)
    return iio.imread(path, plugin="FFMPEG")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-cli")
    tiny_pipeline("sd15").save_pretrained(folder, safe_serialization=True)
    return str(folder)


def run_cli(model_dir, out, *extra):
    return cli.sample_main(["--model", model_dir, "--prompt", "a cat", "--frames", "3", "--steps", "1",
                            "--no-progress", "--out", str(out), *extra])


@pytest.mark.parametrize("name", ["video.gif", "video.mp4", "frames"])
def test_writes_video_that_reads_back(model_dir, tmp_path, capsys, name):
    assert run_cli(model_dir, tmp_path / name) == 0
    frames = read_video(tmp_path / name)
    assert frames.shape[0] == 3 and frames.shape[1] >= 256  # 16 px frames upscaled to >= 256
    printed = capsys.readouterr().out
    assert "wrote" in printed and "achieved_kl_mean" in printed


def test_scheduler_choice(model_dir, tmp_path, capsys, monkeypatch):
    used = []
    sample = sampler.sample
    monkeypatch.setattr(sampler, "sample", lambda model, request: used.append(request.scheduler) or sample(model,
                                                                                                          request))
    assert run_cli(model_dir, tmp_path / "v.gif", "--scheduler", "dpm++") == 0 and used == ["dpm++"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(model_dir, tmp_path / "w.gif", "--scheduler", "dpm")
    assert exit_info.value.code == 2 and "--scheduler" in capsys.readouterr().err


def test_several_prompts_write_one_file_each(model_dir, tmp_path):
    code = cli.sample_main(["--model", model_dir, "--prompt", "a cat", "--prompt", "a dog", "--frames", "2",
                            "--steps", "1", "--no-progress", "--out", str(tmp_path / "v.gif")])
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["v_0.gif", "v_1.gif"]


def test_derived_output_names_never_replace_a_file(tmp_path, capsys, no_weights_load):
    """--out v.gif with two prompts writes v_0.gif and v_1.gif, names the user did not type: an existing one is
    refused before sampling, and left as it was."""
    (tmp_path / "v_1.gif").write_bytes(b"keep me")
    code = cli.sample_main(["--prompt", "a", "--prompt", "b", "--out", str(tmp_path / "v.gif")])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and str(tmp_path / "v_1.gif") in err and "already exists" in err, err
    assert (tmp_path / "v_1.gif").read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["v_1.gif"]
    assert "_0" in cli.sample_parser().format_help()


@pytest.mark.parametrize(
    "out, extra, message",
    [
        ("missing/folder/v.gif", [], "does not exist"),
        ("v.avi", [], "unsupported extension"),
        ("v.gif", ["--frames", "0"], "num_frames"),
        ("v.gif", ["--height", "15"], "height"),
        ("v.gif", ["--lambda", "-1"], "noise_lambda"),
        ("v.gif", ["--momentum", "2"], "momentum"),
        ("v.gif", ["--chunk", "0"], "frame_chunk"),
        ("v.gif", ["--steps", "0"], "num_inference_steps"),
        ("v.gif", ["--guidance", "-2"], "guidance_scale"),
    ],
)
def test_bad_input_exits_2_with_message(model_dir, tmp_path, capsys, out, extra, message):
    assert run_cli(model_dir, tmp_path / out, *extra) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.gif"))


def test_missing_model_path(tmp_path, capsys):
    code = cli.sample_main(["--model", str(tmp_path / "nope"), "--prompt", "x", "--out", str(tmp_path / "v.gif")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_failure_while_writing_leaves_no_partial_file(model_dir, tmp_path, monkeypatch, capsys):
    def broken_write(path, data):
        with open(path, "wb") as handle:
            handle.write(data[:10])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", broken_write)
    assert run_cli(model_dir, tmp_path / "v.gif") == 1
    assert "disk full" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_script_entry_point_runs(model_dir, tmp_path):
    script = Path(__file__).resolve().parents[1] / "python" / "sample.py"
    result = subprocess.run([sys.executable, str(script), "--model", model_dir, "--prompt", "a cat", "--frames",
                             "2", "--steps", "1", "--no-progress", "--out", str(tmp_path / "v.gif")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "v.gif").is_file() and read_video(tmp_path / "v.gif").shape[0] == 2


def run_subprocess(*args, cwd=None, timeout=300):
    """zs2-sample in a fresh process, offline (as a user runs it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "zs2_kernels.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


@pytest.fixture
def no_weights_load(monkeypatch):
    """Fail the test if any pipeline weights load: refusals must come first."""
    from diffusers import DiffusionPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", refuse)


@pytest.mark.parametrize("out", [".", "", "mydata"])
def test_an_output_folder_never_deletes_anything(tmp_path, out):
    """--out . / "" (an unset shell variable) / an existing non-empty folder: refused, every file still there."""
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "thesis.tex").write_text("years of work")
    (tmp_path / "notes.txt").write_text("keep me")
    result = run_subprocess("--prompt", "the number 3", "--frames", "2", "--steps", "1", "--out", out, cwd=tmp_path)
    assert result.returncode == 2 and "--out" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "mydata" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mydata", "notes.txt", "thesis.tex"]


def test_png_frames_go_into_an_existing_empty_folder(model_dir, tmp_path):
    (tmp_path / "frames").mkdir()
    assert run_cli(model_dir, tmp_path / "frames") == 0
    assert read_video(tmp_path / "frames").shape[0] == 3


def test_an_output_link_is_followed(model_dir, tmp_path):
    """--out naming a link to an empty folder passed the checks, then failed after sampling (a folder cannot be
    renamed onto a link): the frames go where it points; a link to a video has its target replaced."""
    (tmp_path / "real-frames").mkdir()
    (tmp_path / "frames").symlink_to(tmp_path / "real-frames")
    (tmp_path / "real.gif").write_bytes(b"old video")
    (tmp_path / "v.gif").symlink_to(tmp_path / "real.gif")
    assert run_cli(model_dir, tmp_path / "frames") == 0 and run_cli(model_dir, tmp_path / "v.gif") == 0
    assert (tmp_path / "frames").is_symlink() and read_video(tmp_path / "real-frames").shape[0] == 3
    assert (tmp_path / "v.gif").is_symlink() and read_video(tmp_path / "real.gif").shape[0] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "real-frames", "real.gif", "v.gif"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fps", "0"], "--fps"),
        (["--fps", "-5"], "--fps"),
        (["--fps", "1000"], r"--fps: fps must be in \[1, 50\] for a GIF"),  # a GIF delay of 0: players' default
        (["--anchor", "1"], r"--anchor: noise_anchor must be in \[0, 1\)"),
        (["--anchor", "0.5", "--search", "paper"], "--anchor: noise_anchor needs search='exact'"),
        (["--prompt-at", "0:a cat"], "--prompt-at: one video's prompt travel, instead of --prompt"),
        (["--guidance", "inf"], "--guidance"),
        (["--guidance", "1e30"], "--guidance"),
        (["--device", "tpu"], "--device"),
        (["--device", "meta"], "--device"),
        (["--device", "cuda:7"], "--device"),
        pytest.param(["--device", "cuda"], "--device",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="refused only without CUDA")),
        (["--seed", str(2**63)], "--seed"),
        (["--seed", "-1"], "--seed"),
        (["--model", "nobody/no-such-model"], "--model"),
        (["--model", "/etc/passwd"], "--model: model path /etc/passwd is not a folder"),  # was "does not exist"
        (["--image", "/dev/zero"], "--image: image /dev/zero is not a regular file or folder"),
        (["--height", "30"], "--height"),
        (["--frames", "10000000"], "--frames"),
        # the embedded DDIM's steps_offset 1: 1000 steps of 1000 reach timestep 1000 (diffusers IndexError)
        (["--steps", "1000"], "--steps"),
        (["--steps", "1000000"], "--steps"),
    ],
)
def test_refused_before_any_weights_load(tmp_path, capsys, no_weights_load, extra, message):
    """Each bad value exits 2 with a message naming its flag, before any weights load (embedded model's config)."""
    code = cli.sample_main(["--prompt", "the number 3", "--out", str(tmp_path / "v.gif"), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and re.search(f"error: {message}" + ("" if ":" in message else ":"), err), err
    assert not list(tmp_path.iterdir())


def test_a_bad_backend_in_the_environment_is_refused_before_loading(tmp_path, capsys, no_weights_load, monkeypatch):
    monkeypatch.setenv("ZS2_BACKEND", "bogus")
    assert cli.sample_main(["--prompt", "the number 3", "--out", str(tmp_path / "v.gif"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error: ZS2_BACKEND: ZS2_BACKEND must be one of ('triton', 'cuda', 'torch'), got 'bogus'" in err, err


def test_good_arguments_get_past_the_checks_to_loading(tmp_path, no_weights_load):
    """The control of the test above: the same command with good values reaches the weights."""
    with pytest.raises(AssertionError, match="weights were loaded"):
        cli.sample_main(["--prompt", "the number 3", "--negative-prompt", "", "--out", str(tmp_path / "v.gif")])


def test_memory_refusal_names_frames_chunk_and_the_estimate(tmp_path, capsys, no_weights_load):
    assert cli.sample_main(["--prompt", "3", "--frames", "10000000", "--out", str(tmp_path / "v.gif")]) == 2
    err = capsys.readouterr().err
    assert "--frames" in err and "--chunk" in err and "GiB" in err


@pytest.mark.parametrize(
    "make, out, message",
    [
        (lambda p: p.mkdir(), "x.gif", "not a file"),
        (lambda p: p.write_text("a file"), "frames", "not a folder"),
        (lambda p: None, "/proc/x.gif", "cannot create files"),
    ],
)
def test_output_paths_of_the_wrong_kind_are_refused(tmp_path, capsys, no_weights_load, make, out, message):
    target = tmp_path / out
    make(target)
    assert cli.sample_main(["--prompt", "3", "--out", str(target)]) == 2
    assert message in capsys.readouterr().err


def test_bad_model_is_named_even_when_out_is_missing(tmp_path, capsys):
    code = cli.sample_main(["--model", str(tmp_path / "nope"), "--prompt", "x"])
    err = capsys.readouterr().err
    assert code == 2 and "--model" in err and "does not exist" in err and "--out: required" in err


def test_every_output_path_is_checked_before_sampling(model_dir, tmp_path, capsys, no_weights_load):
    """Two prompts write v_0.gif and v_1.gif; v_1.gif cannot be written (a folder): refused, nothing written."""
    (tmp_path / "v_1.gif").mkdir()
    code = cli.sample_main(["--model", model_dir, "--prompt", "a", "--prompt", "b", "--out", str(tmp_path / "v.gif")])
    assert code == 2 and "v_1.gif" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v_1.gif"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_umask_permissions(model_dir, tmp_path, umask):
    previous = os.umask(umask)
    try:
        assert run_cli(model_dir, tmp_path / "v.gif") == 0
        assert run_cli(model_dir, tmp_path / "frames") == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "v.gif").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "frames").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "frames" / "frame_0000.png").stat().st_mode & 0o777 == 0o666 & ~umask


SIGTERM_WHILE_WRITING = """
import os, pathlib, signal, sys, time
from zs2_kernels import cli
from zs2_kernels.sampling import sampler

def interrupted_write(path, data):
    with open(path, "wb") as handle:
        handle.write(data[:10])
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)

pathlib.Path.write_bytes = interrupted_write
sys.exit(cli.sample_main(sys.argv[1:]))
"""


def test_sigterm_while_writing_leaves_the_previous_file_and_no_temporary(model_dir, tmp_path):
    (tmp_path / "v.gif").write_bytes(b"the previous video")
    result = subprocess.run([sys.executable, "-c", SIGTERM_WHILE_WRITING, "--model", model_dir, "--prompt", "a cat",
                             "--frames", "2", "--steps", "1", "--no-progress", "--out", str(tmp_path / "v.gif")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 143, result.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["v.gif"]
    assert (tmp_path / "v.gif").read_bytes() == b"the previous video"


def test_negative_prompt_and_quiet_output(tmp_path):
    """A string --negative-prompt for two prompts works; the libraries' non-actionable warnings, loading bars
    (--no-progress) and a 10,000-character prompt's tokenizer notes are gone; one short truncation warning."""
    result = run_subprocess("--prompt", "the number 3", "--prompt", "7" * 10_000, "--negative-prompt", "the number 8",
                            "--frames", "2", "--steps", "1", "--no-progress", "--out", str(tmp_path / "v.gif"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v_0.gif", "v_1.gif"]
    for noise in ("accelerate", "torchvision", "Loading pipeline components", "Loading weights", "Token indices",
                  "truncated because"):
        assert noise not in result.stderr, result.stderr[-2000:]
    assert "cut there" in result.stderr and len(result.stderr) < 1000, result.stderr[-2000:]


def moving_square_gif(path, frames=4):
    video = np.zeros((frames, 64, 64, 3), np.uint8)
    for f in range(frames):
        video[f, 20:44, 8 + 6 * f:24 + 6 * f] = 255
    iio.imwrite(path, video, duration=100, loop=0)
    return path


def test_control_video_guides_the_embedded_model(tmp_path):
    """--control-video with --digit-condition: the embedded ControlNet follows plain frames; --frames defaults to
    the guide's length."""
    guide = moving_square_gif(tmp_path / "guide.gif")
    assert cli.sample_main(["--prompt", "a handwritten digit 3", "--control-video", str(guide), "--digit-condition",
                            "--steps", "1", "--no-progress", "--out", str(tmp_path / "v.gif")]) == 0
    assert read_video(tmp_path / "v.gif").shape[0] == 4


@pytest.mark.parametrize("extra, message", [
    (["--frames", "3"], "it has 4 frames but --frames is 3"),
    (["--controlnet", "x"], None),
])
def test_control_video_refusals(tmp_path, capsys, extra, message):
    guide = moving_square_gif(tmp_path / "guide.gif")
    args = ["--prompt", "a", "--out", str(tmp_path / "v.gif"), *extra]
    if message is None:  # --controlnet without --control-video
        message = "need --control-video"
    else:
        args += ["--control-video", str(guide)]
    assert cli.sample_main(args) == 2
    assert message in capsys.readouterr().err


def test_png_frames_are_read_in_numeric_order(tmp_path):
    from zs2_kernels.video_io import read_video

    (tmp_path / "pngs").mkdir()
    for index in range(12):  # frame_2.png sorts after frame_11.png by name
        iio.imwrite(tmp_path / "pngs" / f"frame_{index}.png", np.full((4, 4, 3), 20 * index, np.uint8))
    means = read_video(tmp_path / "pngs", (4, 4)).mean(axis=(1, 2, 3))
    assert (np.diff(means) > 0).all(), means


@pytest.mark.parametrize("content, reason", [(b"not a video", "its contents are not an image or video"),
                                             (b"", "it is empty")])
def test_an_unreadable_control_video_is_named_in_one_line(tmp_path, capsys, no_weights_load, content, reason):
    path = tmp_path / ("notes.txt" if content else "empty.gif")
    path.write_bytes(content)
    assert cli.sample_main(["--prompt", "a", "--control-video", str(path), "--out", str(tmp_path / "v.gif")]) == 2
    err = capsys.readouterr().err
    assert f"--control-video: cannot read control video {path}: {reason}" in err and err.count("\n") == 1, err


def write_controlnet_config(folder, **changes):
    """A ControlNet folder with only config.json, fitting the embedded model's UNet unless ``changes`` say else."""
    from zs2_kernels.embedded import controlnet_path

    folder.mkdir()
    config = json.loads((controlnet_path() / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


@pytest.mark.parametrize("make, extra, message", [
    (None, ["--controlnet", "{tmp}/nowhere"], "--controlnet: controlnet {tmp}/nowhere: no such folder"),
    (lambda tmp: (tmp / "cn").mkdir(), ["--controlnet", "{tmp}/cn"], "--controlnet: controlnet folder"),
    (lambda tmp: write_controlnet_config(tmp / "cn", block_out_channels=[64, 128]), ["--controlnet", "{tmp}/cn"],
     "--controlnet: controlnet does not fit the UNet: block_out_channels [64, 128] vs the UNet's"),
    (lambda tmp: write_controlnet_config(tmp / "cn", conditioning_channels=1), ["--controlnet", "{tmp}/cn"],
     "--controlnet: controlnet takes 1-channel"),
    # the attack: a UNet folder as --controlnet passed, then failed 11 s in with a size mismatch
    (None, ["--controlnet", str(embedded_model_path() / "unet")],
     "--controlnet: controlnet's config.json is a UNet2DConditionModel's, not a ControlNetModel's"),
    (lambda tmp: write_controlnet_config(tmp / "cn", conditioning_embedding_out_channels=[16, 32, 96, 256]),
     ["--controlnet", "{tmp}/cn"], "--controlnet: controlnet shrinks its condition 8x"),
    (lambda tmp: tiny_pipeline("sd15").save_pretrained(tmp / "model"), ["--model", "{tmp}/model"],
     "--controlnet: needed"),
])
def test_controlnet_problems_are_refused_before_loading(tmp_path, capsys, no_weights_load, make, extra, message):
    if make is not None:
        make(tmp_path)
    guide = moving_square_gif(tmp_path / "guide.gif")
    args = ["--prompt", "a", "--control-video", str(guide), "--out", str(tmp_path / "v.gif")]
    assert cli.sample_main(args + [a.format(tmp=tmp_path) for a in extra]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err, err


def test_read_video_from_gif_and_png_folder(tmp_path):
    from zs2_kernels.video_io import read_video

    frames = read_video(moving_square_gif(tmp_path / "g.gif"), (32, 16))
    assert frames.shape == (4, 32, 16, 3) and frames.dtype == np.float32 and 0 <= frames.min() <= frames.max() <= 1
    (tmp_path / "pngs").mkdir()
    for index in range(3):
        iio.imwrite(tmp_path / "pngs" / f"{index:03d}.png", np.full((8, 8, 3), 40 * index, np.uint8))
    folder = read_video(tmp_path / "pngs", (8, 8))
    assert folder.shape == (3, 8, 8, 3) and folder[2].mean() > folder[1].mean() > folder[0].mean()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_video(tmp_path / "missing.gif", (8, 8))


def test_a_video_path_ending_with_a_separator_is_refused(tmp_path):
    from zs2_kernels.video_io import check_output_path

    with pytest.raises(ValueError, match="ends with a separator"):
        check_output_path(f"{tmp_path}/a.gif/")


def test_image_to_video_and_video_to_video_from_files(tmp_path):
    """--image (one frame, resized; frame 0 of the video) and --video --strength (--frames from its length)."""
    video = moving_square_gif(tmp_path / "in.gif")
    image = tmp_path / "first.png"
    iio.imwrite(image, iio.imread(video, index=0))
    assert cli.sample_main(["--prompt", "a handwritten digit 3", "--image", str(image), "--frames", "3", "--steps",
                            "2", "--no-progress", "--out", str(tmp_path / "i2v.gif")]) == 0
    assert read_video(tmp_path / "i2v.gif").shape[0] == 3
    assert cli.sample_main(["--prompt", "a handwritten digit 3", "--video", str(video), "--strength", "0.5",
                            "--steps", "2", "--no-progress", "--out", str(tmp_path / "v2v.gif")]) == 0
    assert read_video(tmp_path / "v2v.gif").shape[0] == 4


@pytest.mark.parametrize("extra, message", [
    (["--video", "{video}", "--frames", "3"], "--video: it has 4 frames but --frames is 3"),
    (["--video", "{video}", "--strength", "0"], "--strength: strength must be in (0, 1]"),
    (["--video", "{video}", "--strength", "1.5"], "--strength: strength must be in (0, 1], got 1.5"),
    (["--video", "{video}", "--out", "{video}"], "--out: {video} is also the --video input"),
    (["--strength", "0.5"], "--strength: needs --video"),
    (["--video", "{video}", "--strength", "0.01"], "--strength: strength 0.01 of num_inference_steps 25 runs no step"),
    (["--image", "{video}"], "--image: {video} has 4 frames; give one image"),
    (["--image", "{missing}"], "--image: image {missing} does not exist"),
    (["--image", "{video}", "--video", "{video}"], "--image/--video: give one"),
    (["--video", "{video}", "--control-video", "{video}"], "--image/--video: cannot be combined with --control-video"),
])
def test_edit_refusals_name_the_flag(tmp_path, capsys, extra, message):
    paths = {"video": moving_square_gif(tmp_path / "in.gif"), "missing": tmp_path / "missing.png"}
    out = [] if "--out" in extra else ["--out", str(tmp_path / "v.gif")]
    args = ["--prompt", "a", *out, *[a.format(**paths) for a in extra]]
    before = paths["video"].read_bytes()
    assert cli.sample_main(args) == 2
    assert paths["video"].read_bytes() == before
    assert message.format(**paths) in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["sampling", "writing"])
def test_ctrl_c_exits_130_with_one_line_and_leaves_the_output(tmp_path, capsys, monkeypatch, stage):
    """Ctrl-C printed a KeyboardInterrupt traceback (found by the new-user attack); outputs are left as they were."""
    import numpy as np

    import zs2_kernels.sampling.sampler
    import zs2_kernels.video_io

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    def frames(*args, **kwargs):
        return zs2_kernels.sampling.sampler.VideoOutput(frames=np.zeros((1, 2, 32, 32, 3), np.float32), stats={})

    monkeypatch.setattr(zs2_kernels.sampling.sampler, "sample", interrupt if stage == "sampling" else frames)
    monkeypatch.setattr(zs2_kernels.video_io, "write_video", interrupt)
    out = tmp_path / "v.gif"
    out.write_bytes(b"old")
    argv = ["--prompt", "a", "--frames", "2", "--steps", "1", "--no-progress", "--out", str(out)]
    try:
        code = cli.sample_main(argv)
    except KeyboardInterrupt:  # re-raised, it would stop the whole test session
        pytest.fail("sample_main let KeyboardInterrupt through (a traceback for the user)")
    assert code == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"interrupted while {stage}" in err and "Traceback" not in err
    assert out.read_bytes() == b"old"


def test_help_shows_defaults_but_never_none():
    """An option left out as None says in its own text what that means; argparse's '(default: None)' after it
    (e.g. '(default: per model) (default: None)') was noise."""
    from zs2_kernels.cli import sample_parser
    from zs2_kernels.evaluation.cli import ablate_parser

    for parser in (sample_parser(), ablate_parser()):
        text = " ".join(parser.format_help().split())
        assert "(default: None)" not in text and "(default: 4.0)" in text  # other defaults still shown


def test_every_option_has_help_and_one_default():
    """--fps, --search, --height, --width (and zs2-ablate's --device, --dtype) had no help text, and --scheduler's
    said its default twice ("ddim (default) ... (default: ddim)")."""
    from zs2_kernels.cli import sample_parser
    from zs2_kernels.evaluation.cli import ablate_parser

    for parser in (sample_parser(), ablate_parser()):
        for action in parser._actions:
            text = parser._get_formatter()._expand_help(action) if action.help else ""
            assert text.strip(), f"{parser.prog} {action.option_strings} has no help"
            assert text.count("default") <= 1, f"{parser.prog} {action.option_strings}: {text}"


@pytest.mark.parametrize("values, message", [
    (["zero:a cat"], "--prompt-at: expected FRAME:TEXT with FRAME an int >= 0"),
    (["0:a cat", "0:a dog"], "--prompt-at: frame 0 is given twice"),
    (["3:a cat"], "--prompt-at: a prompt dict must have keyframe 0"),
    (["0:a cat", "16:a dog"], r"--prompt-at: prompt keyframe 16 is outside the video's frames \[0, 16\)"),
])
def test_prompt_at_is_checked_before_any_weights_load(tmp_path, capsys, no_weights_load, values, message):
    flags = [flag for value in values for flag in ("--prompt-at", value)]
    assert cli.sample_main([*flags, "--out", str(tmp_path / "v.gif"), "--no-progress"]) == 2
    assert re.search(f"error: {message}", capsys.readouterr().err)


def test_prompt_at_makes_one_travelling_video(tmp_path):
    out = tmp_path / "travel.gif"
    assert cli.sample_main(["--prompt-at", "0:a handwritten digit 1", "--prompt-at", "3:a handwritten digit 7",
                            "--frames", "4", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    assert read_video(out).shape[0] == 4


def test_every_problem_is_reported_in_one_run(tmp_path, capsys, no_weights_load):
    """The attack found a bad --out hiding the other problems (--help promises one line per problem)."""
    code = cli.sample_main(["--prompt", "x", "--out", str(tmp_path / "a.avi"), "--fps", "0", "--frames", "0",
                            "--image", str(tmp_path / "missing.png"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    for flag in ("--out", "--fps", "--frames", "--image"):
        assert f"error: {flag}:" in err, (flag, err)


@pytest.mark.parametrize("part, key, value, message", [
    ("unet/config.json", "sample_size", -5, "unet/config.json sample_size must be a positive int, got -5"),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 0,
     "scheduler/scheduler_config.json num_train_timesteps must be an int >= 2, got 0"),
    # Components that each load but do not fit together: the first UNet call failed with a shape traceback.
    ("unet/config.json", "cross_attention_dim", 48,
     "unet/config.json cross_attention_dim 48 does not match text_encoder/config.json hidden_size 32"),
    ("vae/config.json", "latent_channels", 3, "unet/config.json out_channels 4 does not match vae/config.json "
                                              "latent_channels 3"),
])
def test_a_broken_model_config_is_blamed_on_the_model_not_a_flag(tmp_path, capsys, no_weights_load, part, key, value,
                                                                  message):
    """The attack found sample_size -5 reported as "--height ... got -20" and num_train_timesteps 0 as "--steps"."""
    model = tmp_path / "model"
    tiny_pipeline("sd15").save_pretrained(model, safe_serialization=True)
    config = json.loads((model / part).read_text())
    (model / part).write_text(json.dumps({**config, key: value}))
    assert cli.sample_main(["--prompt", "a", "--model", str(model), "--out", str(tmp_path / "v.gif")]) == 2
    err = capsys.readouterr().err
    assert "error: --model: model" in err and "has a broken configuration: " + message in err, err
