"""The compiled path, sample_video(compile=...): options checked, one graph per chunk length (the first chunk's empty
carried state included), no graph break, reuse across calls, equal to eager (bit for bit with dynamo's eager
backend; within inductor's rounding with inductor), ControlNets compiled too, the user's modules untouched."""

import copy

import pytest
import torch
from torch._dynamo.utils import counters

import zs2_kernels
from zs2_kernels.sampling.compiling import compile_options, compiled

from helpers import gpu_only
from tiny_pipelines import tiny_pipeline, tiny_variant

TRACE_ONLY = {"backend": "eager"}  # dynamo's tracing without inductor: structure checks in seconds
COMMON = dict(num_inference_steps=2, guidance_scale=7.5, noise_lambda=0.01, momentum=0.7, seed=3,
              output_type="latent", progress=False)


@pytest.fixture
def pipe():
    return tiny_pipeline("sd15", seed=1)


def sample(pipe, **extra):
    return zs2_kernels.sample_video(pipe, ["a cat", "a dog"], **COMMON, **extra).frames


def new_graphs(run) -> int:
    """Graphs dynamo compiled while ``run()`` ran."""
    counters.clear()
    run()
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("value, expected", [
    (False, None), (None, None), (True, {"fullgraph": True, "dynamic": False}),
    ("default", {"fullgraph": True, "dynamic": False}),
    ("max-autotune", {"fullgraph": True, "dynamic": False, "mode": "max-autotune"}),
    ({"backend": "eager", "dynamic": None}, {"fullgraph": True, "dynamic": None, "backend": "eager"})])
def test_compile_options(value, expected):
    assert compile_options(value) == expected


@pytest.mark.parametrize("value, error, match", [
    ("fast", ValueError, "compile must be False, True, one of"), (1, TypeError, "compile must be a bool"),
    ({"mod": "max-autotune"}, ValueError, r"compile has keys torch.compile does not take: \['mod'\]"),
    (["default"], TypeError, "compile must be")])
def test_bad_compile_is_refused_before_any_work(pipe, value, error, match):
    with pytest.raises(error, match=match):
        sample(pipe, num_frames=2, compile=value)


def test_one_graph_per_chunk_length_and_reused_across_calls(pipe):
    """8 frames in chunks of 3 (3, 3, 2): two graphs, the first chunk's empty state sharing the length-3 graph;
    other videos made of the same chunk lengths, and repeated calls, compile nothing."""
    eager = sample(pipe, num_frames=8, frame_chunk=3)
    compiled_video = []
    assert new_graphs(lambda: compiled_video.append(sample(pipe, num_frames=8, frame_chunk=3, compile=TRACE_ONLY))) == 2
    assert torch.equal(compiled_video[0], eager)
    assert new_graphs(lambda: sample(pipe, num_frames=8, frame_chunk=3, compile=TRACE_ONLY)) == 0
    assert new_graphs(lambda: sample(pipe, num_frames=11, frame_chunk=3, compile=TRACE_ONLY)) == 0
    assert new_graphs(lambda: sample(pipe, num_frames=5, compile=TRACE_ONLY)) == 1  # unchunked: its own length


def test_unchunked_equals_eager_and_the_user_modules_are_untouched(pipe):
    unet = pipe.unet
    processors = dict(unet.attn_processors)
    assert torch.equal(sample(pipe, num_frames=4, compile=TRACE_ONLY), sample(pipe, num_frames=4))
    assert pipe.unet is unet and dict(unet.attn_processors) == processors  # restored, never replaced
    assert compiled(unet, compile_options(TRACE_ONLY)) is compiled(unet, compile_options(TRACE_ONLY))  # cached
    assert not hasattr(copy.deepcopy(unet), "_zs2_compiled") or not copy.deepcopy(unet)._zs2_compiled


def test_a_compiled_user_unet_is_compiled_from_what_it_wraps(pipe):
    eager = sample(pipe, num_frames=3)
    pipe.unet = torch.compile(pipe.unet, backend="eager")
    assert torch.equal(sample(pipe, num_frames=3, compile=TRACE_ONLY), eager)
    assert torch.equal(sample(pipe, num_frames=3), eager)  # the user's compiled UNet, used as given


def test_no_graph_break_with_momentum_attention_and_a_controlnet():
    """fullgraph=True makes any graph break an error; explain() also counts them for the guided path."""
    pipe = tiny_variant("controlnet")
    video = torch.rand(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    kwargs = dict(control_video=video, controlnet=pipe.controlnet, num_frames=4, frame_chunk=3)
    eager = zs2_kernels.sample_video(pipe, "a cat", **COMMON, **kwargs).frames
    assert new_graphs(lambda: zs2_kernels.sample_video(pipe, "a cat", **COMMON, **kwargs, compile=TRACE_ONLY)) == 4
    assert torch.equal(zs2_kernels.sample_video(pipe, "a cat", **COMMON, **kwargs, compile=TRACE_ONLY).frames, eager)
    handle = zs2_kernels.install_momentum_attention(pipe.unet, 0.7, 2)
    try:
        handle.set_num_frames(2, carry_state=True)
        handle.reset_state(traced=True)
        sample_input = torch.randn(4, 4, 8, 8)
        text = torch.randn(4, 16, pipe.unet.config.cross_attention_dim)
        explanation = torch._dynamo.explain(pipe.unet)(sample_input, 10, encoder_hidden_states=text)
    finally:
        handle.restore()
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_multi_controlnet_is_compiled_too():
    """MultiControlNetModel has no attention processors of its own (its nets do): compiling it must not ask for
    them (it raised "unet must be a diffusers model with attention processors")."""
    pipe = tiny_variant("controlnet")
    second = copy.deepcopy(pipe.controlnet)
    videos = [torch.rand(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    kwargs = dict(control_video=videos, controlnet=[pipe.controlnet, second], num_frames=3,
                  controlnet_conditioning_scale=[1.0, 0.5])
    eager = zs2_kernels.sample_video(pipe, "a cat", **COMMON, **kwargs).frames
    assert torch.equal(zs2_kernels.sample_video(pipe, "a cat", **COMMON, **kwargs, compile=TRACE_ONLY).frames, eager)


def test_inductor_output_equals_eager_within_its_rounding(pipe, tmp_path_factory, monkeypatch):
    """The one inductor compile of the suite (a tiny UNet: ~20 s on 2 cores)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "inductor"))
    eager = sample(pipe, num_frames=4, frame_chunk=2)  # two chunks of one length: the state carried, one graph
    torch.testing.assert_close(sample(pipe, num_frames=4, frame_chunk=2, compile=True), eager, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@gpu_only
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_on_gpu_equals_eager_also_with_cuda_graphs(mode, monkeypatch):
    """CUDA graphs replay into the same memory: the carried chunk state and the noise chain must survive that.

    TF32 off: with it (cuDNN's default) eager and compiled convolutions round to 10 bits differently, and
    guidance 7.5 amplifies that to ~1e-2 in the latents (measured on an H200), hiding any real difference.
    """
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    pipe = tiny_pipeline("sd15", seed=1).to("cuda")
    eager = sample(pipe, num_frames=7, frame_chunk=3)
    for _ in range(2):  # the second call replays the recorded graphs
        torch.testing.assert_close(sample(pipe, num_frames=7, frame_chunk=3, compile=mode), eager, rtol=1e-3,
                                   atol=1e-3)


def test_the_anchor_and_prompt_travel_compile_to_the_eager_video(pipe):
    """The anchored chain is drawn before the UNet runs, and travel's per-frame conditioning is sliced per chunk:
    neither changes the compiled graph's inputs' shapes, so the traced run equals eager."""
    travel = dict(COMMON, noise_lambda=0.3, noise_anchor=0.7, num_frames=6, frame_chunk=3)
    prompts = [{0: "a cat", 5: "a dog"}, "a bird"]
    eager = zs2_kernels.sample_video(pipe, prompts, **travel).frames
    assert torch.equal(zs2_kernels.sample_video(pipe, prompts, **travel, compile=TRACE_ONLY).frames, eager)
