"""Backbones by name, so configs and run specs can name them as strings."""

from collections.abc import Callable

from torch import nn

from bilateral.errors import ConfigError
from bilateral.models.cifar_resnet import resnet18, resnet34
from bilateral.models.resnet9 import ResNet9
from bilateral.models.vgg import VGG11

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet9": ResNet9,
    "vgg11": VGG11,
    "resnet18": resnet18,
    "resnet34": resnet34,
}


def build_backbone(name: str, width: float = 1.0, bn_momentum: float = 0.1) -> nn.Module:
    """A backbone mapping (B, 3, 32, 32) -> (B, out_dim), with `out_dim` and `gradcam_layers`.

    width multiplies every channel count (for CPU-sized runs; 1.0 is the paper's size).
    bn_momentum follows PyTorch's convention (weight of the new batch): the default 0.1 is
    PyTorch's; the authors' code used 0.9. VGG-11 has no BatchNorm and ignores it.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}: use one of {', '.join(sorted(BACKBONES))}")
    if width <= 0:
        raise ConfigError(f"backbone width must be positive, got {width}: use 1.0 for the paper's size")
    return BACKBONES[name](width=width, bn_momentum=bn_momentum)
