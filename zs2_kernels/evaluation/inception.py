"""The Inception network of standard FID, loaded offline and without unpickling the user's file.

The network is torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's TensorFlow-compatible InceptionV3,
the one behind torchmetrics' ``FrechetInceptionDistance``), with ``antialias=False`` so that numbers are
comparable with torch-fidelity and pytorch-fid. torch-fidelity reads a weights file with
``torch.load(weights_only=False)``: a full unpickle, which runs whatever code the file holds. So a
weights file is accepted only as ``.safetensors``; convert the published
``weights-inception-2015-12-05-6726825d.pth`` once with torch's tensors-only unpickler::

    python -m zs2_kernels.evaluation.inception weights-inception-2015-12-05-6726825d.pth inception-fid.safetensors

torch-fidelity (and the torchvision it imports) is the optional extra ``zs2_kernels[inception]``.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from .._atomic import atomic_write

FEATURE_LAYERS = (64, 192, 768, 2048)
PUBLISHED_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release v0.2.0 on GitHub
_HOW_TO_GET = (f"give a local file with --inception-weights (a .safetensors converted from torch-fidelity's "
               f"{PUBLISHED_WEIGHTS} by `python -m zs2_kernels.evaluation.inception SRC.pth DST.safetensors`), "
               "or run online "
               "without it to let torch-fidelity download the published file")


def load_inception(feature: int = 2048, weights_path: str | None = None) -> nn.Module:
    """Inception feature network for FID: uint8 images [N, 3, H, W] in, [N, feature] float features out.

    ``weights_path``: a ``.safetensors`` file; ``None`` lets torch-fidelity download its published weights
    (online only). Raises ``ValueError``/``FileNotFoundError`` for a bad argument and ``RuntimeError`` when
    the network cannot be had here, each naming the flag or package that fixes it.
    """
    if feature not in FEATURE_LAYERS:
        raise ValueError(f"fid feature must be one of {FEATURE_LAYERS}, got {feature}")
    if weights_path is not None:
        path = Path(weights_path)
        if path.suffix != ".safetensors":
            raise ValueError(f"--inception-weights must be a .safetensors file (pickled weights are never loaded), "
                             f"got {path}; convert with `python -m zs2_kernels.evaluation.inception {path.name} "
                             f"{path.stem}.safetensors`")
        if not path.is_file():
            raise FileNotFoundError(f"--inception-weights {path} does not exist")
    try:
        import torch_fidelity  # noqa: F401  (torchmetrics imports it lazily; fail here with the fix named)
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as error:
        raise RuntimeError(f"Inception FID needs torch-fidelity ({error}): pip install 'zs2_kernels[inception]'") \
            from error

    def build(file: str | None) -> nn.Module:
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(feature)],
                                  feature_extractor_weights_path=file, antialias=False)

    if weights_path is None:
        try:
            return build(None)
        except Exception as error:  # offline, blocked, corrupt download: all mean "no weights here"
            raise RuntimeError(f"Inception weights could not be downloaded ({error}): {_HOW_TO_GET}") from error
    from safetensors.torch import load_file

    state = load_file(str(weights_path))
    # torch-fidelity only takes a path it unpickles; hand it a file holding just the tensors read above.
    with tempfile.TemporaryDirectory(prefix="zs2-inception-") as folder:
        trusted = Path(folder) / "inception.pth"
        torch.save(state, trusted)
        try:
            return build(str(trusted))
        except RuntimeError as error:  # load_state_dict: missing / unexpected keys or wrong shapes
            raise ValueError(f"--inception-weights {weights_path} does not hold FID Inception weights: {error}") \
                from error


def convert_weights(source: str | Path, target: str | Path) -> int:
    """Convert a pickled Inception state dict to ``.safetensors`` with the tensors-only unpickler.

    ``torch.load(weights_only=True)`` refuses any object other than tensors and plain containers, so a
    hostile file cannot run code here. Returns the number of tensors written.
    """
    source, target = Path(source), Path(target)
    if target.suffix != ".safetensors":
        raise ValueError(f"target must end in .safetensors, got {target}")
    if not source.is_file():
        raise FileNotFoundError(f"source {source} does not exist")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"{source} is not a tensors-only PyTorch state dict: {error}") from error
    if not isinstance(state, dict) or not state or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise ValueError(f"{source} is not a state dict (a non-empty mapping of names to tensors)")
    from safetensors.torch import save_file

    tensors = {key: value.contiguous() for key, value in state.items()}
    atomic_write(target, lambda tmp: save_file(tensors, tmp, metadata={"source": source.name}))
    return len(tensors)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zs2_kernels.evaluation.inception",
                                     description="Convert FID Inception weights (.pth) to .safetensors for "
                                                 "zs2-ablate --inception-weights.")
    parser.add_argument("source", help=f"pickled state dict, e.g. torch-fidelity's {PUBLISHED_WEIGHTS}")
    parser.add_argument("target", help="output .safetensors file")
    args = parser.parse_args(argv)
    try:
        count = convert_weights(args.source, args.target)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.target} ({count} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
