"""The sample CLI: writes .gif/.mp4/PNG folders that read back with the right frame count; bad input."""

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from tiny_pipelines import tiny_pipeline

from zs2_kernels import cli


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


def test_several_prompts_write_one_file_each(model_dir, tmp_path):
    code = cli.sample_main(["--model", model_dir, "--prompt", "a cat", "--prompt", "a dog", "--frames", "2",
                            "--steps", "1", "--no-progress", "--out", str(tmp_path / "v.gif")])
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["v_0.gif", "v_1.gif"]


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


def test_failure_while_writing_leaves_no_partial_file(model_dir, tmp_path, monkeypatch):
    import imageio.v3 as iio

    def broken_write(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"GIF89a partial")
        raise OSError("disk full")

    monkeypatch.setattr(iio, "imwrite", broken_write)
    with pytest.raises(OSError, match="disk full"):
        run_cli(model_dir, tmp_path / "v.gif")
    assert list(tmp_path.iterdir()) == []


def test_script_entry_point_runs(model_dir, tmp_path):
    script = Path(__file__).resolve().parents[1] / "python" / "sample.py"
    result = subprocess.run([sys.executable, str(script), "--model", model_dir, "--prompt", "a cat", "--frames",
                             "2", "--steps", "1", "--no-progress", "--out", str(tmp_path / "v.gif")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "v.gif").is_file() and read_video(tmp_path / "v.gif").shape[0] == 2
