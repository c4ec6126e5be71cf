"""The two hemispheres, each trained alone on one label: the left on fine, the right on coarse."""

from __future__ import annotations

from bilateral.kinds.registry import Kind, register
from bilateral.models import UnilateralNet, build_backbone


class Hemisphere(Kind):
    head: str

    def add_runs(self, row, seed, plan):
        return plan.add(self.name, plan.left if self.role == "left" else plan.right, seed)

    def build(self, spec, num_fine, num_coarse):
        backbone = build_backbone(spec.backbone, width=spec.model.width, bn_momentum=spec.model.bn_momentum)
        fine, coarse = (num_fine, None) if self.head == "fine" else (None, num_coarse)
        return UnilateralNet(backbone, fine, coarse, spec.model.dropout)

    def weight_decay(self, optim):
        return optim.hemisphere_weight_decay


class LeftHemisphere(Hemisphere):
    name, role, head = "hemisphere-fine", "left", "fine"
    how_to_get = "--models hemisphere-fine"


class RightHemisphere(Hemisphere):
    name, role, head = "hemisphere-coarse", "right", "coarse"
    how_to_get = "--models hemisphere-coarse"


LEFT = register(LeftHemisphere())
RIGHT = register(RightHemisphere())
