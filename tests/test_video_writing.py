"""Writing videos when things go wrong: a full disk, SIGTERM while ffmpeg writes, temporaries of killed runs."""

import os
import resource
import socket
import subprocess
import sys
import time

import imageio_ffmpeg
import numpy as np
import pytest

from zs2_kernels.video_io import write_video

WRITE = """
import sys
import numpy as np
from zs2_kernels.video_io import write_video

try:
    write_video(np.random.default_rng(0).random((8, 64, 64, 3), dtype=np.float32), sys.argv[1], upscale=4)
except OSError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
"""


def small_file_limit():
    """In the child: files may not grow past 4 KiB (EFBIG, as ENOSPC on a full disk: the write fails)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.mark.parametrize("name", ["v.gif", "v.mp4", "frames"])
def test_a_full_disk_gives_one_error_and_leaves_the_previous_output(tmp_path, name):
    """GIF: imageio's writer raised the error a second time from a destructor ("Exception ignored in
    PluginV3.__del__" and a traceback); MP4: ffmpeg's failure was ignored and a truncated file replaced the
    previous video."""
    out = tmp_path / name
    if name == "frames":
        out.mkdir()
    else:
        out.write_bytes(b"the previous video")
    result = subprocess.run([sys.executable, "-c", WRITE, str(out)], capture_output=True, text=True, timeout=120,
                            preexec_fn=small_file_limit)
    assert result.returncode == 1 and result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert list(out.iterdir()) == [] if name == "frames" else out.read_bytes() == b"the previous video"


# Stands in for ffmpeg: creates its output, has the writer terminated, and writes again a moment later (the real
# ffmpeg finished the file after Python had removed the temporary: a hidden file was left behind).
LATE_FFMPEG = """#!/bin/sh
[ "$1" = -y ] || exec {ffmpeg} "$@"  # queries such as -encoders go to the real one
for last in "$@"; do :; done
echo header > "$last"
kill -TERM $PPID
sleep 2
echo late > "$last"
"""


def test_sigterm_while_ffmpeg_writes_leaves_no_temporary(tmp_path):
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text(LATE_FFMPEG.format(ffmpeg=imageio_ffmpeg.get_ffmpeg_exe()))
    fake.chmod(0o755)
    out = tmp_path / "out" / "v.mp4"
    out.parent.mkdir()
    out.write_bytes(b"the previous video")
    result = subprocess.run([sys.executable, "-c", WRITE, str(out)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "IMAGEIO_FFMPEG_EXE": str(fake)})
    assert result.returncode == 143, result.stderr
    time.sleep(3)  # longer than the stand-in's sleep: a surviving writer would have written by now
    assert [p.name for p in out.parent.iterdir()] == ["v.mp4"] and out.read_bytes() == b"the previous video"


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    """kill -9 runs no clean-up: its temporaries stayed for ever. The next write into the same path removes those
    of dead processes of this host, and keeps a live writer's, another host's and other names' temporaries."""
    host = socket.gethostname()
    dead, alive = dead_pid(), os.getppid()
    stale_file = tmp_path / f".v.gif.{host}-{dead}.k2j4_x9a.tmp.gif"
    stale_file.write_bytes(b"partial")
    stale_folder = tmp_path / f".frames.{host}-{dead}.a1b2c3d4.tmp"
    (stale_folder / "sub").mkdir(parents=True)
    kept = [tmp_path / f".v.gif.{host}-{alive}.zzzzzzzz.tmp.gif",
            tmp_path / f".v.gif.otherhost-{dead}.abcdefgh.tmp.gif",
            tmp_path / f".w.gif.{host}-{dead}.abcdefgh.tmp.gif", tmp_path / "notes.txt"]
    for path in kept:
        path.write_bytes(b"keep")
    frames = np.zeros((2, 8, 8, 3), np.float32)
    write_video(frames, tmp_path / "v.gif")
    write_video(frames, tmp_path / "frames")
    assert not stale_file.exists() and not stale_folder.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["v.gif", "frames", *(p.name for p in kept)])
