"""The dependency noise model (zs2_kernels/DESIGN.md §1.1). The family's face: the public :func:`dependency_noise`
(``api.py``: the frame chain built from the ops), the ops (``ops.py``) and :func:`aot_specs`.

Ops, each ``zs2::<name>``: :data:`kl_sums_op` (the batched KL check: A and every C_r in one pass),
:data:`search_frame_op` (random and line stage for one frame), :data:`compose_op` (writes the frame) and
:data:`philox_normal_op` (the Philox candidates the Triton kernels regenerate, materialised). Candidates
are a tensor [R, B, D], or ``None`` with one Philox key per video in ``seeds`` (Triton only).

Backends (one module each, the same functions ``kl_sums``, ``search_frame`` and ``compose``):
``reference`` (PyTorch), ``triton`` (which also has the ``_philox`` variants) and ``cuda``.
"""

from .api import chain_correlations, dependency_noise
from .ops import compose_op, kl_sums_op, philox_normal_op, search_frame_op

#: The family's registered ops.
OPS = (kl_sums_op, search_frame_op, compose_op, philox_normal_op)


def aot_specs() -> list:
    """The family's Triton kernel variants for the ahead-of-time compile check (imports triton)."""
    from .triton import aot_specs as specs

    return specs()


__all__ = ["OPS", "aot_specs", "chain_correlations", "compose_op", "dependency_noise", "kl_sums_op", "philox_normal_op",
           "search_frame_op"]
