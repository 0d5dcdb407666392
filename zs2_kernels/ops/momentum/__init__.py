"""Temporal momentum: the recursive EMA over frames behind momentum attention (zs2_kernels/DESIGN.md §1.2).

    y_0 = x_0   (or mu·init + (1 - mu)·x_0 with a carried state),    y_f = mu·y_{f-1} + (1 - mu)·x_f

accumulated in float32 whatever the input dtype. The family's face: the public :func:`momentum_update`
and :func:`ema_frames` (``api.py``), the op ``zs2::momentum_update`` (:data:`update_op`, ``ops.py``) and
:func:`aot_specs`.
Backends (one module each, the same ``momentum_update`` function): ``reference`` (PyTorch, the CPU path and
the oracle), ``triton`` and ``cuda`` (the CUDA C++ library).
"""

from .api import ema_frames, momentum_update
from .ops import update_op

#: The family's registered ops.
OPS = (update_op,)


def aot_specs() -> list:
    """The family's Triton kernel variants for the ahead-of-time compile check (imports triton)."""
    from .triton import aot_specs as specs

    return specs()


__all__ = ["OPS", "aot_specs", "ema_frames", "momentum_update", "update_op"]
