"""VGG-11 (torchvision configuration "A", no BatchNorm), the paper's second backbone, in two forms.

`vgg11` (VGG11) is the authors' network: torchvision's VGG-11 up to its penultimate layer, so its
features are the classifier's 4096-d hidden layer (128,766,336 parameters). At 32 px the convs end
at 1x1x512, which the 7x7 adaptive pool replicates 49 times for Linear(25088, 4096).
`vgg11-features` (VGG11Features) is the convs alone, flattened to 512-d (9,220,480 parameters): the
cheap variant, without the classifier that holds 93% of the authors' parameters.

bn_momentum is accepted only so every backbone has the same signature: neither has BatchNorm.
"""

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from bilateral.models._layers import scale

POOL = 7  # torchvision's AdaptiveAvgPool2d((7, 7)) before the classifier
HIDDEN = 4096


def _stage_ends(features: nn.Sequential) -> list[nn.Module]:
    """The layer before each max-pool (the last conv+ReLU of each stage): Grad-CAM's targets."""
    layers = list(features)
    return [layers[i - 1] for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]


def _init_as_torchvision(module: nn.Module) -> None:
    """torchvision's VGG initialisation (VGG.__init__ with init_weights=True), for scaled widths."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class VGG11(nn.Module):
    """(B, 3, S, S) -> convs -> 7x7 adaptive pool -> Linear-ReLU-Dropout(0.5) twice -> (B, 4096 * width).

    At width 1 the layers and their initialisation are torchvision.models.vgg11(weights=None)'s.
    Other widths scale the conv channels and the classifier's hidden size alike (torchvision's VGG
    class fixes its classifier at 25088 -> 4096, so they are built from its make_layers and
    initialised as it initialises).
    """

    def __init__(self, width: float = 1.0, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if width == 1.0:
            vgg = torchvision.models.vgg11(weights=None)
            self.features, self.avgpool, self.classifier = vgg.features, vgg.avgpool, vgg.classifier[:-1]
        else:
            channels, hidden = scale(512, width), scale(HIDDEN, width)
            self.features = make_layers([c if c == "M" else scale(int(c), width) for c in cfgs["A"]])
            self.avgpool = nn.AdaptiveAvgPool2d((POOL, POOL))
            self.classifier = nn.Sequential(
                nn.Linear(channels * POOL * POOL, hidden),
                nn.ReLU(True),
                nn.Dropout(0.5),
                nn.Linear(hidden, hidden),
                nn.ReLU(True),
                nn.Dropout(0.5),
            )
            _init_as_torchvision(self)
        self.out_dim = scale(HIDDEN, width)
        self.gradcam_layers: list[nn.Module] = _stage_ends(self.features)  # the classifier has no maps

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class VGG11Features(nn.Module):
    """(B, 3, 32, 32) -> five max-pools -> (B, 512 * width, 1, 1) -> flattened features."""

    def __init__(self, width: float = 1.0, bn_momentum: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        self.gradcam_layers: list[nn.Module] = []  # the last conv+ReLU block of each stage
        c_in = 3
        for item in cfgs["A"]:
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
