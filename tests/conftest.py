"""Test configuration: Triton kernels run in the CPU interpreter here (set before triton is imported)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

HAS_GPU = torch.cuda.is_available()
gpu_only = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU (run benchmarks/run_gpu.sh on a GPU machine)")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter rather than on a GPU."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped without one")
    config.addinivalue_line("markers", "slow: long-running test")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A randomly initialised CLIP (32-px images, tiny tokenizer) saved as a local folder, as users give one."""
    from tiny_pipelines import tiny_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                         vocab_size=len(tiny_tokenizer()), max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tiny_tokenizer())
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def nan_poisoned_outputs(monkeypatch):
    """Make torch.empty/empty_like return NaN-filled (float) or -1-filled (int) tensors.

    A kernel that forgets to write a masked tail then fails loudly instead of passing on luck.
    """
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(tensor):
        return tensor.fill_(float("nan") if tensor.is_floating_point() else -1)

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(real_empty_like(*a, **k)))


def assert_within_lowp_error(out, reference_fp32, torch_lowp, atol=1e-6):
    """flash-attention's rule: the kernel's error vs an fp32 reference is at most 2x plain PyTorch's
    error in the same low precision, plus a small atol. Also: nothing non-finite."""
    assert torch.isfinite(out.float()).all(), "output has NaN/inf (unwritten or overflowed elements)"
    kernel_err = (out.float() - reference_fp32.float()).abs().max().item()
    torch_err = (torch_lowp.float() - reference_fp32.float()).abs().max().item()
    assert kernel_err <= 2 * torch_err + atol, f"kernel error {kernel_err:.3g} > 2 x torch error {torch_err:.3g} + {atol}"
