"""The baselines: one backbone with both heads (also the ensembles' pool), and the mean of the K
best pool members' logits, chosen on validation."""

from __future__ import annotations

from bilateral.kinds.registry import Kind, register
from bilateral.models import UnilateralNet, build_backbone

RESNET_BASELINES = ("resnet18", "resnet34")  # CIFAR ResNets with both heads, rows of their own


class Unilateral(Kind):
    name = "unilateral"

    def rows(self, cfg):
        return [self.name, *(f"{self.name}-{b}" for b in RESNET_BASELINES)]

    def add_runs(self, row, seed, plan, member: int = 0):
        backbone = row.removeprefix(f"{self.name}-") if row != self.name else plan.left
        return plan.add(self.name, backbone, seed, member=member)

    def build(self, spec, num_fine, num_coarse):
        backbone = build_backbone(spec.backbone, width=spec.model.width, bn_momentum=spec.model.bn_momentum)
        return UnilateralNet(backbone, num_fine, num_coarse, spec.model.dropout)


class Ensemble(Kind):
    name, role, trains, fusable = "ensemble", "ensemble", False, False

    def rows(self, cfg):
        return [f"{self.name}-top{k}" for k in cfg.plan.ensemble_top]

    def add_runs(self, row, seed, plan):
        members = range(plan.pool_size)
        pool = tuple(UNILATERAL.add_runs(UNILATERAL.name, seed, plan, m).run_id for m in members)
        k = int(row.removeprefix(f"{self.name}-top"))
        return plan.add(self.name, plan.left, seed, top_k=k, depends_on=pool)

    def row_name(self, spec):
        return f"{self.name}-top{spec.top_k}"


UNILATERAL = register(Unilateral())
ENSEMBLE = register(Ensemble())
