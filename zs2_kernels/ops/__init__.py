"""The ops layer: the two ZS² op families and what they share.

* ``momentum/`` — the EMA over frames behind temporal momentum attention;
* ``noise/`` — the dependency noise model's search and its frame chain;

each family laid out alike (zs2_kernels/DESIGN.md §4): ``api.py`` (the public function), ``ops.py`` (the registered
ops), ``reference.py``, ``triton.py``, ``cuda.py``, and its ``__init__`` re-exporting the public function, ``OPS``
and ``aot_specs``;
* ``backend.py`` — which implementation runs (Triton, the CUDA C++ library, the PyTorch reference);
* ``registry.py`` — how an op is registered with ``torch.library`` and called;
* ``cuda_library.py`` — the CUDA C++ library both families bind to; ``_launch.py`` — Triton launches;
* ``aot.py``, ``cuobjdump.py`` — compiling every kernel ahead of time and reading its resource usage.

Nothing here imports diffusers or the sampler: the layers above (attention, sampler) use this one.
"""

from . import momentum, noise
from .backend import BACKENDS, resolve_backend
from .momentum import momentum_update
from .noise import dependency_noise

#: The op families: what the ahead-of-time check and the registration tests iterate.
FAMILIES = (momentum, noise)

__all__ = ["BACKENDS", "FAMILIES", "dependency_noise", "momentum_update", "resolve_backend"]
