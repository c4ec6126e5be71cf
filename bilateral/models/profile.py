"""What a backbone is as a substrate: parameters, FLOPs, and the receptive field of its last
feature map, measured rather than derived by hand, so that any backbone (a plug-in's too) gets them.

Receptive field, from the gradient of the centre unit of the last of `gradcam_layers` with respect
to the input (untrained weights, fixed random images): `rf_px` is the side of the box of pixels with
any gradient (the theoretical field, clipped to the image); `rf_effective_px` the side of the
centred square holding 90% of the gradient's magnitude (the effective field, Luo et al. 2016).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bilateral.models.checkpoint import count_parameters
from bilateral.models.registry import build_backbone

MASS = 0.9  # of the gradient's magnitude inside the effective receptive field
PROBES = 4  # random images the gradient is summed over


@functools.lru_cache(maxsize=32)
def profile_backbone(name: str, width: float, image_size: int) -> dict:
    """{params, flops (one image, forward), rf_px, rf_effective_px, image_px} of a backbone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = build_backbone(name, width=width).eval()
        x = torch.randn(PROBES, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            backbone(x[:1])
    rf, effective = receptive_field(backbone, x)
    return {
        "params": count_parameters(backbone),
        "flops": int(counter.get_total_flops()),
        "rf_px": rf,
        "rf_effective_px": effective,
        "image_px": image_size,
    }


def receptive_field(backbone: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(theoretical, effective) receptive field side in pixels of the centre unit of the last
    gradcam layer's output ((B, C, H, W))."""
    captured: list[torch.Tensor] = []
    hook = backbone.gradcam_layers[-1].register_forward_hook(lambda m, i, o: captured.append(o))
    x = x.clone().requires_grad_(True)
    try:
        backbone(x)
    finally:
        hook.remove()
    fmap = captured[-1]
    h, w = fmap.shape[-2:]
    fmap[:, :, h // 2, w // 2].sum().backward()
    grad = x.grad.abs().sum(dim=(0, 1))  # (S, S)
    rows, cols = torch.nonzero(grad > 0, as_tuple=True)
    theoretical = int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)
    # the centre unit's position in pixels, then the smallest centred square holding MASS of |grad|
    size = x.shape[-1]
    cy, cx = (h // 2 + 0.5) * size / h, (w // 2 + 0.5) * size / w
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    half = torch.maximum((yy - cy).abs(), (xx - cx).abs())  # Chebyshev distance: squares
    order = torch.argsort(half.flatten())
    mass = torch.cumsum(grad.flatten()[order], 0) / grad.sum()
    reach = half.flatten()[order][int(torch.searchsorted(mass, MASS))]
    return theoretical, int(min(size, 2 * round(float(reach)))) or 1
