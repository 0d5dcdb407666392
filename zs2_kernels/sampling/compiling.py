"""The compiled sampling path: ``sample_video(compile=...)`` runs the UNet (and ControlNets) through ``torch.compile``.

A model is compiled once per set of options and the compiled wrapper is kept on the model itself (a plain
attribute, dropped by copies and pickles), so later calls reuse it; the user's ``pipe.unet`` is never replaced.
Momentum attention is installed on the wrapped model as in eager sampling and traced into the graph (the
``zs2::`` ops are registered custom ops: no graph break). Graphs are static (``dynamic=False``): one per UNet
batch size, that is per distinct chunk length; the first chunk of a step shares the later chunks' graph
because its empty carried state is a tensor whose sizes the graph leaves unknown (see ``reset_state`` in
:mod:`zs2_kernels.attention`).

CUDA graphs (``mode="reduce-overhead"``) replay into the same output memory every call, so the carried
state, an output of one call read by the next, is copied out after each call (:func:`own_outputs`).
"""

from __future__ import annotations

import inspect

import torch

from ..attention import unwrap_compiled

#: ``torch.compile`` modes by name; ``compile=True`` is "default".
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: What ``compile=True`` or a mode name adds: a graph break or shape-dependent recompilation is an error or
#: a new static graph, never a silent fallback to slow dynamic shapes.
DEFAULT_OPTIONS = {"fullgraph": True, "dynamic": False}
_CACHE_ATTRIBUTE = "_zs2_compiled"
#: Graphs dynamo keeps per code object. diffusers' UNets and ControlNets share one forward wrapper, so every
#: model and chunk length counts against one limit (torch's default, 8, silently falls back to eager beyond it).
RECOMPILE_LIMIT = 64


class _CompiledCache(dict):
    """Compiled wrappers of one model by options; not copied with the model (a copy compiles its own)."""

    def __deepcopy__(self, memo):
        return _CompiledCache()

    def __reduce__(self):
        return _CompiledCache, ()


def compile_options(compile) -> dict | None:
    """``torch.compile`` keyword arguments for ``sample_video(compile=...)``, or None for eager sampling.

    Accepts False/None (eager), True, a mode name (:data:`COMPILE_MODES`), or a dict of ``torch.compile``
    keyword arguments (e.g. ``{"mode": "max-autotune", "backend": "inductor"}``) over :data:`DEFAULT_OPTIONS`.
    """
    if compile is None or compile is False:
        return None
    if compile is True:
        return dict(DEFAULT_OPTIONS)
    if isinstance(compile, str):
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be False, True, one of {COMPILE_MODES} or a dict of torch.compile "
                             f"arguments, got {compile!r}")
        return {**DEFAULT_OPTIONS, **({} if compile == "default" else {"mode": compile})}
    if isinstance(compile, dict):
        accepted = set(inspect.signature(torch.compile).parameters) - {"model"}
        unknown = sorted(set(compile) - accepted)
        if unknown:
            raise ValueError(f"compile has keys torch.compile does not take: {unknown} (it takes {sorted(accepted)})")
        _check_backend(compile.get("backend", "inductor"))
        return {**DEFAULT_OPTIONS, **compile}
    raise TypeError(f"compile must be a bool, a mode name or a dict of torch.compile arguments, got "
                    f"{type(compile).__name__}")


def _check_backend(backend) -> None:
    """torch.compile's backend: a registered name or a callable (else torch fails seconds into the first call)."""
    if callable(backend):
        return
    import torch._dynamo

    names = torch._dynamo.list_backends(exclude_tags=())
    if not isinstance(backend, str) or backend not in names:
        raise ValueError(f"compile's backend must be a callable or one of {names}, got {backend!r}")


def compiled(model: torch.nn.Module, options: dict) -> torch.nn.Module:
    """``torch.compile(model, **options)``, made on the first call for these options and kept on the model.

    A model that is itself a compiled wrapper is compiled from the module it wraps. Any module: a
    MultiControlNetModel has no attention processors of its own (its nets carry them).
    """
    base = unwrap_compiled(model)
    cache = base.__dict__.setdefault(_CACHE_ATTRIBUTE, _CompiledCache())
    key = repr(sorted(options.items()))
    if key not in cache:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        cache[key] = torch.compile(base, **options)
    return cache[key]


def uses_cuda_graphs(options: dict | None, device) -> bool:
    """True when these options make inductor replay CUDA graphs on ``device``."""
    if not options or torch.device(device).type != "cuda":
        return False
    return options.get("mode") == "reduce-overhead" or bool((options.get("options") or {}).get("triton.cudagraphs"))


def before_call(cuda_graphs: bool) -> None:
    """Tell CUDA graph trees a new call begins (outputs of earlier calls may be overwritten from now on)."""
    if cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()


def own_outputs(handles, cuda_graphs: bool) -> None:
    """Copy the carried momentum states out of CUDA-graph memory, which the next replay overwrites."""
    if cuda_graphs:
        for handle in handles:
            for processor in handle.processors:
                if processor.state is not None:
                    processor.state = processor.state.clone()
