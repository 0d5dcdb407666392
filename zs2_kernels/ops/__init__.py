"""The ops layer: the two ZS² op families and what they share.

* ``momentum/`` — the EMA over frames behind temporal momentum attention;
* ``noise/`` — the dependency noise model's search and its frame chain;
* ``backend.py`` — which implementation runs (Triton, the CUDA C++ library, the PyTorch reference);
* ``registry.py`` — how an op is registered with ``torch.library`` and called;
* ``cuda_library.py`` — the CUDA C++ library both families bind to; ``_launch.py`` — Triton launches;
* ``aot.py``, ``cuobjdump.py`` — compiling every kernel ahead of time and reading its resource usage.

Nothing here imports diffusers or the sampler: the layers above (attention, sampler) use this one.
"""

from .backend import BACKENDS, resolve_backend

__all__ = ["BACKENDS", "resolve_backend"]
