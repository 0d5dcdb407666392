"""The demo's generation functions: plain Python on one loaded pipeline, testable without Gradio.

Every tab's function builds a :class:`~zs2_kernels.sampling.SampleRequest` (so every argument is checked once, by the
same checks as ``sample_video``'s, and a bad one is reported naming its field), runs it with
:func:`zs2_kernels.sampling.sample` and writes the video files. Runs take turns (a lock: sampling installs momentum
attention on the shared UNet, and a second installation is refused). A run stops within one denoising step of a
cancel: its session's flag is checked in ``callback_on_step_end`` (and before every UNet call, which also covers
image-to-video's inversion), raising :class:`Cancelled` out of the sampler, whose clean-up restores the model.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path

from ..cli import named_problem
from ..sampling import SampleRequest, sample
from ..sampling.shapes import pipeline_resolution
from .inputs import MAX_FRAMES, MAX_UPLOAD_BYTES, parse_travel, read_upload
from .outputs import ResultFolder
from .settings import LABELS, Settings

#: The errors a run reports to the page: bad arguments, unreadable inputs, too little memory, a diverged run.
RUN_ERRORS = (ValueError, TypeError, OSError, MemoryError, FloatingPointError)


class Cancelled(Exception):
    """The visitor cancelled the run; ``steps`` denoising steps had finished."""

    def __init__(self, steps: int):
        super().__init__(f"cancelled after {steps} denoising step{'' if steps == 1 else 's'}; nothing was written")
        self.steps = steps


class DemoError(ValueError):
    """A problem to show in the page: names the field and what it accepts (never a traceback)."""


@dataclass(frozen=True)
class Result:
    """A finished run: the MP4 (played in the page), the GIF (to download) and sample_video's stats."""

    video: Path
    gif: Path
    stats: dict


def _labelled(error: Exception, default: str, labels: dict) -> DemoError:
    """``error`` as a DemoError whose message starts with the label of the field it is about (``labels``: argument
    names -> labels; ``default`` when it names no argument)."""
    if isinstance(error, MemoryError):
        return DemoError(f"{labels['num_frames']}: too many for memory: {error}")
    return DemoError(named_problem(str(error), labels, default))


class Demo:
    """One loaded pipeline and the runs the app makes on it.

    Args:
        pipe: a loaded diffusers pipeline (:func:`zs2_kernels.load_pipeline`).
        controlnet: the ``ControlNetModel`` guided runs use, on the pipeline's device in its dtype, or None (the
            guided tab then refuses, saying ``controlnet_problem``). :meth:`load` finds the pipeline's own or the
            embedded model's.
        max_frames, max_upload_bytes: the limits on frame counts and uploads.
    """

    def __init__(self, pipe, *, controlnet=None, controlnet_problem: str = "start zs2-demo with --controlnet",
                 max_frames: int = MAX_FRAMES, max_upload_bytes: int = MAX_UPLOAD_BYTES):
        from ..embedded import embedded_model_path

        self.pipe = pipe
        self.embedded = Path(str(getattr(pipe, "name_or_path", ""))).resolve() == embedded_model_path()
        self.controlnet, self.controlnet_problem = controlnet, controlnet_problem
        self.size = pipeline_resolution(pipe, None, None)
        self.max_frames, self.max_upload_bytes = max_frames, max_upload_bytes
        self.files = ResultFolder()
        self._lock = threading.Lock()
        self._cancels: dict[str, set[threading.Event]] = {}  # each session's runs, queued or running
        self._cancels_lock = threading.Lock()

    @classmethod
    def load(cls, model=None, *, controlnet=None, device=None, dtype=None, **options) -> Demo:
        """The demo of ``model`` (None: the embedded one; a folder or hub id) on ``device`` in ``dtype``, with
        ``controlnet`` (a folder or hub id; None: the pipeline's own, or the embedded model's digit ControlNet)
        loaded once and checked against the UNet. Both load on the CPU and move together: a ControlNet loaded from
        a folder lands on the CPU, and guided sampling wants it beside the UNet."""
        from .._checks import check_device
        from ..loading import load_pipeline
        from ..sampling.control import load_controlnets

        pipe = load_pipeline(model, dtype=dtype, progress=False)
        net, problem = None, None
        try:
            net = load_controlnets(controlnet, pipe, 1)
        except ValueError as error:
            if controlnet is not None:
                raise
            problem = f"{error}; start zs2-demo with --controlnet FOLDER_OR_HUB_ID"
        if device is not None:
            pipe.to(check_device(device))
            if net is not None:
                net.to(check_device(device))
        return cls(pipe, controlnet=net, **({} if problem is None else {"controlnet_problem": problem}), **options)

    def close(self, timeout: float = 30.0) -> None:
        """Stop every run (within one denoising step: a server that exits while a worker thread is inside the
        UNet aborts the process), wait for it up to ``timeout`` seconds, then remove the result files."""
        with self._cancels_lock:
            events = [event for session in self._cancels.values() for event in session]
        for event in events:
            event.set()
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
        self.files.close()

    def cancel(self, session: str = "") -> bool:
        """Stop ``session``'s runs (waiting for their turn or running) within one denoising step; False when it has
        none."""
        with self._cancels_lock:
            events = list(self._cancels.get(session, ()))
        for event in events:
            event.set()
        return bool(events)

    # The tabs. ``session``: whose cancel stops the run; ``progress(done, total)``: called after every step.

    def text_to_video(self, prompt: str, settings: Settings = Settings(), *, session: str = "",
                      progress=None) -> Result:
        """A video of ``prompt``."""
        return self._run("text-to-video", session, progress, settings, prompt=prompt)

    def guided_video(self, prompt: str, control_video, settings: Settings = Settings(), *,
                     digit_condition: bool | None = None, conditioning_scale: float = 1.0, session: str = "",
                     progress=None) -> Result:
        """A video of ``prompt`` whose every frame is steered by the uploaded ``control_video``'s frame (all its
        frames: ``settings.num_frames`` is not used). ``digit_condition`` (default: with the embedded model) turns
        plain digit frames into the embedded ControlNet's condition first."""
        if self.controlnet is None:
            raise DemoError(f"Guide video: this model has no ControlNet to guide with: {self.controlnet_problem}")
        frames = self._upload(control_video, "Guide video")
        if self.embedded if digit_condition is None else digit_condition:
            import torch

            from ..embedded import digit_condition as condition

            frames = condition(torch.from_numpy(frames).movedim(-1, 1)).movedim(1, -1).numpy()
        settings = dataclasses.replace(settings, num_frames=len(frames))
        return self._run("guided", session, progress, settings, prompt=prompt, control_video=frames,
                         controlnet=self.controlnet, controlnet_conditioning_scale=conditioning_scale)

    def image_to_video(self, prompt: str, image, settings: Settings = Settings(), *, session: str = "",
                       progress=None) -> Result:
        """A video of ``prompt`` starting from the uploaded ``image`` (frame 0 is the image)."""
        frames = self._upload(image, "Image")
        if len(frames) != 1:
            raise DemoError(f"Image: the upload has {len(frames)} frames; give one image (a video to edit goes to the "
                            "video-to-video tab)")
        return self._run("image-to-video", session, progress, settings, prompt=prompt, image=frames[0])

    def video_to_video(self, prompt: str, video, settings: Settings = Settings(), *, strength: float = 0.8,
                       session: str = "", progress=None) -> Result:
        """The uploaded ``video`` edited towards ``prompt`` (all its frames), noised by ``strength`` first."""
        frames = self._upload(video, "Video")
        settings = dataclasses.replace(settings, num_frames=len(frames))
        return self._run("video-to-video", session, progress, settings, prompt=prompt, video=frames,
                         strength=strength)

    def prompt_travel(self, keyframes: str, settings: Settings = Settings(), *, session: str = "",
                      progress=None) -> Result:
        """One video whose prompt travels: ``keyframes`` is one ``FRAME: TEXT`` per line (frame 0 first)."""
        try:
            prompt = parse_travel(keyframes)
        except ValueError as error:
            raise DemoError(f"Keyframes: {str(error).removeprefix('keyframes: ')}") from None
        return self._run("prompt-travel", session, progress, settings, labels={**LABELS, "prompt": "Keyframes"},
                         prompt=prompt)

    # The shared run.

    def _upload(self, path, label: str):
        try:
            return read_upload(path, self.size, label.lower(), max_frames=self.max_frames,
                               max_bytes=self.max_upload_bytes)
        except ValueError as error:
            raise DemoError(f"{label}: {error}") from None

    def _request(self, settings: Settings, arguments: dict, labels: dict) -> SampleRequest:
        """The checked request, refused naming the field."""
        if not isinstance(settings, Settings):
            raise TypeError(f"settings must be a zs2_kernels.demo.settings.Settings, got {type(settings).__name__}")
        prompt = arguments.get("prompt")
        if not isinstance(prompt, (str, dict)):  # the sampler would read None as its default prompt
            raise DemoError(f"{labels.get('prompt', 'Prompt')}: prompt must be a non-empty text, got {prompt!r}")
        if isinstance(settings.num_frames, int) and settings.num_frames > self.max_frames:
            raise DemoError(f"{labels['num_frames']}: num_frames must be at most {self.max_frames} in this app, got "
                            f"{settings.num_frames}")
        try:
            return SampleRequest(**settings.arguments(), **arguments, progress=False)
        except RUN_ERRORS as error:
            raise _labelled(error, labels["prompt"], labels) from None

    def _run(self, kind: str, session: str, progress, settings: Settings, labels: dict = LABELS,
             **arguments) -> Result:
        cancelled, steps = threading.Event(), [0]

        def check(*_):
            if cancelled.is_set():
                raise Cancelled(steps[0])

        def step_end(pipe, step, timestep, tensors):
            steps[0] = step + 1
            if progress is not None:
                progress(step + 1, total)
            check()
            return tensors

        request = self._request(settings, {**arguments, "callback_on_step_end": step_end}, labels)
        total = request.num_inference_steps
        if request.strength is not None:  # video-to-video runs int(steps · strength) of them
            total = min(int(request.num_inference_steps * request.strength), request.num_inference_steps)
        with self._cancels_lock:
            self._cancels.setdefault(session, set()).add(cancelled)
        try:
            with self._lock:
                check()  # cancelled while waiting for its turn
                hook = self.pipe.unet.register_forward_pre_hook(check)
                try:
                    output = sample(self.pipe, request)
                except RUN_ERRORS as error:
                    raise _labelled(error, "Sampling failed", labels) from None
                finally:
                    hook.remove()
        finally:
            with self._cancels_lock:
                self._cancels[session].discard(cancelled)
                if not self._cancels[session]:
                    del self._cancels[session]
        try:
            video, gif = self.files.write(output.frames[0], f"zs2-{kind}-seed{request.seed}")
        except (ValueError, OSError) as error:  # a full disk, a missing ffmpeg: the server keeps serving
            raise DemoError(f"Writing the video failed: {error}") from None
        return Result(video=video, gif=gif, stats=output.stats)
