"""The Gradio page: one tab per sampling mode on a :class:`~zs2_kernels.demo.jobs.Demo` (the only module that
imports gradio; ``pip install -e ".[demo]"``).

Every generating event shares one concurrency slot (:data:`GENERATE`, limit 1): Gradio's limit is per event listener,
and two tabs running at once on one pipeline would only wait for each other's lock. A tab's Cancel stops its
session's run within one denoising step (the run's flag, see jobs.py; Gradio's ``cancels=`` alone only drops events
still queued) and so does closing the tab. Errors reach the page as Gradio's error toast naming the field, never as a
traceback. The page is offline: analytics off, system fonts, nothing from a CDN, no run history kept in the browser.
"""

# No "from __future__ import annotations": Gradio finds gr.Request and gr.Progress parameters by their live
# annotations and defaults.
import logging
import os
import random

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio reads it at import

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402  (a dependency of gradio)

from .._checks import SEARCH_MODES  # noqa: E402
from ..sampling.schedulers import SCHEDULERS  # noqa: E402
from .jobs import Cancelled, Demo, DemoError  # noqa: E402
from .outputs import pair_curve, stats_table  # noqa: E402
from .settings import LABELS, Settings, presets  # noqa: E402

#: The one concurrency slot every generating event shares.
GENERATE = "zs2-generate"
#: The generating events' API names, one per tab.
ENDPOINTS = ("text_to_video", "guided_video", "image_to_video", "video_to_video", "prompt_travel")
#: Gradio's cache of uploads and served results: checked every 10 minutes, files older than an hour removed.
DELETE_CACHE = (600, 3600)
#: System fonts only: Gradio's default theme loads its own web fonts.
THEME_FONTS = dict(font=[gr.themes.Font("system-ui"), gr.themes.Font("Segoe UI"), gr.themes.Font("Helvetica"),
                         "sans-serif"],
                   font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("Menlo"), "monospace"])
UPLOAD_TYPES = [".gif", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".mp4", ".webm", ".mov", ".mkv",
                ".avi"]
log = logging.getLogger("zs2_kernels.demo")


def launch_options(host: str = "127.0.0.1", port: int | None = None, share: bool = False, max_upload_bytes=None):
    """``Blocks.launch``'s arguments for an offline, local app: the address, no public link unless asked, system
    fonts, the upload limit, no run history saved in the browser, only the API link in the footer."""
    from .inputs import MAX_UPLOAD_BYTES

    return dict(server_name=host, server_port=port, share=share, theme=gr.themes.Default(**THEME_FONTS),
                max_file_size=MAX_UPLOAD_BYTES if max_upload_bytes is None else max_upload_bytes, run_history=False,
                footer_links=["api"], show_error=False, ssr_mode=False, mcp_server=False, enable_monitoring=False)


def _label(name: str) -> str:
    """A field's label: the page's word, and the argument name it sets."""
    return f"{LABELS[name]} ({name})"


def _curve(stats: dict, key: str, name: str) -> pd.DataFrame:
    return pd.DataFrame(pair_curve(stats, key), columns=["frame pair", name])


class Handlers:
    """The events' functions: the page's values to :class:`Demo`'s calls, its results to the output components
    (the MP4, the GIF, the stats table, the two per-pair curves), and every failure to a ``gr.Error`` toast.

    Plain methods, callable without a server (``request`` and ``progress`` are Gradio's, filled in by it)."""

    def __init__(self, demo: Demo):
        self.demo = demo

    @staticmethod
    def settings(num_frames, num_inference_steps, noise_lambda, momentum, seed, guidance_scale, search, scheduler,
                 frame_chunk, dependency_noise, momentum_attention) -> Settings:
        """The page's values as Settings: whole numbers from number fields as ints, chunk 0 as none."""
        if seed is None:
            raise gr.Error("Seed: empty; give a whole number in [0, 2**63) or press random seed",
                           title="Check the input", print_exception=False)
        whole = {}
        for name, value in (("num_frames", num_frames), ("num_inference_steps", num_inference_steps),
                            ("seed", seed), ("frame_chunk", frame_chunk)):
            whole[name] = int(value) if isinstance(value, float) and value.is_integer() else value
        return Settings(noise_lambda=noise_lambda, momentum=momentum, guidance_scale=guidance_scale, search=search,
                        scheduler=scheduler, dependency_noise=dependency_noise, momentum_attention=momentum_attention,
                        **{**whole, "frame_chunk": whole["frame_chunk"] or None})

    def _run(self, call, request, progress):
        """``call(session, report)``'s Result as the outputs; its failures as toasts."""
        session = getattr(request, "session_hash", None) or ""

        def report(done, total):
            progress((done, total), desc="denoising", unit="steps")

        try:
            result = call(session, report)
        except DemoError as error:
            raise gr.Error(str(error), title="Check the input", print_exception=False) from None
        except Cancelled as error:
            raise gr.Error(f"Cancelled: {error}", title="Cancelled", print_exception=False) from None
        except gr.Error:
            raise
        except Exception as error:  # a bug: the server keeps serving, the page gets a message, the log the traceback
            log.exception("zs2-demo: a run failed")
            raise gr.Error(f"The run failed ({type(error).__name__}: {error}); the server log has the details",
                           title="Failed") from None
        stats = result.stats
        return (str(result.video), str(result.gif), stats_table(stats), _curve(stats, "achieved_kl", "achieved KL"),
                _curve(stats, "alpha", "alpha"))

    def text_to_video(self, prompt, num_frames, num_inference_steps, noise_lambda, momentum, seed,
                      guidance_scale=4.0, search="exact", scheduler="ddim", frame_chunk=0, dependency_noise=True,
                      momentum_attention=True, request: gr.Request = None, progress=gr.Progress()):
        """A video of the prompt. Returns the MP4, the GIF, the stats table and the achieved KL and alpha per frame
        pair."""
        settings = self.settings(num_frames, num_inference_steps, noise_lambda, momentum, seed, guidance_scale,
                                 search, scheduler, frame_chunk, dependency_noise, momentum_attention)
        return self._run(lambda session, report: self.demo.text_to_video(prompt, settings, session=session,
                                                                         progress=report), request, progress)

    def guided_video(self, prompt, control_video, digit_condition, conditioning_scale, num_inference_steps,
                     noise_lambda, momentum, seed, guidance_scale=4.0, search="exact", scheduler="ddim", frame_chunk=0,
                     dependency_noise=True, momentum_attention=True, request: gr.Request = None,
                     progress=gr.Progress()):
        """A video of the prompt, each frame steered by the uploaded guide video's frame (its frame count)."""
        settings = self.settings(1, num_inference_steps, noise_lambda, momentum, seed, guidance_scale, search,
                                 scheduler, frame_chunk, dependency_noise, momentum_attention)
        return self._run(lambda session, report: self.demo.guided_video(
            prompt, control_video, settings, digit_condition=digit_condition, conditioning_scale=conditioning_scale,
            session=session, progress=report), request, progress)

    def image_to_video(self, prompt, image, num_frames, num_inference_steps, noise_lambda, momentum, seed,
                       guidance_scale=4.0, search="exact", scheduler="ddim", frame_chunk=0, dependency_noise=True,
                       momentum_attention=True, request: gr.Request = None, progress=gr.Progress()):
        """A video of the prompt starting from the uploaded image."""
        settings = self.settings(num_frames, num_inference_steps, noise_lambda, momentum, seed, guidance_scale,
                                 search, scheduler, frame_chunk, dependency_noise, momentum_attention)
        return self._run(lambda session, report: self.demo.image_to_video(prompt, image, settings, session=session,
                                                                          progress=report), request, progress)

    def video_to_video(self, prompt, video, strength, num_inference_steps, noise_lambda, momentum, seed,
                       guidance_scale=4.0, search="exact", scheduler="ddim", frame_chunk=0, dependency_noise=True,
                       momentum_attention=True, request: gr.Request = None, progress=gr.Progress()):
        """The uploaded video edited towards the prompt (its frame count), noised by the strength first."""
        settings = self.settings(1, num_inference_steps, noise_lambda, momentum, seed, guidance_scale, search,
                                 scheduler, frame_chunk, dependency_noise, momentum_attention)
        return self._run(lambda session, report: self.demo.video_to_video(
            prompt, video, settings, strength=strength, session=session, progress=report), request, progress)

    def prompt_travel(self, keyframes, num_frames, num_inference_steps, noise_lambda, momentum, seed,
                      guidance_scale=4.0, search="exact", scheduler="ddim", frame_chunk=0, dependency_noise=True,
                      momentum_attention=True, request: gr.Request = None, progress=gr.Progress()):
        """One video whose prompt travels over its frames: one FRAME: TEXT per line, frame 0 first."""
        settings = self.settings(num_frames, num_inference_steps, noise_lambda, momentum, seed, guidance_scale,
                                 search, scheduler, frame_chunk, dependency_noise, momentum_attention)
        return self._run(lambda session, report: self.demo.prompt_travel(keyframes, settings, session=session,
                                                                         progress=report), request, progress)

    def cancel(self, request: gr.Request = None):
        """Stop this browser session's run within one denoising step."""
        if self.demo.cancel(getattr(request, "session_hash", None) or ""):
            gr.Info("Cancelling: the run stops after its current step")

    def closed(self, request: gr.Request = None):
        """The tab was closed or reloaded: its run stops too."""
        self.demo.cancel(getattr(request, "session_hash", None) or "")

    @staticmethod
    def random_seed():
        return random.randrange(2**32)


def _setting_controls(demo: Demo, defaults: Settings, frames: bool) -> list:
    """The shared knobs, in the handlers' order (frames first where the tab has them), inside an accordion."""
    with gr.Accordion("Settings", open=True):
        controls = []
        with gr.Row():
            if frames:
                controls.append(gr.Slider(1, demo.max_frames, defaults.num_frames, step=1,
                                          label=_label("num_frames")))
            controls.append(gr.Slider(1, 100, defaults.num_inference_steps, step=1,
                                      label=_label("num_inference_steps")))
        with gr.Row():
            noise_lambda = gr.Slider(0.0, 0.5, defaults.noise_lambda, step=0.001, label=_label("noise_lambda"),
                                     info="the noise chain's KL target: more motion as it grows")
            momentum = gr.Slider(0.0, 1.0, defaults.momentum, step=0.01, label=_label("momentum"),
                                 info="momentum attention: 0 plain, 1 attends to frame 0")
        with gr.Row():
            seed = gr.Number(defaults.seed, minimum=0, label=_label("seed"), scale=3)
            dice = gr.Button("random seed", scale=1, size="sm")
            guidance = gr.Slider(0.0, 20.0, defaults.guidance_scale, step=0.5, label=_label("guidance_scale"),
                                 info="<= 1: classifier-free guidance off", scale=4)
        with gr.Row():
            search = gr.Radio(list(SEARCH_MODES), value=defaults.search, label=_label("search"))
            scheduler = gr.Dropdown(list(SCHEDULERS), value=defaults.scheduler, label=_label("scheduler"))
            chunk = gr.Slider(0, demo.max_frames, defaults.frame_chunk or 0, step=1,
                              label=_label("frame_chunk"), info="UNet frames per call; 0: the whole video")
        with gr.Row():
            dependency = gr.Checkbox(defaults.dependency_noise, label=_label("dependency_noise"))
            attention = gr.Checkbox(defaults.momentum_attention, label=_label("momentum_attention"))
    dice.click(Handlers.random_seed, None, seed, queue=False, api_visibility="private")
    return [*controls, noise_lambda, momentum, seed, guidance, search, scheduler, chunk, dependency, attention]


def _outputs(tab: str) -> list:
    """The tab's outputs: the MP4 (autoplaying, looping), the GIF download, the stats table and the two curves."""
    video = gr.Video(label="Video (MP4)", autoplay=True, loop=True, interactive=False, elem_id=f"{tab}-video",
                     buttons=["download"], height=320)
    gif = gr.File(label="GIF download", interactive=False, elem_id=f"{tab}-gif")
    with gr.Accordion("Stats", open=True, elem_id=f"{tab}-stats"):
        with gr.Row():
            kl = gr.LinePlot(x="frame pair", y="achieved KL", label="achieved KL per frame pair", height=200,
                             elem_id=f"{tab}-kl")
            alpha = gr.LinePlot(x="frame pair", y="alpha", label="alpha per frame pair", height=200,
                                elem_id=f"{tab}-alpha")
        table = gr.Markdown(elem_id=f"{tab}-stats-table")
    return [video, gif, table, kl, alpha]


def _preset_picker(tab: str):
    return gr.Dropdown([preset.name for preset in presets(tab)], value=None, label="Preset: the README's example",
                       elem_id=f"{tab}-preset")


def _wire_presets(picker, tab: str, fields: list, settings: list, *, frames: bool, upload: bool = False, extra=None):
    """Choosing a preset fills ``fields`` (the prompt, then the upload if ``upload``, then ``extra(preset)``'s field)
    and the settings (with the frame count where the tab has one); an example whose input file this installation
    lacks leaves the upload to the visitor."""
    tab_presets = {preset.name: preset for preset in presets(tab)}

    def apply(name):
        preset = tab_presets.get(name)
        if preset is None:
            return [gr.skip()] * (len(fields) + len(settings))
        values = [preset.prompt()]
        if upload:
            file = preset.upload()
            if file is None:
                gr.Warning(f"{preset.name}: its input is not in this installation (a source checkout has it under "
                           "benchmarks/results/): upload one")
            values.append(gr.skip() if file is None else str(file))
        if extra is not None:
            values.append(extra(preset))
        chosen = preset.settings()
        numbers = [chosen.num_frames] if frames else []
        numbers += [chosen.num_inference_steps, chosen.noise_lambda, chosen.momentum, chosen.seed,
                    chosen.guidance_scale, chosen.search, chosen.scheduler, chosen.frame_chunk or 0,
                    chosen.dependency_noise, chosen.momentum_attention]
        return values + numbers

    picker.input(apply, picker, fields + settings, api_visibility="private")


def _buttons(tab: str) -> tuple:
    with gr.Row():
        return (gr.Button("Generate", variant="primary", elem_id=f"{tab}-generate"),
                gr.Button("Cancel", variant="stop", elem_id=f"{tab}-cancel"))


def build_app(demo: Demo, *, defaults: Settings = Settings(), title: str = "ZS² video sampler") -> gr.Blocks:
    """The page of ``demo``: a tab per mode, each with the README's presets, its controls (starting at
    ``defaults``), a Generate and a Cancel button and its outputs (the MP4 playing, the GIF download, the stats).
    Launch it with ``app.launch(**launch_options(...))``."""
    handlers = Handlers(demo)
    model = "the embedded digits model" if demo.embedded else f"`{demo.pipe.name_or_path}`"
    hint = "a handwritten digit 3" if demo.embedded else "a horse galloping on a street"
    generating, stops = [], []

    def mode_tab(tab: str, label: str, fn, fields, *, frames: bool, upload: bool = False, extra=None, note=None):
        """One mode's tab: its README presets, ``fields()``'s inputs (a list in ``fn``'s order: the prompt, the
        upload if ``upload``, the field ``extra`` fills from a preset, then the rest), the shared settings, Generate
        and Cancel, and the outputs."""
        with gr.Tab(label, id=tab):
            if note:
                gr.Markdown(note)
            with gr.Row():
                with gr.Column():
                    picker = _preset_picker(tab)
                    own = fields()
                    settings = _setting_controls(demo, defaults, frames=frames)
                    buttons = _buttons(tab)
                with gr.Column():
                    outputs = _outputs(tab)
        filled = own[:1 + upload + (extra is not None)]
        _wire_presets(picker, tab, filled, settings, frames=frames, upload=upload, extra=extra)
        go, stop = buttons
        stops.append(stop)
        generating.append(go.click(fn, [*own, *settings], outputs, api_name=fn.__name__, concurrency_limit=1,
                                   concurrency_id=GENERATE, trigger_mode="once"))

    def prompt(tab=None):
        return gr.Textbox(hint, label=_label("prompt"), elem_id=tab and f"{tab}-prompt")

    def upload(name):
        return gr.File(label=_label(name), file_types=UPLOAD_TYPES, type="filepath")

    def guided_fields():
        fields = [prompt(), upload("control_video")]
        with gr.Row():
            return fields + [gr.Checkbox(demo.embedded, interactive=demo.embedded,
                                         label="digit condition (embedded model: edge maps of digit frames)"),
                             gr.Slider(0.0, 2.0, 1.0, step=0.05, label=_label("controlnet_conditioning_scale"))]

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=DELETE_CACHE) as app:
        gr.Markdown(f"# {title}\nZero-shot video sampling (ZS²) with {model} on {demo.pipe.device}, "
                    f"{demo.size[1]}x{demo.size[0]} px. Everything runs on this machine, one video at a time.")
        mode_tab("text", "Text to video", handlers.text_to_video, lambda: [prompt("text")], frames=True)
        mode_tab("guided", "Guided video", handlers.guided_video, guided_fields, frames=False, upload=True,
                 note="Every frame follows the guide video's frame through a ControlNet"
                 + (" (the embedded model's digit ControlNet: upload plain digit frames and keep *digit condition* "
                    "on, or upload ready edge maps with it off)." if demo.embedded else ".")
                 + ("" if demo.controlnet is not None else f" **Unavailable:** {demo.controlnet_problem}"))
        mode_tab("image", "Image to video", handlers.image_to_video, lambda: [prompt(), upload("image")], frames=True,
                 upload=True)
        mode_tab("video", "Video to video", handlers.video_to_video,
                 lambda: [prompt(), upload("video"), gr.Slider(0.01, 1.0, 0.8, step=0.01, label=_label("strength"),
                                                               info="how far the video is noised before denoising")],
                 frames=False, upload=True, extra=lambda preset: preset.strength())
        mode_tab("travel", "Prompt travel", handlers.prompt_travel,
                 lambda: [gr.Textbox(f"0: {hint}\n{defaults.num_frames - 1}: {hint.replace('3', '8')}", lines=4,
                                     label="Keyframes (prompt): one FRAME: TEXT per line, from frame 0",
                                     info="frames between keyframes blend their prompts")], frames=True)

        # Cancel: Gradio drops this session's queued events (cancels=), the run's flag stops the running one.
        for index, stop in enumerate(stops):
            stop.click(handlers.cancel, None, None, cancels=generating, api_name="cancel" if index == 0 else None,
                       api_visibility="public" if index == 0 else "private")
        app.unload(handlers.closed)
    return app
