"""Backbones by name, so configs and run specs can name them as strings."""

from collections.abc import Callable

from torch import nn

from bilateral.errors import ConfigError
from bilateral.models.cifar_resnet import resnet18, resnet34
from bilateral.models.resnet9 import ResNet9, resnet9_dilated
from bilateral.models.vgg import VGG11, VGG11Features


def _vit_small(width: float = 1.0, bn_momentum: float = 0.1) -> nn.Module:
    from bilateral.models.vit import ViTSmall  # timm is imported only by the runs that use it

    return ViTSmall(width, bn_momentum)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet9": ResNet9,
    "resnet9-dilated": resnet9_dilated,
    "vit-small": _vit_small,
    "vgg11": VGG11,  # the authors': torchvision's VGG-11 to its 4096-d penultimate layer
    "vgg11-features": VGG11Features,  # its convs alone, 512-d: the cheap variant
    "resnet18": resnet18,
    "resnet34": resnet34,
}
UNFUSABLE = {"vit-small"}  # --fuse lays K nets side by side in grouped convolutions; attention has none


def build_backbone(name: str, width: float = 1.0, bn_momentum: float = 0.1) -> nn.Module:
    """A backbone mapping (B, 3, S, S) -> (B, out_dim), with `out_dim` and `gradcam_layers`.

    width multiplies every channel count (for CPU-sized runs; 1.0 is the paper's size).
    bn_momentum follows PyTorch's convention (weight of the new batch): the default 0.1 is
    PyTorch's; the authors' code used 0.9. VGG-11 has no BatchNorm and ignores it.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}: use one of {', '.join(sorted(BACKBONES))}")
    if width <= 0:
        raise ConfigError(f"backbone width must be positive, got {width}: use 1.0 for the paper's size")
    return BACKBONES[name](width=width, bn_momentum=bn_momentum)
