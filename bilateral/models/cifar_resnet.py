"""CIFAR-style ResNet-18/34: 3x3 stem, no max-pool, four stages of BasicBlocks, 512-d features."""

from collections.abc import Sequence

from torch import Tensor, nn

from bilateral.models._layers import scale


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with a shortcut (1x1 conv+BN when the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, bn_momentum: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out, momentum=bn_momentum),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out, momentum=bn_momentum),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def zero_init_residuals(model: nn.Module) -> None:
    """Zero the last BatchNorm scale of every BasicBlock in `model`, so each block starts as its
    shortcut (Goyal et al. 2017; torchvision's zero_init_residual)."""
    for block in model.modules():
        if isinstance(block, BasicBlock):
            nn.init.zeros_(block.body[-1].weight)


class CifarResNet(nn.Module):
    """(B, 3, 32, 32) -> (B, 512 * width) features; `blocks` is the number of BasicBlocks per stage.

    bn_momentum uses PyTorch's convention (default 0.1; the authors' code used 0.9).
    """

    def __init__(self, blocks: Sequence[int], width: float = 1.0, bn_momentum: float = 0.1) -> None:
        super().__init__()
        c_in = scale(64, width)
        self.stem = nn.Sequential(
            nn.Conv2d(3, c_in, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_in, momentum=bn_momentum),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        for i, (channels, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            c_out = scale(channels, width)
            stage = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                stage.append(BasicBlock(c_in, c_out, stride, bn_momentum))
                c_in = c_out
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c_in
        self.gradcam_layers: list[nn.Module] = [stage[-1] for stage in self.stages]

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x)))


def resnet18(width: float = 1.0, bn_momentum: float = 0.1) -> CifarResNet:
    return CifarResNet((2, 2, 2, 2), width, bn_momentum)


def resnet34(width: float = 1.0, bn_momentum: float = 0.1) -> CifarResNet:
    return CifarResNet((3, 4, 6, 3), width, bn_momentum)
