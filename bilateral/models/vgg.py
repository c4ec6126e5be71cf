"""VGG-11 (torchvision configuration "A", no BatchNorm), the paper's second backbone."""

from torch import Tensor, nn

from bilateral.models._layers import scale

CONFIG_A: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """(B, 3, 32, 32) -> five max-pools -> (B, 512 * width, 1, 1) -> flattened features.

    bn_momentum is accepted only so every backbone has the same signature: VGG-11 "A" has no BatchNorm.
    """

    def __init__(self, width: float = 1.0, bn_momentum: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        self.gradcam_layers: list[nn.Module] = []  # the last conv+ReLU block of each stage
        c_in = 3
        for item in CONFIG_A:
            if item == "M":
                self.gradcam_layers.append(layers[-1])
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = scale(int(item), width)
            layers.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.out_dim = c_in

    def forward(self, x: Tensor) -> Tensor:
        return self.flatten(self.features(x))
