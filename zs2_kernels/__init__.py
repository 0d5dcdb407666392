"""zs2_kernels: ZS² zero-shot video sampling from image diffusion models, with fused GPU kernels.

Importing never touches a GPU and works without triton (the PyTorch reference is the CPU path).
"""

from .attention import MomentumAttentionHandle, TemporalMomentumAttnProcessor, install_momentum_attention, is_installed
from .loading import load_pipeline
from .ops.backend import BACKENDS, resolve_backend
from .ops.momentum import momentum_update
from .ops.noise import dependency_noise
from .pipeline_mode import initial_latents, prompt_travel_embeddings, video_mode
from .sampling.sampler import VideoOutput, sample_video

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "MomentumAttentionHandle",
    "TemporalMomentumAttnProcessor",
    "VideoOutput",
    "dependency_noise",
    "initial_latents",
    "prompt_travel_embeddings",
    "install_momentum_attention",
    "is_installed",
    "load_pipeline",
    "momentum_update",
    "resolve_backend",
    "sample_video",
    "video_mode",
    "__version__",
]
