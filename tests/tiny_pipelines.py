"""Tiny random diffusers pipelines built from config (no downloads): SD1.5-, SD2.1- and SDXL-style.

They exercise the real loading and sampling code paths in seconds on a CPU.
"""

import importlib.util
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

MAX_TOKENS = 16


def _benchmark_models():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "random_models.py"
    spec = importlib.util.spec_from_file_location("zs2_benchmarks_random_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_tokenizer():
    """The benchmarks' character-level CLIP tokenizer (benchmarks/random_models.py), padding to 16 tokens."""
    return _benchmark_models().character_tokenizer(MAX_TOKENS)


def _text_config(vocab_size, **extra):
    return CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=vocab_size, max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1, **extra)


def _vae():
    return AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8, sample_size=16)


def _scheduler():
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def tiny_pipeline(style="sd15", seed=0):
    """A random pipeline of the given style: "sd15", "sd21" (linear projections, per-block heads) or "sdxl"."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    unet_common = dict(block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4,
                       out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8)
    if style == "sdxl":
        unet = UNet2DConditionModel(**unet_common, cross_attention_dim=64, attention_head_dim=(2, 4),
                                    use_linear_projection=True, addition_embed_type="text_time",
                                    addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + 32,
                                    transformer_layers_per_block=(1, 2))
        return StableDiffusionXLPipeline(
            vae=_vae(), text_encoder=CLIPTextModel(_text_config(len(tokenizer))),
            text_encoder_2=CLIPTextModelWithProjection(_text_config(len(tokenizer), projection_dim=32)),
            tokenizer=tokenizer, tokenizer_2=tiny_tokenizer(), unet=unet, scheduler=_scheduler())
    if style == "sd21":
        unet = UNet2DConditionModel(**unet_common, cross_attention_dim=32, attention_head_dim=(2, 4),
                                    use_linear_projection=True, upcast_attention=True)
    else:
        unet = UNet2DConditionModel(**unet_common, cross_attention_dim=32, attention_head_dim=8)
    return StableDiffusionPipeline(vae=_vae(), text_encoder=CLIPTextModel(_text_config(len(tokenizer))),
                                   tokenizer=tokenizer, unet=unet, scheduler=_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def tiny_variant(kind, seed=0):
    """Tiny pipelines of the other diffusers families, sharing ``tiny_pipeline``'s components.

    kind: "controlnet", "multi-controlnet", "pix2pix" (a UNet with 8 input channels: latents + image),
    "img2img", "sdxl-controlnet" or "sdxl-img2img". Control images are 16 x 16 (the UNet's native size).
    """
    from diffusers import (
        ControlNetModel,
        StableDiffusionControlNetPipeline,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionXLControlNetPipeline,
        StableDiffusionXLImg2ImgPipeline,
    )
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    base = tiny_pipeline("sdxl" if kind.startswith("sdxl") else "sd15", seed=seed)
    components = {name: value for name, value in base.components.items() if value is not None}
    torch.manual_seed(seed + 1)

    def controlnet():
        net = ControlNetModel.from_unet(base.unet, conditioning_embedding_out_channels=(8, 16))
        with torch.no_grad():  # its output convolutions start at zero: a fresh ControlNet would change nothing
            for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
                conv.weight.normal_(std=0.1)
        return net

    if kind == "controlnet":
        return StableDiffusionControlNetPipeline(**base.components, controlnet=controlnet())
    if kind == "multi-controlnet":
        return StableDiffusionControlNetPipeline(**base.components,
                                                 controlnet=MultiControlNetModel([controlnet(), controlnet()]))
    if kind == "sdxl-controlnet":
        return StableDiffusionXLControlNetPipeline(**components, controlnet=controlnet())
    if kind == "pix2pix":
        config = {**base.unet.config, "in_channels": 8}
        components["unet"] = UNet2DConditionModel.from_config(config)
        return StableDiffusionInstructPix2PixPipeline(**components, safety_checker=None, feature_extractor=None,
                                                      requires_safety_checker=False)
    if kind == "img2img":
        return StableDiffusionImg2ImgPipeline(**base.components)
    if kind == "sdxl-img2img":
        return StableDiffusionXLImg2ImgPipeline(**components)
    raise ValueError(f"unknown kind {kind!r}")
