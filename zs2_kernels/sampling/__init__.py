"""The sampler, ``sample_video``, and the modules that exist for it.

* ``sampler.py`` — ``sample_video``: checks, then the staged run (load, encode, initial noise, denoise, decode);
* ``conditioning.py`` — prompts and prompt embeddings, encoded once per video;
* ``control.py`` — guided video: ControlNets steering every step;
* ``editing.py`` — image-to-video and video-to-video: what the video starts from;
* ``noise_hooks.py`` — dependency chains in place of diffusers' own noise draws (also used by ``video_mode``);
* ``schedulers.py``, ``compiling.py``, ``memory.py`` — scheduler choice, the compiled path, the memory estimate.

The command line and the evaluation may import from here; nothing here imports them.
"""

from .sampler import VideoOutput, sample_video

__all__ = ["VideoOutput", "sample_video"]
