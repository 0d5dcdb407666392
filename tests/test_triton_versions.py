"""Which Triton the package admits and which one the CPU tests interpret with (setup.py, .ci/run): the
interpreter's results depend on its version, the GPU image runs an older one."""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from helpers import interpreting

ROOT = Path(__file__).resolve().parents[1]
#: The GPU image's Triton: it runs the compiled kernels, so the package must install beside it.
GPU_IMAGE = "3.6.0"


def ci_pin() -> str:
    pins = re.findall(r"pip install .*\btriton==([\d.]+)", (ROOT / ".ci" / "run").read_text())
    assert len(pins) == 1, f".ci/run must install one pinned triton (triton==X.Y.Z) for the tests, found {pins}"
    return pins[0]


def test_setup_admits_the_gpu_image_and_the_ci_pin():
    (line,) = re.findall(r'"(triton[^"]*)"', (ROOT / "setup.py").read_text())
    specifier = Requirement(line).specifier
    assert specifier.contains(GPU_IMAGE) and specifier.contains(ci_pin()), specifier
    assert not specifier.contains("3.0.0")  # no Triton either was tested with


def test_interpreter_is_the_pinned_triton():
    if not interpreting():
        pytest.skip("compiled kernels: the version only needs to be admitted by setup.py")
    import triton

    assert Version(triton.__version__) == Version(ci_pin()), (
        f"the tests interpret Triton kernels with triton {triton.__version__}; their results are checked with "
        f"{ci_pin()} (pip install triton=={ci_pin()}, see .ci/run)")
