"""Temporal momentum attention: the limits mu = 0 (plain self-attention) and mu = 1 (Text2Video-Zero's
cross-frame attention to frame 0) on tiny SD1.5/SD2.1/SDXL UNets, installation and restoration."""

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
    CrossFrameAttnProcessor2_0,
)

import zs2_kernels

from tiny_pipelines import tiny_pipeline

VIDEOS, FRAMES = 2, 3


@pytest.fixture(scope="module", params=["sd15", "sd21", "sdxl"])
def unet(request):
    return tiny_pipeline(request.param).unet.eval()


def unet_inputs(unet, halves):
    gen = torch.Generator().manual_seed(0)
    batch = halves * VIDEOS * FRAMES
    sample = torch.randn(batch, 4, 8, 8, generator=gen)
    text = torch.randn(batch, 5, unet.config.cross_attention_dim, generator=gen)
    added = None
    if unet.config.addition_embed_type == "text_time":
        added = {"text_embeds": torch.randn(batch, 32, generator=gen), "time_ids": torch.rand(batch, 6, generator=gen)}
    return sample, text, added


def run(unet, processors, halves):
    sample, text, added = unet_inputs(unet, halves)
    original = dict(unet.attn_processors)
    unet.set_attn_processor(processors)
    try:
        with torch.no_grad():
            return unet(sample, 500, encoder_hidden_states=text, added_cond_kwargs=added).sample
    finally:
        unet.set_attn_processor(original)


def self_attention_only(unet, make):
    return {name: make() if name.endswith("attn1.processor") else AttnProcessor2_0() for name in unet.attn_processors}


@pytest.mark.parametrize("halves", [1, 2], ids=["no_guidance", "guidance"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_mu_zero_is_plain_self_attention(unet, halves, backend):
    ours = run(unet, self_attention_only(unet, lambda: zs2_kernels.TemporalMomentumAttnProcessor(0.0, FRAMES,
                                                                                                 backend=backend)),
               halves)
    stock = run(unet, AttnProcessor2_0(), halves)
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("halves", [1, 2], ids=["no_guidance", "guidance"])
def test_mu_one_is_cross_frame_attention_to_frame_zero(unet, halves):
    ours = run(unet, self_attention_only(unet, lambda: zs2_kernels.TemporalMomentumAttnProcessor(1.0, FRAMES)), halves)
    peer = run(unet, self_attention_only(unet, lambda: CrossFrameAttnProcessor2_0(batch_size=halves * VIDEOS)),
               halves)
    torch.testing.assert_close(ours, peer, rtol=1e-5, atol=1e-5)


def test_intermediate_momentum_differs_from_both_limits(unet):
    def with_mu(mu):
        return run(unet, self_attention_only(unet, lambda: zs2_kernels.TemporalMomentumAttnProcessor(mu, FRAMES)), 2)

    middle = with_mu(0.5)
    assert not torch.allclose(middle, with_mu(0.0), atol=1e-4)
    assert not torch.allclose(middle, with_mu(1.0), atol=1e-4)


def test_install_restore_and_is_installed(unet):
    before = dict(unet.attn_processors)
    with zs2_kernels.install_momentum_attention(unet, 0.9, FRAMES) as handle:
        assert zs2_kernels.is_installed(unet)
        current = unet.attn_processors
        for name, processor in current.items():
            if name.endswith("attn2.processor"):
                assert processor is before[name]  # cross-attention untouched
            else:
                assert isinstance(processor, zs2_kernels.TemporalMomentumAttnProcessor)
        assert len(handle.processors) == sum(name.endswith("attn1.processor") for name in current)
    assert not zs2_kernels.is_installed(unet)
    assert all(unet.attn_processors[name] is proc for name, proc in before.items())


def test_compiled_unet_gets_it_on_the_module_it_wraps(unet):
    compiled = torch.compile(unet, backend="eager")
    before = dict(unet.attn_processors)
    with zs2_kernels.install_momentum_attention(compiled, 0.9, FRAMES) as handle:
        assert zs2_kernels.is_installed(compiled) and zs2_kernels.is_installed(unet)
        assert handle.processors and handle.check_installed()
        assert len(handle.processors) == sum(name.endswith("attn1.processor") for name in before)
    assert not zs2_kernels.is_installed(compiled)
    assert all(unet.attn_processors[name] is proc for name, proc in before.items())


def test_model_without_self_attention_raises():
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D",) * 2,
                                up_block_types=("UpBlock2D",) * 2, mid_block_type="UNetMidBlock2D", norm_num_groups=8,
                                cross_attention_dim=8)
    with pytest.raises(ValueError, match="no self-attention"):
        zs2_kernels.install_momentum_attention(torch.compile(unet, backend="eager"), 0.9, FRAMES)


def test_raises_when_nothing_got_installed(unet, monkeypatch):
    monkeypatch.setattr(unet, "set_attn_processor", lambda processors: None)  # a model that ignores the call
    with pytest.raises(RuntimeError, match="did not install"):
        zs2_kernels.install_momentum_attention(unet, 0.9, FRAMES)


def test_carried_state_is_float32_and_holds_no_chunk(unet):
    """Chunked sampling keeps per layer only the EMA state, not a view of the layer's whole smoothed chunk."""
    handle = zs2_kernels.install_momentum_attention(unet, 0.9, FRAMES)
    try:
        handle.set_num_frames(FRAMES, carry_state=True)
        sample, text, added = unet_inputs(unet, 2)
        with torch.no_grad():
            unet(sample, 500, encoder_hidden_states=text, added_cond_kwargs=added)
    finally:
        handle.restore()
    for processor in handle.processors:
        state = processor.state
        assert state.dtype == torch.float32 and state.dim() == 1 and state.numel() % (2 * VIDEOS) == 0
        assert state.untyped_storage().nbytes() == state.numel() * state.element_size()


def test_warns_when_replaced_after_installation(unet):
    handle = zs2_kernels.install_momentum_attention(unet, 0.9, FRAMES)
    replacement = AttnProcessor2_0()
    unet.set_attn_processor(replacement)  # what attention slicing / LoRA loading can do
    with pytest.warns(RuntimeWarning, match="replaced"):
        assert handle.check_installed() is False
    with pytest.warns(RuntimeWarning, match="left layers"):
        handle.restore()
    assert all(processor is replacement for processor in unet.attn_processors.values())  # not undone


def test_a_second_installation_is_refused_naming_the_first(unet):
    """Two installations could only be undone in one order (in creation order is_installed stayed True), and two
    calls sampling with one pipeline would couple each other's frames: the second is refused."""
    before = dict(unet.attn_processors)
    first = zs2_kernels.install_momentum_attention(unet, 0.9, FRAMES)
    with pytest.raises(RuntimeError, match=r"already installed on this UNet2DConditionModel by "
                                           r"<MomentumAttentionHandle at 0x\w+: momentum 0.9 on \d+ layers"):
        zs2_kernels.install_momentum_attention(unet, 0.5, FRAMES)
    assert all(p.momentum == 0.9 for p in first.processors) and zs2_kernels.is_installed(unet)
    first.restore()
    first.restore()  # a second restore changes nothing
    assert all(unet.attn_processors[name] is proc for name, proc in before.items())
    again = zs2_kernels.install_momentum_attention(unet, 0.5, FRAMES)  # free again
    again.restore()
    assert not zs2_kernels.is_installed(unet)


def test_processors_set_by_hand_are_not_installed_over(unet):
    before = dict(unet.attn_processors)
    unet.set_attn_processor(self_attention_only(unet, lambda: zs2_kernels.TemporalMomentumAttnProcessor(0.5, FRAMES)))
    try:
        with pytest.raises(RuntimeError, match="set directly, not by install_momentum_attention"):
            zs2_kernels.install_momentum_attention(unet, 0.9, FRAMES)
    finally:
        unet.set_attn_processor(before)


def test_two_threads_cannot_both_install(unet):
    """The check and the installation happen under one lock: of two threads racing, exactly one installs."""
    import threading

    outcomes, barrier = [], threading.Barrier(2)

    def install():
        barrier.wait()
        try:
            outcomes.append(zs2_kernels.install_momentum_attention(unet, 0.9, FRAMES))
        except RuntimeError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=install) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handles = [o for o in outcomes if isinstance(o, zs2_kernels.MomentumAttentionHandle)]
    assert len(handles) == 1 and len(outcomes) == 2
    handles[0].restore()


@pytest.mark.parametrize("call", [lambda m: zs2_kernels.install_momentum_attention(m, 0.9, FRAMES),
                                  zs2_kernels.is_installed], ids=["install", "is_installed"])
def test_refuses_objects_without_attention_processors(call):
    with pytest.raises(TypeError, match="unet must be a diffusers model"):
        call(torch.nn.Linear(2, 2))

    class Pipeline:
        unet = None
    with pytest.raises(TypeError, match="pass pipe.unet"):
        call(Pipeline())


def test_batch_not_multiple_of_frames_raises(unet):
    processors = self_attention_only(unet, lambda: zs2_kernels.TemporalMomentumAttnProcessor(0.5, 4))
    with pytest.raises(ValueError, match="num_frames"):
        run(unet, processors, 1)  # batch 6 is not a multiple of 4


@pytest.mark.parametrize("momentum, frames, error", [(1.5, 3, ValueError), (0.5, 0, ValueError), (0.5, 2.0, TypeError)])
def test_processor_bad_arguments(momentum, frames, error):
    with pytest.raises(error, match="momentum|num_frames"):
        zs2_kernels.TemporalMomentumAttnProcessor(momentum, frames)


def test_a_bad_backend_is_refused_at_install_not_at_the_first_call(unet):
    """The attack found install_momentum_attention(unet, 0.5, 4, backend="x") accepted, failing only in the UNet."""
    before = dict(unet.attn_processors)
    with pytest.raises(ValueError, match=r"backend must be one of \('triton', 'cuda', 'torch'\), got 'x'"):
        zs2_kernels.install_momentum_attention(unet, 0.5, 4, backend="x")
    assert dict(unet.attn_processors) == before and not zs2_kernels.is_installed(unet)
