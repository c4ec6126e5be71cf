"""Bilateral nets: two hemispheres side by side, fine and coarse heads on their concatenated
features. Specialised: the hemispheres are this seed's hemisphere runs, frozen; only the heads
train (the paper's model). Unspecialised: everything trained end to end."""

from __future__ import annotations

from typing import ClassVar

from bilateral.errors import CheckpointError
from bilateral.kinds.hemispheres import LEFT, RIGHT
from bilateral.kinds.registry import Kind, register
from bilateral.models import BilateralNet, build_backbone, load_state_strict


class Bilateral(Kind):
    role = "bilateral"

    def build(self, spec, num_fine, num_coarse):
        cfg = spec.model

        def backbone(name: str):
            return build_backbone(name, width=cfg.width, bn_momentum=cfg.bn_momentum)

        right = backbone(spec.right_backbone or spec.backbone)
        return BilateralNet(backbone(spec.backbone), right, num_fine, num_coarse, cfg.dropout)


class Specialised(Bilateral):
    name = "bilateral-specialised"
    reference, from_hemispheres = True, True
    colour = "tab:green"
    how_to_get = "--models bilateral-specialised (trains both hemispheres first)"
    right_row: ClassVar[str] = RIGHT.name  # the row whose run is the right hemisphere

    def add_runs(self, row, seed, plan):
        deps = (plan.row(LEFT.name, seed).run_id, plan.row(self.right_row, seed).run_id)
        return plan.add(self.name, plan.left, seed, right_backbone=plan.right, depends_on=deps)

    def prepare(self, spec, store, model):
        attach_hemispheres(spec, store, model)
        model.freeze_hemispheres(update_bn_stats=spec.model.frozen_bn_update)

    def trains_backbones(self, spec):
        return False


def attach_hemispheres(spec, store, model) -> None:
    """Load the best checkpoints of the run's two hemisphere dependencies, in order, into model.left
    and model.right (the backbone alone: a hemisphere's heads or projection stay behind)."""
    for dep_id, side in zip(spec.depends_on, (model.left, model.right), strict=True):
        dep = store.run(dep_id)
        if not dep.is_finished():
            raise CheckpointError(
                f"{spec.run_id} needs hemisphere run {dep_id}, which has not finished: rerun the "
                "sweep so that it trains first"
            )
        state = dep.load_checkpoint("best")["model"]
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        load_state_strict(side, backbone, source=str(dep.path("checkpoints/best.pt")))


class Unspecialised(Bilateral):
    name = "bilateral-unspecialised"
    colour = "tab:purple"
    how_to_get = "--models bilateral-unspecialised"

    def add_runs(self, row, seed, plan):
        return plan.add(self.name, plan.left, seed, right_backbone=plan.right)


SPECIALISED = register(Specialised())
UNSPECIALISED = register(Unspecialised())
