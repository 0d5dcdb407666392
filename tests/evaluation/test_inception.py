"""Inception FID: safe weight loading and conversion (everywhere), and, where torch-fidelity is installed
(the `inception` extra, which needs torchvision; CI runs these in a second environment), features and FID
checked against torch-fidelity's own implementation and a whole CLIP + Inception ablation run.

No published weights can be downloaded here, so the network under test carries seeded random weights saved
the way torch-fidelity's published file is (a pickled state dict) and converted by our converter."""

import json
import os
import pickle
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from zs2_kernels.evaluation import inception, metrics

try:
    import torch_fidelity  # imports torchvision: fails beside the CPU-only torch of the main CI venv

    HAS_FIDELITY = True
except ImportError:
    HAS_FIDELITY = False
needs_fidelity = pytest.mark.skipif(not HAS_FIDELITY, reason="needs torch-fidelity + torchvision "
                                    "(pip install 'zs2_kernels[inception]'; CI runs these in a second venv)")


# --------------------------------------------------------------------------- everywhere
def test_bad_feature_layer():
    with pytest.raises(ValueError, match=r"fid feature must be one of \(64, 192, 768, 2048\), got 100"):
        inception.load_inception(100)


def test_pickled_weights_are_refused_with_the_conversion_command(tmp_path):
    path = tmp_path / "pt_inception.pth"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(ValueError, match=r"--inception-weights must be a \.safetensors.*python -m zs2_kernels"
                                         r"\.evaluation\.inception pt_inception\.pth pt_inception\.safetensors"):
        inception.load_inception(64, str(path))


def test_missing_weights_file_names_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="--inception-weights .*missing.safetensors does not exist"):
        inception.load_inception(2048, str(tmp_path / "missing.safetensors"))


@pytest.mark.skipif(HAS_FIDELITY, reason="torch-fidelity is installed here")
def test_missing_torch_fidelity_names_the_extra(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(1)}, path)
    with pytest.raises(RuntimeError, match=r"pip install 'zs2_kernels\[inception\]'"):
        inception.load_inception(2048, str(path))


def test_convert_round_trip(tmp_path):
    state = {"Conv.weight": torch.randn(4, 3, 3, 3), "Conv.bias": torch.randn(4)[::2],  # non-contiguous
             "bn.num_batches_tracked": torch.tensor(7)}
    torch.save(state, tmp_path / "w.pth")
    assert inception.convert_weights(tmp_path / "w.pth", tmp_path / "w.safetensors") == 3
    loaded = load_file(tmp_path / "w.safetensors")
    assert loaded.keys() == state.keys()
    for key in state:
        assert torch.equal(loaded[key], state[key]) and loaded[key].dtype == state[key].dtype
    assert sorted(os.listdir(tmp_path)) == ["w.pth", "w.safetensors"]  # no temporary left behind


class _Payload:
    """Unpickling this would create a file: the tensors-only loader must refuse before that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_convert_refuses_code_in_the_pickle(tmp_path):
    marker = tmp_path / "code-ran"
    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"w": _Payload(str(marker))}, handle, protocol=2)
    with pytest.raises(ValueError, match="not a tensors-only PyTorch state dict"):
        inception.convert_weights(tmp_path / "evil.pth", tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("content", [[torch.ones(1)], {}, {"w": 3}], ids=["list", "empty", "not-a-tensor"])
def test_convert_refuses_non_state_dicts(tmp_path, content):
    torch.save(content, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        inception.convert_weights(tmp_path / "w.pth", tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_convert_command_line(tmp_path, capsys):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    assert inception.main([str(tmp_path / "w.pth"), str(tmp_path / "w.safetensors")]) == 0
    assert "1 tensors" in capsys.readouterr().out
    assert inception.main([str(tmp_path / "w.pth"), str(tmp_path / "w.bin")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
    assert inception.main([str(tmp_path / "none.pth"), str(tmp_path / "x.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ablation_refuses_pickled_inception_weights_before_sampling(tiny_clip_dir, tmp_path, capsys):
    from zs2_kernels.evaluation.cli import ablate_main

    torch.save({"w": torch.ones(1)}, tmp_path / "inception.pth")
    (tmp_path / "prompts.txt").write_text("a cat\n")
    code = ablate_main(["--study", "components", "--out", str(tmp_path / "out"), "--scorer", "clip",
                        "--clip-model", tiny_clip_dir,
                        "--inception-weights", str(tmp_path / "inception.pth"),
                        "--prompts", str(tmp_path / "prompts.txt")])
    assert code == 2
    assert "--inception-weights must be a .safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- with torch-fidelity
@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """Seeded random InceptionV3 weights: (published-style .pth, converted .safetensors)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity_inception

    cls = fidelity_inception.FeatureExtractorInceptionV3
    with mock.patch.object(fidelity_inception, "load_state_dict_from_url", return_value=None), \
            mock.patch.object(cls, "load_state_dict", lambda self, state: None):
        network = cls("inception-v3-compat", ["2048"])
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():  # variance-preserving, so deep features neither vanish nor explode
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.data = torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
    folder = tmp_path_factory.mktemp("inception")
    torch.save(network.state_dict(), folder / "inception.pth")
    inception.convert_weights(folder / "inception.pth", folder / "inception.safetensors")
    return folder / "inception.pth", folder / "inception.safetensors"


def image_set(count, seed, brightness=0.0):
    """Smooth random colour images, 32 x 32, uint8 [N, 3, H, W]."""
    coarse = torch.rand((count, 3, 4, 4), generator=torch.Generator().manual_seed(seed))
    images = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    return ((images + brightness).clamp(0, 1) * 255).round().to(torch.uint8)


@needs_fidelity
@pytest.mark.parametrize("feature", inception.FEATURE_LAYERS)
def test_features_equal_torch_fidelity(random_inception, feature):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    pth, safetensors = random_inception
    ours = inception.load_inception(feature, str(safetensors))
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", [str(feature)], feature_extractor_weights_path=str(pth))
    images = image_set(5, seed=1)
    with torch.no_grad():
        got, expected = ours(images), theirs(images)[0]
    assert got.shape == (5, feature)
    assert expected.abs().max() > 1e-3  # the random network passes signal through
    assert torch.equal(got, expected)  # the same network and weights: bit-identical (measured on CPU)


@needs_fidelity
def test_fid_equals_torch_fidelity(random_inception):
    """Our path (features -> torchmetrics FID on stored features) against torch-fidelity's calculate_metrics."""
    pth, safetensors = random_inception
    real, fake = image_set(80, seed=2), image_set(80, seed=3, brightness=0.15)
    network = inception.load_inception(64, str(safetensors))
    with torch.no_grad():
        ours = metrics.FeatureFID(network(real).double()).distance(network(fake).double())

    class Images(torch.utils.data.Dataset):
        def __init__(self, images):
            self.images = images

        def __len__(self):
            return len(self.images)

        def __getitem__(self, index):
            return self.images[index]

    theirs = torch_fidelity.calculate_metrics(
        input1=Images(fake), input2=Images(real), fid=True, cuda=False, cache=False, verbose=False,
        feature_extractor_weights_path=str(pth), feature_layer_fid="64", batch_size=40,
        save_cpu_ram=True)  # no loader worker processes
    assert theirs["frechet_inception_distance"] > 1.0  # the brightness shift is visible
    assert ours == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)  # measured: 1e-7


@needs_fidelity
def test_wrong_safetensors_is_named(tmp_path):
    save_file({"fc.weight": torch.ones(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="does not hold FID Inception weights"):
        inception.load_inception(64, str(tmp_path / "other.safetensors"))


@needs_fidelity
def test_ablation_with_clip_and_inception(random_inception, tiny_clip_dir, tmp_path):
    from zs2_kernels.evaluation.cli import ablate_main

    from tiny_pipelines import tiny_pipeline

    model = tmp_path / "model"
    tiny_pipeline("sd15").save_pretrained(model, safe_serialization=True)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match="rank-deficient"):  # 12 frames per config, 64-dim features
        code = ablate_main(["--study", "components", "--model", str(model), "--prompts", str(prompts), "--seeds", "2",
                            "--frames", "3", "--steps", "2", "--scorer", "clip", "--clip-model", tiny_clip_dir,
                            "--inception-weights", str(random_inception[1]), "--fid-feature", "64",
                            "--out", str(out), "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["fid_reference"].startswith("inception-64 vs ")
    for config in ("zs2", "no_dependency_noise", "no_momentum_attention", "neither"):
        summary = results["summary"][config]
        # > 0 also for "neither": the image-prior reference is drawn from seeds disjoint from the studied ones
        assert np.isfinite(summary["fid"]["mean"]) and summary["fid"]["mean"] > 1e-6
        assert 0 <= summary["clip_score"]["mean"] <= 100
    assert "inception-64" in (out / "results.md").read_text()
