"""Inter-hemispheric (callosal) connections: two hemispheres that exchange features at chosen depths.

The hemispheres run stage by stage side by side; after the chosen stages an exchange lets each
side read the other. Exchanges (all start as the identity, except `sum`, so that a net built from
trained hemispheres starts as the specialised bilateral net it extends):
  sum     left + right and right + left (no parameters; equal channels)
  concat  each side + 1x1 conv of [left, right] back to its width (conv initialised to zero)
  gate    each side's channels scaled by 1 + tanh(MLP(pooled other side)) (last layer zero)
The heads read the concatenated pooled streams; what the connections carried into a side counts
as that side's in the analysis' head attribution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bilateral.errors import ConfigError
from bilateral.models.cifar_resnet import CifarResNet
from bilateral.models.nets import BilateralNet
from bilateral.models.resnet9 import ResNet9

CONNECTIONS = ("sum", "concat", "gate")


def backbone_stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's forward before pooling, as stages (its residual stages), and its pooling."""
    if isinstance(backbone, ResNet9):
        b = backbone
        return [nn.Sequential(b.prep, b.layer1, b.res1), b.layer2, nn.Sequential(b.layer3, b.res2)]
    if isinstance(backbone, CifarResNet):
        return [nn.Sequential(backbone.stem, backbone.stages[0]), *backbone.stages[1:]]
    raise ConfigError(
        f"callosal connections need a backbone built in stages (resnet9, resnet18, resnet34), not "
        f"{type(backbone).__name__}: choose one of those for both hemispheres"
    )


def default_depths(backbone: nn.Module) -> list[int]:
    """After each residual stage: ResNet-9's res1 and res2 (stages 1 and 3); every CIFAR ResNet stage."""
    return [1, 3] if isinstance(backbone, ResNet9) else list(range(1, len(backbone_stages(backbone)) + 1))


class SumExchange(nn.Module):
    def __init__(self, left: int, right: int) -> None:
        super().__init__()
        if left != right:
            raise ConfigError(
                f"a sum exchange needs equal channels, got {left} and {right}: use concat or gate"
            )

    def forward(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        return left + right, right + left


class ConcatExchange(nn.Module):
    def __init__(self, left: int, right: int) -> None:
        super().__init__()
        self.to_left, self.to_right = nn.Conv2d(left + right, left, 1), nn.Conv2d(left + right, right, 1)
        for conv in (self.to_left, self.to_right):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        both = torch.cat([left, right], dim=1)
        return left + self.to_left(both), right + self.to_right(both)


class GateExchange(nn.Module):
    def __init__(self, left: int, right: int, reduction: int = 4) -> None:
        super().__init__()
        self.to_left, self.to_right = self._gate(right, left, reduction), self._gate(left, right, reduction)

    @staticmethod
    def _gate(c_in: int, c_out: int, reduction: int) -> nn.Sequential:
        hidden = max(1, c_in // reduction)
        gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, c_out),
        )
        nn.init.zeros_(gate[-1].weight)
        nn.init.zeros_(gate[-1].bias)
        return gate

    def forward(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        scale_left = 1 + torch.tanh(self.to_left(right))[:, :, None, None]
        scale_right = 1 + torch.tanh(self.to_right(left))[:, :, None, None]
        return left * scale_left, right * scale_right


EXCHANGES = {"sum": SumExchange, "concat": ConcatExchange, "gate": GateExchange}


class CallosalNet(BilateralNet):
    """A BilateralNet whose hemispheres exchange features after the stages in `depths` (1-based).
    The hemispheres keep BilateralNet's parameter names, so trained hemisphere runs load into it."""

    def __init__(
        self,
        left: nn.Module,
        right: nn.Module,
        num_fine: int,
        num_coarse: int,
        dropout: float,
        connection: str,
        depths: list[int] | None = None,
    ) -> None:
        super().__init__(left, right, num_fine, num_coarse, dropout)
        if connection not in EXCHANGES:
            raise ConfigError(f"unknown connection {connection!r}: choose one of {', '.join(CONNECTIONS)}")
        self._stages = (backbone_stages(left), backbone_stages(right))  # not registered: same modules
        if len(self._stages[0]) != len(self._stages[1]):
            raise ConfigError("callosal hemispheres need the same number of stages: use one backbone family")
        depths = sorted(depths or default_depths(left))
        if (
            not depths
            or depths[0] < 1
            or depths[-1] > len(self._stages[0])
            or len(set(depths)) != len(depths)
        ):
            raise ConfigError(
                f"callosal depths {depths} must be distinct stages in 1..{len(self._stages[0])} of "
                f"{type(left).__name__}"
            )
        shapes = self._stage_shapes()
        exchanges = {}
        for d in depths:
            (cl, hl, wl), (cr, hr, wr) = shapes[0][d - 1], shapes[1][d - 1]
            if (hl, wl) != (hr, wr):
                raise ConfigError(f"after stage {d} the hemispheres' maps differ ({hl}x{wl} vs {hr}x{wr})")
            exchanges[str(d)] = EXCHANGES[connection](cl, cr)
        self.callosum = nn.ModuleDict(exchanges)
        self.connection, self.depths = connection, depths

    @torch.no_grad()
    def _stage_shapes(self) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        was_training = self.training
        self.eval()
        shapes: tuple[list, list] = ([], [])
        for side, stages in enumerate(self._stages):
            x = torch.zeros(2, 3, 32, 32)
            for stage in stages:
                x = stage(x)
                shapes[side].append(tuple(x.shape[1:]))
        self.train(was_training)
        return shapes

    def streams(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Each hemisphere's pooled features, after every exchange."""
        left, right = x, x
        for d, (stage_l, stage_r) in enumerate(zip(*self._stages, strict=True), start=1):
            left, right = stage_l(left), stage_r(right)
            if str(d) in self.callosum:
                left, right = self.callosum[str(d)](left, right)
        return self.left.pool(left), self.right.pool(right)

    def left_features(self, x: Tensor) -> Tensor:
        return self.streams(x)[0]

    def right_features(self, x: Tensor) -> Tensor:
        return self.streams(x)[1]

    def features(self, x: Tensor) -> Tensor:
        return torch.cat(self.streams(x), dim=1)
