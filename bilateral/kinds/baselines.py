"""The baselines: one backbone with both heads (also the ensembles' pool), and the mean of the K
best pool members' logits, chosen on validation. A comparison row may give the ensemble a pool of
its own size (options: {pool: N}): ensemble-top2 with pool 2 is two nets and no selection, the same
number of backbones and inference FLOPs as a bilateral net."""

from __future__ import annotations

from bilateral.errors import CheckpointError, ConfigError
from bilateral.kinds.registry import Kind, register
from bilateral.models import Ensemble as EnsembleNet
from bilateral.models import UnilateralNet, build_backbone, count_parameters

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
        size = plan.options.get("pool", plan.pool_size)
        k = int(row.removeprefix(f"{self.name}-top"))
        if not isinstance(size, int) or not 1 <= k <= size:
            raise ConfigError(
                f"{row}: options.pool={size!r} must be an integer of at least the ensemble's {k} members"
            )
        pool = tuple(UNILATERAL.add_runs(UNILATERAL.name, seed, plan, m).run_id for m in range(size))
        return plan.add(self.name, plan.left, seed, top_k=k, depends_on=pool)

    def row_name(self, spec):
        return f"{self.name}-top{spec.top_k}"

    def network(self, spec, num_fine, num_coarse):
        """Its top_k members, as they infer together (mean of logits)."""
        return EnsembleNet([UNILATERAL.build(spec, num_fine, num_coarse) for _ in range(spec.top_k)])

    def assemble(self, spec, store, data, device):
        """The mean of logits of the top_k pool members, ranked by validation score (never by test),
        each at the checkpoint its score was measured on."""
        from bilateral.assemble import tested_model

        members = []
        for dep_id in spec.depends_on:
            dep = store.run(dep_id)
            if not dep.is_finished():
                raise CheckpointError(
                    f"{spec.run_id} needs pool member {dep_id}, which has not finished: rerun the sweep"
                )
            record = dep.read_record()
            members.append((-record["val_score"], record["member"], dep, record))
        chosen = sorted(members, key=lambda m: m[:2])[: spec.top_k]
        nets = [tested_model(dep, record, data.num_fine, data.num_coarse) for _, _, dep, record in chosen]
        model = EnsembleNet(nets).to(device)
        return model, {
            "members": [dep.run_id for _, _, dep, _ in chosen],
            "params": count_parameters(model),
            "trainable_params": 0,
            "train_time_s": 0.0,
            "wall_s": 0.0,
        }


UNILATERAL = register(Unilateral())
ENSEMBLE = register(Ensemble())
