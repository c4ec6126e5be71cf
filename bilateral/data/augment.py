"""The paper's augmentation (reflect-pad crop + horizontal flip) and normalisation as batched ops.

Everything happens on the batch's device in a few tensor operations, so augmentation never
leaves the GPU. Random numbers come from a CPU generator, so results do not depend on the device;
they reach a GPU through pinned memory without a blocking copy, so the host never waits for the
GPU to finish the previous step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(
    images: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random HxW crops of the reflect-padded batch, each flipped horizontally with p=0.5 (if flip).

    images: float (B, C, H, W). One gather picks every sample's window (and its mirror image).
    """
    b, c, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    draws = to_device_async(torch.cat([offsets, flips[None].long()]), images.device)  # one copy
    offsets, flips = draws[:2], draws[2].bool()
    padded = F.pad(images, (padding,) * 4, mode="reflect") if padding else images
    width = w + 2 * padding
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = torch.arange(w, device=images.device).expand(b, w)
    cols = offsets[1, :, None] + torch.where(flips[:, None], w - 1 - cols, cols)  # (B, W)
    flat = (rows[:, :, None] * width + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, flat).reshape(b, c, h, w)


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to a GPU through pinned memory and a non-blocking copy, because a
    copy from pageable memory makes the host wait until the GPU has finished all queued work."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def normalize(images_uint8_nchw: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """float32 (x / 255 - mean) / std with per-channel mean and std of shape (C,)."""
    x = images_uint8_nchw.float().div_(255)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
