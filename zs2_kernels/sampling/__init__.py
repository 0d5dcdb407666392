"""The sampler, ``sample_video``, and the modules that exist for it.

* ``request.py`` — :class:`SampleRequest`: a call's arguments, checked once (also built by the command line);
* ``sampler.py`` — ``sample_video`` and ``sample``: the staged run (load, encode, initial noise, denoise, decode);
* ``modes.py`` — the two seams of the conditional modes (what steers each step, what the video starts from);
* ``conditioning.py`` — prompts and prompt embeddings, encoded once per video;
* ``control.py`` — guided video: ControlNets steering every step;
* ``editing.py`` — image-to-video and video-to-video: what the video starts from; ``vae.py`` — encode, decode;
* ``noise_hooks.py`` — dependency chains in place of diffusers' own noise draws (also used by ``video_mode``);
* ``schedulers.py``, ``compiling.py``, ``memory.py``, ``shapes.py`` — scheduler choice, the compiled path, the
  memory estimate, the video's size in pixels and latents.

The command line and the evaluation may import from here; nothing here imports them.
"""

from .request import SampleRequest
from .sampler import VideoOutput, sample, sample_video

__all__ = ["SampleRequest", "VideoOutput", "sample", "sample_video"]
