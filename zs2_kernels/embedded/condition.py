"""The control condition of the embedded ControlNet: an edge map of digit frames, computed with torch only.

Why edges: an edge map keeps what a guide video should steer, the digit's outline (its shape) and where that
outline is in every frame (its motion), and drops what the prompt and the model should decide, such as stroke
brightness and background. It is computed the same way on any frames, so users can turn their own digit frames
into a guide video, and tests can compare the condition of an output with the condition of its guide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Sobel kernels divided by 4, so a sharp 0 -> 1 step has gradient magnitude 1.
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
#: Each map is divided by its own maximum, but by no less than this: faint or blank frames stay near 0.
EDGE_FLOOR = 0.1
_RANGE_SLACK = 1e-4


def digit_condition(images: torch.Tensor) -> torch.Tensor:
    """Edge map of digit frames: the condition the embedded ControlNet was trained on.

    Args:
        images: frames in [0, 1] as a floating tensor [N, 3, H, W] (channels averaged to grey),
            [N, 1, H, W] or [N, H, W].

    Returns:
        [N, 3, H, W] in [0, 1] (grey copied into 3 channels, as diffusers' ControlNet pipelines take it), in
        the dtype and on the device of ``images``: the Sobel gradient magnitude of each grey frame, divided by
        its maximum (at least ``EDGE_FLOOR``), so the map does not depend on the digit's contrast.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [N, 3, H, W], [N, 1, H, W] or [N, H, W], "
                        f"got {type(images).__name__} (convert with torch.as_tensor)")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating tensor in [0, 1], got {images.dtype} "
                        "(for uint8 frames pass images / 255)")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape [N, 3, H, W], [N, 1, H, W] or [N, H, W], "
                         f"got {list(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"images must hold at least one frame, got {list(images.shape)}")
    if images.shape[-2] == 0 or images.shape[-1] == 0:
        raise ValueError(f"images must have at least one pixel per frame, got {list(images.shape)}")
    grey = images.float().mean(dim=1, keepdim=True)
    if not (torch.isfinite(grey).all() and -_RANGE_SLACK <= grey.min() <= grey.max() <= 1.0 + _RANGE_SLACK):
        raise ValueError(f"images must be finite values in [0, 1], got range [{grey.min().item():.4g}, "
                         f"{grey.max().item():.4g}] (for images in [-1, 1] pass (images + 1) / 2)")
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.T]).unsqueeze(1).to(grey.device)
    gradients = F.conv2d(F.pad(grey.clamp(0.0, 1.0), (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = gradients.square().sum(dim=1, keepdim=True).sqrt()
    scale = magnitude.amax(dim=(1, 2, 3), keepdim=True).clamp_min(EDGE_FLOOR)
    edges = (magnitude / scale).clamp(0.0, 1.0)
    return edges.expand(-1, 3, -1, -1).to(images.dtype).contiguous()
