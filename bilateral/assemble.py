"""RunSpec -> nn.Module: the one place that knows which network each model kind is."""

from __future__ import annotations

from torch import nn

from bilateral.experiment import RunSpec
from bilateral.models import BilateralNet, UnilateralNet, build_backbone


def build_model(spec: RunSpec, num_fine: int, num_coarse: int) -> nn.Module:
    """An untrained network for a training run (ensembles are assembled from their members)."""
    cfg = spec.model

    def backbone(name: str) -> nn.Module:
        return build_backbone(name, width=cfg.width, bn_momentum=cfg.bn_momentum)

    if spec.kind == "hemisphere-fine":
        return UnilateralNet(backbone(spec.backbone), num_fine, None, cfg.dropout)
    if spec.kind == "hemisphere-coarse":
        return UnilateralNet(backbone(spec.backbone), None, num_coarse, cfg.dropout)
    if spec.kind == "unilateral":
        return UnilateralNet(backbone(spec.backbone), num_fine, num_coarse, cfg.dropout)
    if spec.kind in ("bilateral-specialised", "bilateral-unspecialised"):
        right = backbone(spec.right_backbone or spec.backbone)
        return BilateralNet(backbone(spec.backbone), right, num_fine, num_coarse, cfg.dropout)
    raise ValueError(f"{spec.kind} runs are not built from scratch")
