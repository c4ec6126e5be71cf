"""ResNet-9 hemisphere, exactly as in the authors' 2023 code (6,568,000 parameters at width 1), and
its wide-receptive-field twin: the same layers and parameters with every convolution after the
first dilated (a local and a global substrate at equal parameter count)."""

from torch import Tensor, nn

from bilateral.models._layers import conv_bn_relu, scale


class Residual(nn.Module):
    """x + ReLU(BN(conv(ReLU(BN(conv(x)))))): the output is not passed through a final ReLU."""

    def __init__(self, channels: int, bn_momentum: float, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels, bn_momentum, dilation),
            conv_bn_relu(channels, channels, bn_momentum, dilation),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """(B, 3, 32, 32) -> (B, 512 * width) features.

    bn_momentum uses PyTorch's convention (weight of the new batch). PyTorch's default 0.1 is ours;
    the authors set 0.9, which makes the running statistics track mostly the latest batch.
    dilation > 1 dilates every convolution after the first (resnet9-dilated: dilation 2).
    """

    def __init__(self, width: float = 1.0, bn_momentum: float = 0.1, dilation: int = 1) -> None:
        super().__init__()
        c64, c128, c256, c512 = (scale(c, width) for c in (64, 128, 256, 512))
        d = dilation
        self.prep = conv_bn_relu(3, c64, bn_momentum)
        self.layer1 = nn.Sequential(conv_bn_relu(c64, c128, bn_momentum, d), nn.MaxPool2d(2))
        self.res1 = Residual(c128, bn_momentum, d)
        self.layer2 = nn.Sequential(conv_bn_relu(c128, c256, bn_momentum, d), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(conv_bn_relu(c256, c512, bn_momentum, d), nn.MaxPool2d(2))
        self.res2 = Residual(c512, bn_momentum, d)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c512
        self.gradcam_layers: list[nn.Module] = [self.res1, self.res2]

    def forward(self, x: Tensor) -> Tensor:
        x = self.res1(self.layer1(self.prep(x)))
        x = self.res2(self.layer3(self.layer2(x)))
        return self.pool(x)


def resnet9_dilated(width: float = 1.0, bn_momentum: float = 0.1) -> ResNet9:
    return ResNet9(width, bn_momentum, dilation=2)
