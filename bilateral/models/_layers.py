"""Building blocks shared by the backbones."""

from torch import nn


def scale(channels: int, width: float) -> int:
    """Channel count at a width multiplier: rounded, never below 1 (width=1 is the paper's size)."""
    return max(1, round(channels * width))


def conv_bn_relu(c_in: int, c_out: int, bn_momentum: float, dilation: int = 1) -> nn.Sequential:
    """3x3 conv (no bias: BatchNorm's shift replaces it; dilated: as many weights, wider taps),
    BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out, momentum=bn_momentum),
        nn.ReLU(inplace=True),
    )
