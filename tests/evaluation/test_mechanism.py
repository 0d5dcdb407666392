"""The mechanism-level measure of momentum attention: per self-attention layer, the relative change of its output
between mu = 0 and mu, against a direct computation on one layer, zero where it must be, processors restored."""

import pytest
import torch

from zs2_kernels.evaluation.mechanism import momentum_effect

from tiny_pipelines import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline("sd15", seed=3)


def test_every_self_attention_layer_is_measured_and_mu_zero_changes_nothing(pipe):
    processors = dict(pipe.unet.attn_processors)
    effect = momentum_effect(pipe, "a cat", momentum=0.0, num_frames=4)
    assert set(effect) == {name[: -len(".processor")] for name in processors if name.endswith("attn1.processor")}
    assert all(value == 0.0 for value in effect.values())
    assert dict(pipe.unet.attn_processors) == processors


def test_the_change_grows_with_mu_and_is_zero_for_one_frame(pipe):
    small, large = (momentum_effect(pipe, "a cat", momentum=mu, num_frames=4) for mu in (0.3, 1.0))
    assert all(large[name] > small[name] > 0 for name in small)
    assert all(value == 0.0 for value in momentum_effect(pipe, "a cat", momentum=1.0, num_frames=1).values())


def test_the_first_layer_matches_a_direct_computation(pipe):
    """Layer inputs are the same in both runs up to the first self-attention, so there the relative change is
    ||attn(h; K, V from EMA(h)) - attn(h)|| / ||attn(h)||, computed here from the layer's own weights."""
    name = next(n for n, _ in pipe.unet.named_modules() if n.endswith("attn1"))
    attn = pipe.unet.get_submodule(name)
    captured = {}

    def keep_input(module, args, kwargs):
        captured.setdefault("h", args[0] if args else kwargs["hidden_states"])

    hook = attn.register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        effect = momentum_effect(pipe, "a cat", momentum=0.5, num_frames=4)
    finally:
        hook.remove()
    h = captured["h"]
    frames = h.view(1, 4, *h.shape[1:])
    ema = [frames[:, 0]]
    for f in range(1, 4):
        ema.append(0.5 * ema[-1] + 0.5 * frames[:, f])
    smoothed = torch.stack(ema, 1).view_as(h)

    def attention(keys_input):
        q, k, v = attn.to_q(h), attn.to_k(keys_input), attn.to_v(keys_input)
        split = lambda t: t.view(t.shape[0], -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)  # noqa: E731
        out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
        return attn.to_out[0](out.transpose(1, 2).flatten(2))

    with torch.no_grad():
        plain, momentum = attention(h), attention(smoothed)
    assert effect[name] == pytest.approx(float((momentum - plain).norm() / plain.norm()), rel=1e-4)
