"""Finding a hub model's configs: the local cache first, no network wait when the hub cannot be reached."""

import json
import urllib.error
import urllib.request

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants

import zs2_kernels
from zs2_kernels.embedded import embedded_model_path
from zs2_kernels.loading import read_model_config


def cache_snapshot(cache, hub_id, commit="0" * 40):
    """The hub client's cache layout (models--org--name/refs/main, snapshots/<commit>/...) holding the embedded
    model's config files under ``hub_id``."""
    folder = cache / f"models--{hub_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    for name in ("model_index.json", "unet/config.json", "vae/config.json"):
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text((embedded_model_path() / name).read_text())
    return snapshot


@pytest.fixture
def online_calls(monkeypatch, tmp_path):
    """An empty hub cache, offline mode off, and a record of every network attempt (none may succeed)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    calls = []
    real_download = huggingface_hub.hf_hub_download

    def download(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            calls.append(("hub client", args))
            raise AssertionError("the hub client was asked over the network")
        return real_download(*args, **kwargs)

    def urlopen(request, timeout=None):
        calls.append(("probe", request.full_url, timeout))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_a_cached_hub_model_is_read_without_network(online_calls, tmp_path):
    cache_snapshot(tmp_path / "cache", "someorg/digits")
    config = read_model_config("someorg/digits")
    assert config["unet"] == json.loads((embedded_model_path() / "unet" / "config.json").read_text())
    assert online_calls == []


def test_an_unreachable_hub_is_one_quick_refusal(online_calls):
    """An offline machine spent ~30 s in the hub client's five retries, a log line each, before refusing."""
    with pytest.raises(OSError, match=r"model 'someorg/missing': its pipeline files are not in the local cache and "
                                      r"the hub \(https://.*\) cannot be reached: \[Errno -2\] Name or service"):
        read_model_config("someorg/missing")
    assert [call[0] for call in online_calls] == ["probe"] and online_calls[0][2] <= 5


def test_offline_mode_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "is_offline_mode", lambda: True)
    with pytest.raises(OSError, match="not in the local cache, and HF_HUB_OFFLINE is set"):
        read_model_config("someorg/missing")


def test_cache_misses_of_every_kind_fall_through(monkeypatch, tmp_path):
    """A snapshot without its VAE config is not a usable cache entry: the files are sought on the hub."""
    snapshot = cache_snapshot(tmp_path / "cache", "someorg/partial")
    (snapshot / "vae" / "config.json").unlink()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "is_offline_mode", lambda: True)
    with pytest.raises(OSError, match="not in the local cache"):
        read_model_config("someorg/partial")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(dtype=torch.int8), TypeError, "dtype must be None, torch.float32/float16/bfloat16"),
    (dict(device="tpu"), ValueError, "device"),
])
def test_load_pipeline_checks_device_and_dtype_before_loading(kwargs, error, match):
    """The attack found load_pipeline(None, device="cuda") ending in torch's AssertionError and an int8 dtype in a
    transformers error, after loading."""
    with pytest.raises(error, match=match):
        zs2_kernels.load_pipeline(None, progress=False, **kwargs)


def test_fp16_on_cpu_loads_without_diffusers_false_alarm(capfd):
    """diffusers warns three times that fp16 "cannot run with cpu device"; with this torch it runs (tested), so the
    attack's --dtype fp16 on CPU printed a false alarm."""
    pipe = zs2_kernels.load_pipeline(None, dtype=torch.float16, device="cpu", progress=False)
    assert pipe.unet.dtype == torch.float16
    assert "cannot run with" not in capfd.readouterr().err


def test_a_damaged_json_file_is_named(tmp_path):
    """The attack found a garbage tokenizer.json reported as a bare "Expecting value: line 1 column 1"."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(embedded_model_path(), model)
    (model / "tokenizer" / "tokenizer.json").write_text("garbage{")
    with pytest.raises(ValueError, match=r"model .*: tokenizer/tokenizer.json is not valid JSON \(Expecting value"):
        zs2_kernels.load_pipeline(str(model), progress=False)
