"""How a zs2 op is made: a ``torch.library`` custom op that library code calls like a plain function.

:class:`Op` registers an autograd-free ``torch.library.custom_op`` (so ``torch.compile`` traces through it
without a graph break) and, called, runs its implementation directly in eager mode: the dispatcher costs
~80 µs per call on a CPU, as much as the EMA of a small UNet layer. While ``torch.compile`` traces, the call
emits the registered op. :class:`BackendTable` maps a backend name to the module that implements an op
family for it, imported on first use (triton and the CUDA C++ library are optional).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Callable

import torch

from .backend import BACKENDS, check_backend_name


class Op:
    """A registered op ``zs2::<name>`` that calls ``eager`` (default: the implementation) outside compilation.

    ``op.registered`` is the ``torch.library`` op (``torch.ops.zs2.<name>``), for ``opcheck`` and raw calls.
    """

    def __init__(self, name: str, implementation: Callable, eager: Callable | None = None):
        self.registered = torch.library.custom_op(f"zs2::{name}", implementation, mutates_args=())
        self._eager = eager or implementation
        functools.update_wrapper(self, implementation)

    def register_fake(self, fake: Callable) -> Callable:
        """Shapes and dtypes of the outputs, without computing them (what ``torch.compile`` traces with)."""
        self.registered.register_fake(fake)
        return fake

    def __call__(self, *args, **kwargs):
        if torch.compiler.is_compiling():
            return self.registered(*args, **kwargs)
        return self._eager(*args, **kwargs)


def op(name: str, eager: Callable | None = None) -> Callable[[Callable], Op]:
    """Decorator form of :class:`Op`: ``@op("momentum_update")`` over the implementation."""
    return lambda implementation: Op(name, implementation, eager)


class BackendTable:
    """Backend name -> the module implementing an op family for it, imported when first asked for.

    The reference (``torch``) is required; ``triton`` and ``cuda`` are optional, per family and per op: an op a
    backend's module does not define raises at call time, naming the op and the backends that have it.
    """

    def __init__(self, package: str, modules: dict[str, str]):
        if "torch" not in modules or not set(modules) <= set(BACKENDS):
            raise ValueError(f"a backend table needs 'torch' (the reference) and only names of {BACKENDS}, "
                             f"got {sorted(modules)}")
        self.package = package
        self.modules = modules

    def __getitem__(self, backend: str) -> ModuleType:
        check_backend_name(backend)
        if backend not in self.modules:
            raise NotImplementedError(f"{self.package} has no {backend} implementation; backends: "
                                      f"{sorted(self.modules)}")
        return importlib.import_module(self.modules[backend], self.package)

    def implementation(self, backend: str, name: str) -> Callable:
        """The function ``name`` of ``backend``'s module; NotImplementedError naming the op and the backends that
        implement it when that backend has none."""
        check_backend_name(backend)
        module = self[backend] if backend in self.modules else None
        function = getattr(module, name, None)
        if function is None:
            having = [b for b in self.modules if b != backend and hasattr(self[b], name)]
            raise NotImplementedError(f"op {name} of {self.package} has no {backend} implementation; use backend= one "
                                      f"of {having}")
        return function
