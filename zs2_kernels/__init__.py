"""zs2_kernels: ZS² zero-shot video sampling from image diffusion models, with fused GPU kernels.

Importing never touches a GPU and works without triton (the PyTorch reference is the CPU path).
"""

from . import ops  # noqa: F401  (registers the zs2:: torch ops)
from .backend import BACKENDS, resolve_backend
from .momentum import momentum_update
from .noise import dependency_noise

__version__ = "0.1.0"

__all__ = ["BACKENDS", "dependency_noise", "momentum_update", "resolve_backend", "__version__"]
