"""Package build for zs2_kernels; also compiles the optional CUDA C++ backend (csrc/) when nvcc is found."""

import importlib.util
import re
from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
LIBRARY = Path("zs2_kernels") / "_lib" / "libzs2_cuda.so"
EVAL_REQUIRES = ["torchmetrics>=1.4", "scikit-learn>=1.3", "scipy", "matplotlib"]
# The demo web app (zs2-demo) is written against Gradio 6's API (launch(theme=...), api_visibility, footer_links).
DEMO_REQUIRES = ["gradio>=6.31,<7"]


def _version() -> str:
    """The package's version, read from zs2_kernels/__init__.py (its one home) without importing the package."""
    text = (ROOT / "zs2_kernels" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE).group(1)


def _load_csrc_build():
    spec = importlib.util.spec_from_file_location("zs2_csrc_build", ROOT / "csrc" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithCuda(build_py):
    """build_py that also builds csrc/ into zs2_kernels/_lib/ with nvcc, or says clearly why it did not."""

    def run(self):
        super().run()
        csrc = _load_csrc_build()
        nvcc = csrc.find_nvcc()
        if nvcc is None:
            print("zs2_kernels: nvcc not found, skipping the optional CUDA C++ backend (csrc/); "
                  "the Triton and PyTorch backends are unaffected.")
            return
        target_root = ROOT if getattr(self, "editable_mode", False) else Path(self.build_lib)
        print(f"zs2_kernels: building the CUDA C++ backend with {nvcc}")
        try:
            csrc.build_library(target_root / LIBRARY, nvcc=nvcc)
        except Exception as error:  # the backend is optional: report and install the rest
            print(f"zs2_kernels: WARNING: building the CUDA C++ backend failed ({error}); "
                  "backend='cuda' will be unavailable, the Triton and PyTorch backends are unaffected.")


setup(
    name="zs2_kernels",
    version=_version(),
    description="ZS²: zero-shot video sampling from image diffusion models, with fused Triton/CUDA kernels",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Namespace discovery also lists the data folders (weights, prompts, the built library) as packages.
    packages=find_namespace_packages(include=["zs2_kernels", "zs2_kernels.*"]),
    include_package_data=True,
    package_data={"zs2_kernels": ["DESIGN.md", "_lib/*.so"],
                  "zs2_kernels.embedded": ["*.safetensors", "digits-sd/*.json", "digits-sd/*/*.json",
                                           "digits-sd/*/*.safetensors", "digits-sd/*/*.txt",
                                           "digits-controlnet/*.json", "digits-controlnet/*.safetensors"],
                  "zs2_kernels.evaluation": ["data/*.txt"]},
    install_requires=[
        "torch>=2.4",
        # 3.6: the GPU image's, which runs the compiled kernels. 3.9: what CI's interpreter tests run (.ci/run pins
        # it; the interpreter's results depend on its version, 3.6's do not match the GPU's). 3.10 turns fp fusion
        # off by default, which changes the kernels' rounding (DESIGN.md §2): not admitted until tested.
        "triton>=3.6,<3.10; platform_system == 'Linux'",
        "diffusers>=0.30",
        "transformers>=4.44",
        "safetensors>=0.4",
        "numpy",
        "pillow",
        "tqdm",
        "imageio>=2.30",
        "imageio-ffmpeg",
    ],
    # eval: the ablation study (zs2-ablate) and the embedded model's training scripts; sampling needs none of it.
    # torch-fidelity (Inception FID) depends on torchvision, which would pull a second, CUDA build of torch.
    # demo: the web app. test: pytest-xdist runs the README's test command in two worker processes; the demo's tests
    # drive the app through gradio_client and Debian's Chromium through Selenium (.ci/run installs the browser).
    extras_require={"eval": EVAL_REQUIRES, "demo": DEMO_REQUIRES,
                    "test": ["pytest>=8", "pytest-xdist>=3", *EVAL_REQUIRES, *DEMO_REQUIRES, "gradio_client>=2",
                             "selenium>=4.20"],
                    "inception": ["torch-fidelity"]},
    entry_points={"console_scripts": ["zs2-sample = zs2_kernels.cli:sample_main",
                                      "zs2-ablate = zs2_kernels.evaluation.cli:ablate_main",
                                      "zs2-demo = zs2_kernels.demo.cli:demo_main"]},
    cmdclass={"build_py": BuildWithCuda},
)
