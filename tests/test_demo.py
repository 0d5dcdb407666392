"""The demo web app (zs2-demo): its generation functions called directly, its API through gradio_client against a
launched server, and one real browser (Debian's Chromium through Selenium) playing a video it made.

Gradio (the ``demo`` extra), gradio_client, Selenium (the ``test`` extra) and Chromium (.ci/run installs Debian's)
are needed; without them the tests that use them skip, saying what is missing. Every run is tiny (a few frames of
the embedded 32x32 model, a few steps); every wait on the server or the browser is bounded, so a hang fails.
``ZS2_DEMO_SCREENSHOT=benchmarks/results/demo-screenshot.png`` makes the browser test save the README's screenshot.
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import imageio.v3 as iio
import numpy as np
import pytest

import zs2_kernels
from zs2_kernels.demo.jobs import Cancelled, Demo, DemoError
from zs2_kernels.demo.outputs import ResultFolder
from zs2_kernels.demo.settings import PRESETS, Settings
from zs2_kernels.video_io import write_video

ROOT = Path(__file__).resolve().parents[1]
HAS_GRADIO = importlib.util.find_spec("gradio") is not None and importlib.util.find_spec("gradio_client") is not None
needs_gradio = pytest.mark.skipif(not HAS_GRADIO, reason="Gradio is missing: pip install -e \".[test]\" (CI has it)")
TINY = Settings(num_frames=2, num_inference_steps=2)
#: Seconds any one wait on the server or the browser may take before the test fails instead of hanging.
WAIT = 180


@pytest.fixture(scope="module")
def demo():
    made = Demo.load(None)
    yield made
    made.close()


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    """Small inputs as a visitor uploads them: a 3-frame GIF of a moving bar, a PNG of a bar, a text file called
    .gif, and a 4-frame GIF."""
    folder = tmp_path_factory.mktemp("uploads")
    frames = np.zeros((4, 32, 32, 3), np.float32)
    for index in range(4):
        frames[index, 6:26, 10 + 3 * index:14 + 3 * index] = 1.0
    write_video(frames[:3], folder / "bar.gif", fps=4)
    write_video(frames, folder / "bar4.gif", fps=4)
    iio.imwrite(folder / "bar.png", (frames[0] * 255).astype(np.uint8))
    (folder / "notes.gif").write_text("not a video")
    return folder


class UnetCalls:
    """Counts the UNet's calls; ``after(n, action)`` runs ``action`` once, right after call n returns (mid-run, as a
    click from another thread lands)."""

    def __init__(self, unet):
        self.count, self.actions = 0, {}
        self.handle = unet.register_forward_hook(self._called)

    def _called(self, module, args, output):
        self.count += 1
        if self.count in self.actions:
            self.actions.pop(self.count)()

    def after(self, call: int, action) -> None:
        self.actions[call] = action


# The generation functions, called directly.


def test_text_to_video_writes_mp4_and_gif_and_reports_progress_and_stats(demo):
    seen = []
    result = demo.text_to_video("a handwritten digit 3", TINY, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]
    mp4, gif = iio.imread(result.video, plugin="FFMPEG"), iio.imread(result.gif, index=None)
    assert mp4.shape[0] == gif.shape[0] == 2 and gif.shape[1] >= 256  # 32 px upscaled to be viewable
    assert result.stats["backend"] == "torch" and len(result.stats["achieved_kl"][0]) == 1


def test_guided_video_takes_the_guide_frames_and_runs_the_controlnet(demo, uploads):
    calls = []
    handle = demo.controlnet.register_forward_hook(lambda *args: calls.append(1))
    try:
        result = demo.guided_video("a handwritten digit 1", uploads / "bar.gif", TINY)
    finally:
        handle.remove()
    assert result.stats["num_frames"] == 3 and len(calls) == 2  # the guide's frames; one ControlNet call a step


def test_image_and_video_starts_and_prompt_travel(demo, uploads):
    image = demo.image_to_video("a handwritten digit 1", uploads / "bar.png", TINY)
    assert image.stats["edit"] == "image" and image.stats["num_frames"] == 2
    seen = []
    video = demo.video_to_video("a handwritten digit 8", uploads / "bar.gif", Settings(num_inference_steps=4),
                                strength=0.5, progress=lambda done, total: seen.append((done, total)))
    assert video.stats["edit"] == "video" and video.stats["num_frames"] == 3 and video.stats["steps_run"] == 2
    assert seen == [(1, 2), (2, 2)]  # the progress bar counts the steps strength runs
    travel = demo.prompt_travel("0: a handwritten digit 1\n3: a handwritten digit 7",
                                Settings(num_frames=4, num_inference_steps=1))
    assert travel.stats["num_frames"] == 4 and iio.imread(travel.gif, index=None).shape[0] == 4


@pytest.mark.parametrize("call, label, words", [
    (lambda d, u: d.text_to_video("  ", TINY), "Prompt:", "non-empty"),
    (lambda d, u: d.text_to_video(None, TINY), "Prompt:", "non-empty"),  # the attack: ran the default prompt
    (lambda d, u: d.text_to_video("x", Settings(num_frames=0)), "Frames:", ">= 1"),
    (lambda d, u: d.text_to_video("x", Settings(num_frames=10_000)), "Frames:", "at most 128"),
    (lambda d, u: d.text_to_video("x", Settings(noise_lambda=-1.0)), "λ:", "noise_lambda"),
    (lambda d, u: d.text_to_video("x", Settings(momentum=2.0)), "μ:", "momentum"),
    (lambda d, u: d.text_to_video("x", Settings(seed=-1)), "Seed:", "2**63"),
    (lambda d, u: d.text_to_video("x", Settings(num_inference_steps=5000)), "Steps:", "at most"),
    (lambda d, u: d.text_to_video("x", Settings(scheduler="nope")), "Scheduler:", "ddim"),
    (lambda d, u: d.prompt_travel("3: a cat", TINY), "Keyframes:", "keyframe 0"),
    (lambda d, u: d.prompt_travel("zero: a cat", TINY), "Keyframes:", "FRAME:TEXT"),
    (lambda d, u: d.prompt_travel("0: a\n9: b", TINY), "Keyframes:", "num_frames"),
    (lambda d, u: d.video_to_video("x", u / "bar.gif", TINY, strength=0.0), "Strength:", "(0, 1]"),
    (lambda d, u: d.image_to_video("x", None, TINY), "Image:", "upload a file"),
    (lambda d, u: d.image_to_video("x", u / "notes.gif", TINY), "Image:", "not an image or video"),
    (lambda d, u: d.image_to_video("x", u / "bar.gif", TINY), "Image:", "3 frames"),
    (lambda d, u: d.guided_video("x", u / "gone.gif", TINY), "Guide video:", "upload it again"),
])
def test_bad_input_is_refused_naming_its_field(demo, uploads, call, label, words):
    with pytest.raises(DemoError) as refused:
        call(demo, uploads)
    message = str(refused.value)
    assert message.startswith(label) and words in message, message
    assert "Traceback" not in message and str(uploads) not in message  # the upload named by its name, not its path


def test_uploads_over_the_limits_are_refused_before_decoding(demo, uploads, monkeypatch):
    decoded = []
    monkeypatch.setattr("zs2_kernels.demo.inputs.read_video", lambda *args: decoded.append(args))
    monkeypatch.setattr(demo, "max_frames", 3)
    with pytest.raises(DemoError, match="Video: .*bar4.gif has more than 3 frames; at most 3"):
        demo.video_to_video("x", uploads / "bar4.gif", TINY)
    monkeypatch.setattr(demo, "max_upload_bytes", 100)
    with pytest.raises(DemoError, match="Guide video: bar.gif has 313 bytes; uploads may have at most 100 bytes"):
        demo.guided_video("x", uploads / "bar.gif", TINY)
    monkeypatch.setattr("zs2_kernels.demo.inputs.MAX_DECODED_BYTES", 32 * 32 * 3 * 2)
    monkeypatch.setattr(demo, "max_upload_bytes", 2**20)
    with pytest.raises(DemoError, match="3 frames of 32x32 pixels"):
        demo.guided_video("x", uploads / "bar.gif", TINY)
    assert decoded == []


def test_too_many_frames_for_memory_is_refused_naming_frames(demo, monkeypatch):
    calls = UnetCalls(demo.pipe.unet)
    monkeypatch.setattr("zs2_kernels.sampling.memory.available_memory", lambda device: 2**20)
    try:
        with pytest.raises(DemoError, match=r"^Frames: too many for memory: this run needs about .* GiB"):
            demo.text_to_video("x", TINY)
    finally:
        calls.handle.remove()
    assert calls.count == 0


def test_a_failed_write_is_reported_to_the_page(demo, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("zs2_kernels.demo.outputs.write_video", full_disk)
    with pytest.raises(DemoError, match="^Writing the video failed: No space left on device$"):
        demo.text_to_video("a handwritten digit 2", Settings(num_frames=1, num_inference_steps=1))


def run_in_thread(function):
    """Run ``function`` in a thread; returns (thread, outcome): outcome holds its result or exception."""
    outcome = {}

    def target():
        try:
            outcome["result"] = function()
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_cancel_stops_the_run_within_one_step_and_restores_the_model(demo):
    """A cancel landing from another thread during step 2 (of 8) lets that step finish and stops the run there:
    no UNet call after it, the run raises Cancelled, another session's cancel does nothing, the model is given back
    (no momentum attention, no hook) and the next run works."""
    calls = UnetCalls(demo.pipe.unet)
    landed, go_on = threading.Event(), threading.Event()
    other = []

    def click_cancel():  # the worker, inside call 2, waits while the test thread clicks
        landed.set()
        assert go_on.wait(WAIT)

    calls.after(2, click_cancel)
    try:
        thread, outcome = run_in_thread(lambda: demo.text_to_video("a handwritten digit 4", Settings(
            num_frames=2, num_inference_steps=8), session="visitor"))
        assert landed.wait(WAIT)
        other.append(demo.cancel("someone else"))
        assert demo.cancel("visitor")
        go_on.set()
        thread.join(WAIT)
    finally:
        calls.handle.remove()
    assert not thread.is_alive() and other == [False]
    assert isinstance(outcome.get("error"), Cancelled) and outcome["error"].steps == 2 and calls.count == 2
    assert not zs2_kernels.is_installed(demo.pipe.unet) and not demo.pipe.unet._forward_pre_hooks
    assert not demo.cancel("visitor")  # its run is gone
    assert demo.text_to_video("a handwritten digit 4", TINY).stats["num_frames"] == 2


def test_cancel_also_stops_image_inversion_before_any_step(demo, uploads):
    """Image-to-video inverts the image (UNet calls before the first denoising step): a cancel then stops it at the
    next UNet call."""
    calls = UnetCalls(demo.pipe.unet)
    calls.after(1, lambda: demo.cancel("visitor"))
    try:
        with pytest.raises(Cancelled) as cancelled:
            demo.image_to_video("a handwritten digit 1", uploads / "bar.png", Settings(num_frames=2,
                                                                                       num_inference_steps=6),
                                session="visitor")
    finally:
        calls.handle.remove()
    assert cancelled.value.steps == 0 and calls.count == 1


def test_result_files_are_removed_as_runs_age_and_when_the_demo_closes():
    folder = ResultFolder(keep=2)
    frames = np.zeros((2, 8, 8, 3), np.float32)
    written = [folder.write(frames, f"v{index}") for index in range(3)]
    assert not written[0][0].exists() and all(path.is_file() for paths in written[1:] for path in paths)
    assert [path.suffix for path in written[2]] == [".mp4", ".gif"]
    folder.close()
    assert not folder.root.exists()


def readme_commands() -> list[dict]:
    """The README's zs2-sample commands (continued lines joined), parsed by its parser, without --out."""
    import shlex

    from zs2_kernels.cli import sample_parser

    commands = []
    for line in (ROOT / "README.md").read_text().replace("\\\n", " ").splitlines():
        if line.lstrip().startswith(("zs2-sample ", "python3 -m venv")) and "zs2-sample --prompt" in line:
            parsed = vars(sample_parser().parse_args(shlex.split(line.split("zs2-sample", 1)[1])))
            commands.append({key: value for key, value in parsed.items() if key != "out"})
    return commands


def test_presets_are_the_readme_examples_and_defaults_the_command_line_ones():
    """Each preset's arguments are one of the README's zs2-sample commands (prompt travel: python/travel_example.py's
    keyframes and settings, the README's GIF), its example input is found in this checkout, and the knobs start at
    zs2-sample's defaults."""
    from zs2_kernels.cli import sample_parser
    from zs2_kernels.demo.inputs import parse_travel

    commands = readme_commands()
    assert len(commands) >= 4
    for preset in PRESETS:
        if preset.tab != "travel":
            arguments = {key: value for key, value in vars(preset.parsed()).items() if key != "out"}
            assert arguments in commands, f"{preset.name}: {preset.command} is not one of the README's commands"
            assert preset.tab == "text" or preset.upload() is not None
    travel = next(preset for preset in PRESETS if preset.tab == "travel")
    assert parse_travel(travel.prompt()) == {0: "a handwritten digit 1", 47: "a handwritten digit 7"}
    chosen = travel.settings()
    assert (chosen.num_frames, chosen.num_inference_steps, chosen.seed, chosen.frame_chunk) == (48, 20, 1, 16)
    assert Settings.from_command(sample_parser().parse_args(["--prompt", "x", "--out", "x.gif"])) == Settings()


def test_the_core_and_the_demo_functions_import_without_gradio_and_the_command_names_the_extra(monkeypatch, capsys):
    probe = ("import sys, zs2_kernels, zs2_kernels.cli, zs2_kernels.demo.jobs, zs2_kernels.demo.cli; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client', 'selenium')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]
    from zs2_kernels.demo import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert cli.demo_main([]) == 2
    assert 'pip install -e ".[demo]"' in capsys.readouterr().err


def test_the_command_binds_localhost_without_a_public_link_unless_asked(monkeypatch):
    """zs2-demo's defaults reach Gradio's launch: 127.0.0.1, no share link, system fonts only, analytics off; --host,
    --port, --share, --model and --controlnet are passed on; a bad port is refused."""
    gr = pytest.importorskip("gradio", reason="Gradio is missing: pip install -e \".[test]\" (CI has it)")
    from zs2_kernels.demo import cli

    loaded, launched = [], []

    class FakeDemo:
        @classmethod
        def load(cls, model, **options):
            loaded.append((model, options))
            return cls()

        def close(self):
            pass

    class FakeApp:
        def launch(self, **options):
            launched.append(options)

    monkeypatch.setattr("zs2_kernels.demo.jobs.Demo", FakeDemo)
    monkeypatch.setattr("zs2_kernels.demo.app.build_app", lambda demo: FakeApp())
    assert cli.demo_main(["--device", "cpu"]) == 0
    assert cli.demo_main(["--host", "0.0.0.0", "--port", "9000", "--share", "--device", "cpu", "--dtype", "bf16",
                          "--model", "m", "--controlnet", "c"]) == 0
    first, second = launched
    assert (first["server_name"], first["server_port"], first["share"]) == ("127.0.0.1", 7860, False)
    assert (second["server_name"], second["server_port"], second["share"]) == ("0.0.0.0", 9000, True)
    assert loaded[1][0] == "m" and loaded[1][1]["controlnet"] == "c" and str(loaded[1][1]["dtype"]) == "torch.bfloat16"
    theme = first["theme"]
    assert not any(isinstance(font, gr.themes.GoogleFont) for font in [*theme._font, *theme._font_mono])
    assert os.environ.get("GRADIO_ANALYTICS_ENABLED") == "False"
    assert cli.demo_main(["--port", "0"]) == 2 and len(launched) == 2


# The Gradio layer: handlers, events, and the API of a launched server.


@needs_gradio
def test_the_script_serves_the_page_and_sigterm_removes_its_files(tmp_path):
    """python python/demo.py serves the page on 127.0.0.1; SIGTERM (sent once the page answers) stops it after its
    clean-up: its result folder is gone."""
    import signal
    import urllib.request

    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, str(ROOT / "python" / "demo.py"), "--port", str(port), "--device",
                               "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        for line in server.stdout:  # ends if the server dies; the marker comes once the model has loaded
            lines.append(line)
            if "zs2-demo: serving" in line:
                break
        assert lines and f"serving http://127.0.0.1:{port}" in lines[-1], "".join(lines)
        page = None
        for _ in range(WAIT):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                threading.Event().wait(1)
        assert page is not None and "<html" in page
        assert len(list(tmp_path.glob("zs2-demo-*"))) == 1  # its result folder, while it serves
        assert len(list(tmp_path.glob("zs2-gradio-cache-*"))) == 1  # Gradio's uploads and served files
        server.send_signal(signal.SIGTERM)
        assert server.wait(WAIT) == 128 + signal.SIGTERM  # stopped by the signal, after its clean-up
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert list(tmp_path.glob("zs2-demo-*")) == [] and list(tmp_path.glob("zs2-gradio-cache-*")) == []


def test_a_port_or_host_that_cannot_be_served_is_refused_before_loading(monkeypatch, capsys):
    """The attack found a taken port reported after the model loaded, under a 'serving' line, as Gradio's 'Cannot
    find empty port'; and an unknown --host as a port problem."""
    from zs2_kernels.demo import cli

    monkeypatch.setattr("zs2_kernels.demo.jobs.Demo.load", lambda *a, **k: pytest.fail("loaded the model"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.demo_main(["--port", str(port), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}:" in err and "choose another --port" in err
    assert cli.demo_main(["--host", "no-such-host.invalid", "--device", "cpu"]) == 1
    assert "--host 'no-such-host.invalid' is not an address of this machine" in capsys.readouterr().err


def test_closing_stops_a_running_job_within_a_step():
    """zs2-demo's clean-up on Ctrl-C/SIGTERM: the attack found the process aborting ('terminate called without an
    active exception') when it exited while a run was inside the UNet. close() cancels every run and waits."""
    own = Demo.load(None, device="cpu")
    started = threading.Event()
    thread, outcome = run_in_thread(lambda: own.text_to_video(
        "a handwritten digit 3", Settings(num_frames=2, num_inference_steps=200), session="a",
        progress=lambda done, total: started.set()))
    assert started.wait(WAIT)
    own.close()
    assert not thread.is_alive() or thread.join(WAIT) is None
    assert isinstance(outcome.get("error"), Cancelled) and outcome["error"].steps < 200, outcome


@needs_gradio
def test_handlers_turn_every_failure_into_a_toast(demo, monkeypatch):
    import gradio as gr

    from zs2_kernels.demo.app import Handlers

    handlers = Handlers(demo)
    arguments = dict(num_frames=2, num_inference_steps=2, noise_lambda=0.01, momentum=0.98, seed=0)
    with pytest.raises(gr.Error, match="Prompt: prompt must contain non-empty strings"):
        handlers.text_to_video("", **arguments)
    with pytest.raises(gr.Error, match="Seed: empty"):
        handlers.text_to_video("x", **{**arguments, "seed": None})

    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(demo, "text_to_video", fail)
    with pytest.raises(gr.Error, match=r"The run failed \(RuntimeError: a bug\)") as failed:
        handlers.text_to_video("x", **arguments)
    assert failed.value.title == "Failed"
    monkeypatch.setattr(demo, "text_to_video", lambda *args, **kwargs: (_ for _ in ()).throw(Cancelled(3)))
    with pytest.raises(gr.Error, match="Cancelled: cancelled after 3 denoising steps") as cancelled:
        handlers.text_to_video("x", **{**arguments, "num_frames": 2.0})
    assert cancelled.value.title == "Cancelled"


@needs_gradio
def test_every_generating_event_shares_one_concurrency_slot(demo):
    import gradio as gr

    from zs2_kernels.demo.app import GENERATE, build_app

    app = build_app(demo)
    generating = [fn for fn in app.fns.values() if any(isinstance(block, gr.Video) for block in fn.outputs)]
    assert sorted(fn.api_name for fn in generating) == sorted(["text_to_video", "guided_video", "image_to_video",
                                                               "video_to_video", "prompt_travel"])
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in generating} == {(GENERATE, 1)}
    others = [fn for fn in app.fns.values() if fn not in generating]
    assert all(fn.concurrency_id != GENERATE for fn in others) and app.analytics_enabled is False


@needs_gradio
def test_choosing_a_preset_fills_its_tab(demo):
    """Each tab's preset fills its prompt, its example upload (the README's file), the strength and the settings."""
    import gradio as gr

    from zs2_kernels.demo.app import build_app

    app = build_app(demo)
    for preset in PRESETS:
        event = next(fn for fn in app.fns.values() if [getattr(block, "elem_id", None) for block in fn.inputs]
                     == [f"{preset.tab}-preset"])
        values = event.fn(preset.name)
        labels = [block.label for block in event.outputs]
        filled = dict(zip(labels, values))
        assert filled[labels[0]] == preset.prompt()
        if preset.tab in ("guided", "image", "video"):
            assert Path(values[1]) == preset.upload() and Path(values[1]).is_file()
        if preset.tab == "video":
            assert filled["Strength (strength)"] == 0.8
        chosen = preset.settings()
        assert filled["Steps (num_inference_steps)"] == chosen.num_inference_steps
        assert filled["Seed (seed)"] == chosen.seed and filled["Chunk (frame_chunk)"] == (chosen.frame_chunk or 0)
        assert filled.get("Frames (num_frames)", chosen.num_frames) == chosen.num_frames
        assert ("Frames (num_frames)" in filled) == (preset.tab in ("text", "image", "travel"))
    assert isinstance(event.outputs[0], gr.Textbox)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo):
    """The app, launched on a free port of 127.0.0.1 (its defaults small: the browser test keeps them)."""
    if not HAS_GRADIO:
        pytest.skip("Gradio is missing: pip install -e \".[test]\" (CI has it)")
    from zs2_kernels.demo.app import build_app, launch_options

    app = build_app(demo, defaults=Settings(num_frames=8, num_inference_steps=8))
    app.launch(prevent_thread_lock=True, quiet=True, **launch_options(port=_free_port()))
    yield app
    app.close()


@pytest.fixture
def client(server, tmp_path):
    from gradio_client import Client

    return Client(server.local_url, verbose=False, download_files=str(tmp_path))


SETTINGS = dict(num_inference_steps=2, noise_lambda=0.01, momentum=0.98, seed=0)


def test_api_text_to_video_by_keyword_returns_the_video_file(client):
    video, gif, table, kl, alpha = client.predict(prompt="a handwritten digit 3", num_frames=2, **SETTINGS,
                                                  api_name="/text_to_video")
    assert Path(video).suffix == ".mp4" and iio.imread(video, plugin="FFMPEG").shape[0] == 2
    assert iio.imread(gif, index=None).shape[0] == 2
    assert "| backend | torch |" in table and kl["data"] == [[0, pytest.approx(0.01)]] and len(alpha["data"]) == 1


def test_api_guided_image_video_and_travel_tabs(client, uploads):
    from gradio_client import handle_file

    guided = client.predict(prompt="a handwritten digit 1", control_video=handle_file(str(uploads / "bar.gif")),
                            digit_condition=True, conditioning_scale=1.0, **SETTINGS, api_name="/guided_video")
    assert iio.imread(guided[0], plugin="FFMPEG").shape[0] == 3
    image = client.predict(prompt="a handwritten digit 1", image=handle_file(str(uploads / "bar.png")), num_frames=2,
                           **SETTINGS, api_name="/image_to_video")
    assert "| steps run | 2 |" in image[2]
    video = client.predict(prompt="a handwritten digit 8", video=handle_file(str(uploads / "bar.gif")),
                           strength=0.5, **SETTINGS, api_name="/video_to_video")
    assert "| steps run | 1 |" in video[2] and iio.imread(video[1], index=None).shape[0] == 3
    travel = client.predict(keyframes="0: a handwritten digit 1\n2: a handwritten digit 7", num_frames=3, **SETTINGS,
                            api_name="/prompt_travel")
    assert iio.imread(travel[0], plugin="FFMPEG").shape[0] == 3


def test_api_errors_name_the_field_and_the_server_keeps_serving(client, uploads):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Prompt: prompt must contain non-empty strings"):
        client.predict(prompt="", num_frames=2, **SETTINGS, api_name="/text_to_video")
    with pytest.raises(AppError, match="Image: cannot read image notes.gif: not an image or video"):
        client.predict(prompt="x", image=handle_file(str(uploads / "notes.gif")), num_frames=2, **SETTINGS,
                       api_name="/image_to_video")
    with pytest.raises(AppError, match="Seed: seed must be an int"):  # the attack: 1.5 ran as seed 2
        client.predict(prompt="x", num_frames=2, **{**SETTINGS, "seed": 1.5}, api_name="/text_to_video")
    assert client.predict(prompt="a handwritten digit 3", num_frames=1, **SETTINGS, api_name="/text_to_video")[0]


def test_api_refuses_files_that_were_not_uploaded(server, demo):
    """A file input naming a server path (not an upload) is refused before any run: the page takes files only
    through its upload widgets."""
    import httpx

    calls = UnetCalls(demo.pipe.unet)
    server_file = {"path": str(ROOT / "benchmarks" / "results" / "guided-guide.gif"),
                   "meta": {"_type": "gradio.FileData"}}
    data = ["a handwritten digit 1", server_file, True, 1.0, 2, 0.01, 0.98, 0, 4.0, "exact", "ddim", 0, True, True]
    try:
        with httpx.Client(base_url=server.local_url, timeout=WAIT) as http:
            event = http.post("gradio_api/call/guided_video", json={"data": data}).json()["event_id"]
            events = http.get(f"gradio_api/call/guided_video/{event}").text
    finally:
        calls.handle.remove()
    assert "event: error" in events and "event: complete" not in events and calls.count == 0


def test_api_cancel_stops_a_running_job(client, demo):
    """Cancel through the API (the job's session) lands while step 2 of 100 runs: the run stops after that step."""
    from gradio_client.exceptions import AppError

    calls = UnetCalls(demo.pipe.unet)
    reached, cancelled = threading.Event(), threading.Event()
    calls.after(2, lambda: (reached.set(), cancelled.wait(WAIT)))  # step 2 holds until the cancel has been sent
    try:
        job = client.submit(prompt="a handwritten digit 3", num_frames=1, **{**SETTINGS, "num_inference_steps": 100},
                            api_name="/text_to_video")
        assert reached.wait(WAIT)
        client.predict(api_name="/cancel")
        cancelled.set()
        with pytest.raises(AppError, match="Cancelled: cancelled after 2 denoising steps"):
            job.result(timeout=WAIT)
    finally:
        cancelled.set()
        calls.handle.remove()
    assert calls.count == 2


# One real browser.


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Debian's Chromium under Selenium, headless and offline, recording the page's network requests; skips (before
    any server starts) when Selenium or the browser is missing."""
    pytest.importorskip("selenium", reason="Selenium is missing: pip install -e \".[test]\" (CI has it)")
    for program in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(program).exists():
            pytest.skip(f"{program} is missing: apt-get install chromium chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager never downloads a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tmp_path / "chromium-profile"
    for flag in ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-gpu", "--window-size=1400,1300",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


VIDEO_STATE = ("const v = document.querySelector('#text-video video');"
               "return v ? {ready: v.readyState, error: v.error && v.error.code, time: v.currentTime, src: v.src} "
               ": null;")


def test_browser_plays_the_video_shows_stats_and_stays_on_this_machine(browser, server, tmp_path):
    """Open the page, type a prompt, click Generate: the MP4 plays (ready, no error, time advancing), the stats panel
    holds the table and the curves, and every request the page made went to 127.0.0.1."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(server.local_url)
    prompt = WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, "#text-prompt textarea"))
    prompt.clear()
    prompt.send_keys("a handwritten digit 5")
    driver.find_element(By.ID, "text-generate").click()
    state = WebDriverWait(driver, WAIT).until(
        lambda d: (s := d.execute_script(VIDEO_STATE)) and s["ready"] >= 2 and s["time"] > 0 and s)
    assert state["error"] is None and state["src"].endswith(".mp4")
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script(VIDEO_STATE)["time"] != state["time"])
    assert driver.execute_script(VIDEO_STATE)["error"] is None
    table = driver.find_element(By.ID, "text-stats-table").text
    assert "backend" in table and "torch" in table and "mean achieved KL" in table and "denoise" in table
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#text-kl canvas, #text-kl svg"))
    driver.save_screenshot(str(tmp_path / "demo.png"))
    requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    urls += [m["params"]["url"] for m in requests if m["method"] == "Network.webSocketCreated"]
    network = [url for url in urls if urlparse(url).scheme in ("http", "https", "ws", "wss")]
    assert any(url.endswith(".mp4") for url in network) and any("queue/join" in url for url in network)
    assert [url for url in network if urlparse(url).hostname != "127.0.0.1"] == []
    assert {urlparse(url).scheme for url in urls} <= {"http", "ws", "data", "blob", "chrome", "about"}
    if os.environ.get("ZS2_DEMO_SCREENSHOT"):
        shutil.copyfile(tmp_path / "demo.png", os.environ["ZS2_DEMO_SCREENSHOT"])
