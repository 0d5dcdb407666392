"""The package's layers, from the bottom up, and a test that fails when an import runs the wrong way.

    0  _checks, _atomic, environment, seeds, embedded (the shipped weights' paths and the digit condition)
    1  ops/            the two op families and what they share; no diffusers
    2  attention, loading, video_io
    3  sampling/       sample_video and the modules that exist for it (conditioning, control, editing, noise hooks,
                       schedulers, compiling, memory)
    4  pipeline_mode (video_mode: ZS² for any diffusers pipeline)
    5  cli, the package's face (__init__)
    6  evaluation/ (the ablation study, its metrics, report and the digit data); demo/ (the web app, on the command
       line's helpers); neither imports the other

A module may import modules of lower layers, and modules of its own group (``ops.*`` among themselves,
``evaluation.*`` among themselves). Function-local imports count: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "zs2_kernels"

LAYERS = {
    "zs2_kernels._checks": 0, "zs2_kernels._atomic": 0, "zs2_kernels.environment": 0, "zs2_kernels.seeds": 0,
    "zs2_kernels.embedded": 0,
    "zs2_kernels.ops": 1,
    "zs2_kernels.attention": 2, "zs2_kernels.loading": 2, "zs2_kernels.video_io": 2,
    "zs2_kernels.sampling": 3,
    "zs2_kernels.pipeline_mode": 4,
    "zs2_kernels.cli": 5, "zs2_kernels": 5,
    "zs2_kernels.evaluation": 6, "zs2_kernels.demo": 6,
}
#: Third-party packages a layer must not import (the ops run without diffusers or transformers).
FORBIDDEN_EXTERNAL = {1: ("diffusers", "transformers")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group(module: str) -> str:
    """The longest prefix of ``module`` named in LAYERS (its layer's entry)."""
    candidates = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return max(candidates, key=len)


def imports(module: str, is_package: bool, text: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``text``, the source of ``module``; relative ones resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            # "from . import x" may import a submodule x: count the most specific name.
            found += [(node.lineno, target if node.module else f"{target}.{alias.name}") for alias in node.names]
    return found


def violations(module: str, is_package: bool, text: str) -> list[str]:
    """The imports of ``module`` (source ``text``) that run up the layers or into a forbidden package."""
    source_group = group(module)
    layer = LAYERS[source_group]
    wrong = []
    for line, target in imports(module, is_package, text):
        where = f"{module}:{line}"
        if target.split(".")[0] in FORBIDDEN_EXTERNAL.get(layer, ()):
            wrong.append(f"{where} (layer {layer}) imports {target}")
        if not target.startswith("zs2_kernels"):
            continue
        target_group = group(target)
        same_family = source_group.startswith(target_group + ".") or target_group.startswith(source_group + ".")
        if target_group != source_group and LAYERS[target_group] >= layer and not same_family:
            wrong.append(f"{where} (layer {layer}) imports {target} ({target_group}, layer {LAYERS[target_group]})")
    return wrong


def package_modules():
    return [(module_name(path), path.name == "__init__.py", path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))]


def test_every_module_has_a_layer():
    for module, _, _ in package_modules():
        assert group(module) in LAYERS


def test_imports_run_down_the_layers():
    assert [wrong for module in package_modules() for wrong in violations(*module)] == []


@pytest.mark.parametrize("module, line, reason", [
    ("zs2_kernels.ops.noise.api", "from ...sampling.sampler import sample_video", "an op importing the sampler"),
    ("zs2_kernels.sampling.sampler", "from ..evaluation import metrics", "the core importing the evaluation study"),
    ("zs2_kernels.sampling.noise_hooks", "from ..pipeline_mode import video_mode", "the sampler importing video_mode"),
    ("zs2_kernels.loading", "from .evaluation.digits import load_digit_split", "core loading importing the digit data"),
    ("zs2_kernels.embedded.condition", "from ..evaluation.digits import load_digit_split",
     "the weights importing the data"),
    ("zs2_kernels.sampling.control", "from ..cli import sample_main", "the sampler importing the command line"),
    ("zs2_kernels.ops.registry", "import diffusers", "the ops importing diffusers"),
    ("zs2_kernels.attention", "def probe():\n    from .cli import sample_main", "a lazy import up the layers"),
    ("zs2_kernels.ops.momentum", "from .. import registry\nfrom ... import attention", "the ops importing attention"),
])
def test_a_wrong_way_import_is_caught(module, line, reason):
    assert violations(module, module == "zs2_kernels.ops.momentum", line), f"not caught: {reason}"


def test_importing_the_package_loads_no_gpu_code_triton_or_evaluation_packages():
    """``import zs2_kernels`` on a CPU machine: no triton, no CUDA initialisation, nothing of the evaluation."""
    import subprocess
    import sys

    probe = ("import sys, torch, zs2_kernels, zs2_kernels.sampling, zs2_kernels.cli; "
             "heavy = ('triton', 'sklearn', 'torchmetrics', 'matplotlib', 'scipy'); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy "
             "or m.startswith('zs2_kernels.evaluation')), torch.cuda.is_initialized())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[] False"
