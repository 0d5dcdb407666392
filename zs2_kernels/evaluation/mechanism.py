"""Where momentum attention acts, on any model: per self-attention layer, how much its output changes between mu = 0
(plain self-attention) and a given mu, as a relative norm, on one UNet call over one video's frames.

Video metrics cannot see momentum attention on the embedded model (16-64 tokens per self-attention: consecutive-frame
differences 0.0291 at mu = 0 vs 0.0300 at mu = 1); this measure shows where and how much it changes the network's
activations, so a reader of a real-model run can see it act (or not) layer by layer.
"""

from __future__ import annotations

import torch

from ..attention import install_momentum_attention
from ..ops.noise import dependency_noise
from ..sampling.conditioning import encode_conditioning


@torch.no_grad()
def momentum_effect(pipe, prompt: str, *, momentum: float = 0.98, num_frames: int = 8, timestep: int = 500,
                    noise_lambda: float = 0.01, seed: int = 0, height: int | None = None,
                    width: int | None = None) -> dict[str, float]:
    """{self-attention layer name: ||out_mu − out_0|| / ||out_0||} of its output on one UNet call.

    The call: one video of ``num_frames`` frames of dependency noise (``noise_lambda``, ``seed``) at the
    scheduler timestep ``timestep``, conditioned on ``prompt`` without guidance, at the model's native size
    unless ``height``/``width`` are given. Both runs see the same input, so 0 means the layer is unaffected.
    """
    factor = pipe.vae_scale_factor
    height = height or pipe.unet.config.sample_size * factor
    width = width or pipe.unet.config.sample_size * factor
    device, dtype = pipe._execution_device, next(pipe.unet.parameters()).dtype
    shape = (1, num_frames, pipe.unet.config.in_channels, height // factor, width // factor)
    latents = dependency_noise(shape, noise_lambda, seed=seed, device=device).flatten(0, 1).to(dtype)
    hidden, extra = encode_conditioning(pipe, [prompt], None, 1, False, height, width).for_frames(num_frames)
    outputs = {mu: _attention_outputs(pipe.unet, latents, timestep, hidden, extra, mu, num_frames)
               for mu in (0.0, momentum)}
    return {name: float((outputs[momentum][name].float() - plain.float()).norm() / plain.float().norm())
            for name, plain in outputs[0.0].items()}


def _attention_outputs(unet, latents, timestep, hidden, extra, momentum, num_frames) -> dict[str, torch.Tensor]:
    """The output of every self-attention layer on one UNet call with momentum attention at ``momentum``."""
    names = {module: name for name, module in unet.named_modules()}
    outputs, hooks = {}, []
    handle = install_momentum_attention(unet, momentum, num_frames)
    try:
        for module, _ in handle.layers:
            hooks.append(module.register_forward_hook(
                lambda module, args, output: outputs.__setitem__(names[module], output.detach().clone())))
        unet(latents, timestep, encoder_hidden_states=hidden, added_cond_kwargs=extra)
    finally:
        for hook in hooks:
            hook.remove()
        handle.restore()
    return outputs
