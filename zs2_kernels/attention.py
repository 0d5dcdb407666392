"""Temporal momentum attention (zs2_kernels/DESIGN.md §1.2) as a diffusers attention processor.

In every self-attention layer (``attn1``) frame f attends with its own queries to keys and values of
the EMA over frames  y_0 = h_0,  y_f = mu·y_{f-1} + (1-mu)·h_f.  Because the EMA weights sum to 1 and
``to_k``/``to_v`` are affine, EMA(to_k(h)) = to_k(EMA(h)): the EMA is applied once to the layer input
(one tensor, not two). mu = 0 is plain self-attention, mu = 1 cross-frame attention to frame 0
(Text2Video-Zero). The UNet batch is laid out (guidance half, video, frame), outer to inner.
"""

from __future__ import annotations

import threading
import warnings

import torch
import torch.nn.functional as F

from ._checks import caller_stacklevel, check_int, check_number
from .ops.backend import check_backend_name, resolve_backend
from .ops.momentum import ema_frames


class TemporalMomentumAttnProcessor:
    """Self-attention with keys/values from the momentum EMA over frames.

    Args:
        momentum: mu in [0, 1].
        num_frames: frames per video in the batch the UNet sees (the innermost batch axis).
        backend: backend of the momentum update (default: see :mod:`zs2_kernels.ops.backend`).

    ``carry_state`` (set by :class:`MomentumAttentionHandle` for chunked videos) keeps ``state``, the
    float32 EMA value after the last frame, flat [G·tokens·channels] (unrounded and in its own storage, not a
    view of the layer's output), so the next chunk of frames continues the same recursion bit for bit.
    """

    def __init__(self, momentum: float, num_frames: int, *, backend: str | None = None):
        self.momentum = check_number("momentum", momentum, 0.0, 1.0)
        self.num_frames = check_int("num_frames", num_frames, 1)
        check_backend_name(backend)  # a bad name is refused at install, not at the first UNet call
        self.backend = backend
        self.carry_state = False
        self.state: torch.Tensor | None = None
        self.handle: MomentumAttentionHandle | None = None  # the installation it belongs to, if any

    def _momentum_keys_input(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = hidden_states.shape
        if batch % self.num_frames:
            raise ValueError(f"the UNet batch ({batch}) is not a multiple of num_frames ({self.num_frames}); "
                             "the batch must be laid out (guidance half, video, frame)")
        frames = hidden_states.view(batch // self.num_frames, self.num_frames, tokens * channels)
        smoothed, state = ema_frames(frames, self.momentum, self.state if self.carry_state else None,
                                     resolve_backend(frames.device, self.backend), self.carry_state)
        if self.carry_state:
            self.state = state.view(-1)
        return smoothed.view(batch, tokens, channels)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is not None:
            raise ValueError("TemporalMomentumAttnProcessor is for self-attention (attn1) layers only; "
                             "cross-attention layers keep their own processor")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        keys_input = self._momentum_keys_input(hidden_states.contiguous())
        key = attn.to_k(keys_input)
        value = attn.to_v(keys_input)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                       dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.to(query.dtype)))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _is_self_attention(name: str) -> bool:
    return name.endswith("attn1.processor")


def unwrap_compiled(module):
    """The module a ``torch.compile``d one wraps (``_orig_mod``, however deep), or ``module`` itself."""
    while isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):
        module = module._orig_mod
    return module


def _uncompiled(unet):
    """The model a ``torch.compile``d module wraps (``_orig_mod``), where its attention processors live.

    Raises TypeError unless it is a diffusers model with attention processors (a UNet, a ControlNet...).
    """
    unet = unwrap_compiled(unet)
    if not (hasattr(unet, "attn_processors") and hasattr(unet, "set_attn_processor")):
        hint = " (pass pipe.unet, not the pipeline)" if hasattr(unet, "unet") else ""
        raise TypeError(f"unet must be a diffusers model with attention processors (attn_processors, "
                        f"set_attn_processor), got {type(unet).__name__}{hint}")
    return unet


class MomentumAttentionHandle:
    """Our processors installed on a UNet; ``restore()`` (or leaving the ``with`` block) puts the originals back."""

    def __init__(self, unet, layers: list, originals: list):
        self.unet = unet
        self.layers = layers  # (attention module, our processor) per self-attention layer
        self.originals = originals  # the processor each of those layers had before
        self.processors = [processor for _, processor in layers]
        for processor in self.processors:
            processor.handle = self
        self._warned = False

    def __repr__(self) -> str:
        momentum = self.processors[0].momentum
        return (f"<MomentumAttentionHandle at {id(self):#x}: momentum {momentum} on {len(self.layers)} layers of "
                f"{type(self.unet).__name__} at {id(self.unet):#x}>")

    def set_num_frames(self, num_frames: int, *, carry_state: bool) -> None:
        """Frames per video in the next UNet calls; ``carry_state`` continues the EMA across chunks."""
        for processor in self.processors:
            processor.num_frames = num_frames
            processor.carry_state = carry_state

    def reset_state(self, *, traced: bool = False) -> None:
        """Forget carried EMA states (call before the first chunk of every denoising step).

        ``traced`` (the model runs compiled): the forgotten state is an empty float32 tensor on the model's
        device whose sizes a compiled graph leaves unknown, so the first chunk runs the graph of the later ones
        (the op reads an empty state as none); None would make a graph of its own.
        """
        # The first parameter's device: diffusers' ``model.device`` walks every parameter (~1 ms per call).
        device = next(self.unet.parameters()).device if traced else None
        for processor in self.processors:
            processor.state = torch.empty(0, device=device) if traced else None
            if traced:
                torch._dynamo.decorators.mark_unbacked(processor.state, 0)

    def check_installed(self) -> bool:
        """Warn once (and return False) if something replaced our processors since installation."""
        intact = all(module.processor is processor for module, processor in self.layers)
        if not intact and not self._warned:
            warnings.warn("temporal momentum attention was replaced on the UNet after installation (e.g. by "
                          "enable_attention_slicing, xformers or a LoRA load); frames are no longer coupled. "
                          "Install it after such calls.", RuntimeWarning, stacklevel=caller_stacklevel())
            self._warned = True
        return intact

    def restore(self) -> None:
        """Put the original processors back on the layers that still run ours (a second call does nothing).

        A layer whose processor was replaced meanwhile (attention slicing, a LoRA load...) is left as found, with
        a warning: what replaced it is not ours to undo.
        """
        replaced = False
        with _INSTALLING:
            for (module, processor), original in zip(self.layers, self.originals):
                if module.processor is processor:
                    module.set_processor(original)
                elif processor.handle is self:
                    replaced = True
                processor.handle = None
        if replaced:
            warnings.warn("restore() left layers whose processor had been replaced after installation as they "
                          "are", RuntimeWarning, stacklevel=2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
        return False


#: Held while an installation is checked and made, or undone: two threads sampling with one pipeline must not
#: both find the UNet free.
_INSTALLING = threading.Lock()


def install_momentum_attention(unet, momentum: float, num_frames: int, *, backend: str | None = None):
    """Install :class:`TemporalMomentumAttnProcessor` on every self-attention layer of ``unet``.

    Cross-attention layers keep their processors. A ``torch.compile``d UNet gets them on the module it
    wraps (the compiled forward picks them up by recompiling). Raises ValueError when the model has no
    self-attention layer, and RuntimeError when momentum attention is installed already (restore that handle
    first: two installations on one UNet could only be undone in one order, and two calls sampling with one
    pipeline at once would couple each other's frames) or when the processors did not end up installed:
    sampling would otherwise silently run plain per-frame attention. Returns a :class:`MomentumAttentionHandle`.
    """
    model = _uncompiled(unet)
    with _INSTALLING:
        return _install(model, momentum, num_frames, backend)


def _install(model, momentum: float, num_frames: int, backend: str | None) -> MomentumAttentionHandle:
    original = dict(model.attn_processors)
    ours = [processor for name, processor in original.items()
            if _is_self_attention(name) and isinstance(processor, TemporalMomentumAttnProcessor)]
    if ours:
        owner = (f"by {ours[0].handle!r}: call its restore() (or leave its with block) first" if ours[0].handle
                 else "(set directly, not by install_momentum_attention): put the original processors back first")
        raise RuntimeError(f"temporal momentum attention is already installed on this {type(model).__name__} "
                           f"{owner}")
    replaced = dict(original)
    layers, originals = [], []
    for name, module in model.named_modules():
        if _is_self_attention(f"{name}.processor") and f"{name}.processor" in original:
            processor = TemporalMomentumAttnProcessor(momentum, num_frames, backend=backend)
            replaced[f"{name}.processor"] = processor
            layers.append((module, processor))
            originals.append(original[f"{name}.processor"])
    if not layers:
        raise ValueError(f"{type(model).__name__} has no self-attention (attn1) layers to install momentum "
                         "attention on")
    model.set_attn_processor(replaced)
    if any(module.processor is not processor for module, processor in layers):
        model.set_attn_processor(original)
        raise RuntimeError(f"set_attn_processor of {type(model).__name__} did not install momentum attention")
    return MomentumAttentionHandle(model, layers, originals)


def is_installed(unet) -> bool:
    """True when every self-attention layer of ``unet`` (or of the module it compiles) runs momentum attention."""
    self_attention = [p for name, p in _uncompiled(unet).attn_processors.items() if _is_self_attention(name)]
    return bool(self_attention) and all(isinstance(p, TemporalMomentumAttnProcessor) for p in self_attention)
