"""Op tests: every output tensor starts as NaN (integers as -1), so a kernel that leaves an element unwritten
fails instead of passing on whatever memory held. Modules that trace or compile opt out with
``pytestmark = pytest.mark.no_poison``.

Min/max reductions in the Triton interpreter compare as the compiled kernels do (see
``reductions_compare_as_compiled``), so a NaN reaching an argmin changes the result here as it does on a GPU.
"""

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "no_poison: run without NaN-poisoned torch.empty/empty_like")


@pytest.fixture(autouse=True)
def _poisoned_outputs(request):
    if request.node.get_closest_marker("no_poison") is None:
        request.getfixturevalue("nan_poisoned_outputs")


@pytest.fixture(autouse=True)
def reductions_compare_as_compiled(monkeypatch):
    """Make the interpreter's min/max/argmin/argmax evaluate the reduction's own combine function.

    The interpreter takes a shortcut through numpy's nanmin/nanargmin, which skip NaN. The compiled kernel
    folds the combine function instead: argmin's ``value1 < value2 or tie`` is false whenever a NaN is
    involved and keeps the right operand, so a NaN displaces the running minimum and can win; tl.min's
    minnumf (np.fmin here, PTX min.f32 there) does skip NaN, so min and argmin can disagree. The interpreter's
    generic path folds left to right where the GPU combines lanes in a tree: which candidate a NaN lets through
    may differ, that one gets through does not. Sums keep numpy's fast path (no comparison involved).
    """
    from zs2_kernels.ops.backend import triton_available, triton_interpreting

    if not (triton_available() and triton_interpreting()):
        return
    import triton.language as tl
    from triton.runtime import interpreter

    shortcut = interpreter.ReduceOps.apply_impl

    def apply_impl(self, input):
        if self.combine_fn is tl.standard._sum_combine:
            return shortcut(self, input)
        return self.generic_reduce(input)

    monkeypatch.setattr(interpreter.ReduceOps, "apply_impl", apply_impl)
