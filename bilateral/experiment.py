"""The paper as a plan: which runs a sweep trains, what each run depends on, in which stage it runs.

Per seed:                                                    stage
  hemisphere-fine        left hemisphere, fine labels only       0
  hemisphere-coarse      right hemisphere, coarse labels only    0
  bilateral-unspecialised  both hemispheres + heads, end to end  0
  unilateral             one backbone, fine + coarse heads       0   (also member 0 of the pool)
  unilateral-resnet18/34 CIFAR ResNets with both heads           0
  pool member 1..P-1     more unilateral runs, other inits        0
  bilateral-specialised  frozen hemispheres, heads trained        1   <- hemisphere-fine, hemisphere-coarse
  ensemble-topK          mean logits of the K best pool members   1   <- the pool (chosen on validation)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from bilateral.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TrainConfig
from bilateral.errors import ConfigError

KINDS = (
    "hemisphere-fine",
    "hemisphere-coarse",
    "bilateral-specialised",
    "bilateral-unspecialised",
    "unilateral",
    "ensemble",
)
RESNET_BASELINES = ("resnet18", "resnet34")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's result; its run id is a hash of this."""

    kind: str
    backbone: str  # left hemisphere / the only backbone
    seed: int
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig
    train: TrainConfig
    right_backbone: str | None = None  # bilateral kinds: the right hemisphere's backbone
    member: int = 0  # ensemble pool member; member 0 is the unilateral baseline itself
    top_k: int = 0  # ensembles only
    depends_on: tuple[str, ...] = ()

    @property
    def model_name(self) -> str:
        """The row this run belongs to in summary.csv."""
        return f"ensemble-top{self.top_k}" if self.kind == "ensemble" else self.kind

    @property
    def backbone_name(self) -> str:
        right = self.right_backbone
        return f"{self.backbone}+{right}" if right and right != self.backbone else self.backbone

    @property
    def run_id(self) -> str:
        """Hash of what changes results: how often checkpoints are written does not."""
        identity = self.to_dict()
        identity["train"].pop("checkpoint_every")
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        member = f"-m{self.member}" if self.member else ""
        return f"{self.model_name}-{self.backbone_name}-s{self.seed}{member}-{digest}"

    @property
    def init_seed(self) -> int:
        """Seed of init, data order and augmentation: distinct per kind, backbone, seed and member."""
        key = f"{self.kind}/{self.backbone_name}/{self.seed}/{self.member}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")

    @property
    def trains(self) -> bool:
        return self.kind != "ensemble"

    @property
    def fusion_key(self) -> str | None:
        """Runs with equal keys differ only in seed and pool member: same architecture, data and
        hyperparameters, so they can train as one fused network (--fuse). None: never fused."""
        if not self.trains:
            return None
        fields = {k: v for k, v in self.to_dict().items() if k not in ("seed", "member", "depends_on")}
        return json.dumps(fields, sort_keys=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        sections = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
        kwargs = {k: (sections[k](**v) if k in sections else v) for k, v in d.items()}
        kwargs["depends_on"] = tuple(kwargs.get("depends_on", ()))
        return cls(**kwargs)


def group_name(group: list[RunSpec]) -> str:
    """Runs trained together (--fuse) are named by the first: <run id>+<number of others>."""
    return group[0].run_id if len(group) == 1 else f"{group[0].run_id}+{len(group) - 1}"


@dataclass
class Plan:
    """Runs in dependency order, grouped into stages a backend can run in parallel."""

    stages: list[list[RunSpec]] = field(default_factory=list)

    @property
    def runs(self) -> list[RunSpec]:
        return [spec for stage in self.stages for spec in stage]

    def describe(self) -> str:
        lines = []
        for i, stage in enumerate(self.stages):
            lines.append(f"stage {i}: {len(stage)} runs")
            for spec in stage:
                deps = f"  <- {', '.join(spec.depends_on)}" if spec.depends_on else ""
                lines.append(f"  {spec.run_id}{deps}")
        lines.append(f"total: {len(self.runs)} runs")
        return "\n".join(lines)


def model_names(cfg: SweepConfig) -> list[str]:
    """The names --models accepts, in plan order."""
    return [
        "hemisphere-fine",
        "hemisphere-coarse",
        "bilateral-specialised",
        "bilateral-unspecialised",
        "unilateral",
        *(f"unilateral-{b}" for b in RESNET_BASELINES),
        *(f"ensemble-top{k}" for k in cfg.plan.ensemble_top),
    ]


def build_plan(cfg: SweepConfig) -> Plan:
    known = model_names(cfg)
    wanted = known if cfg.plan.models in (["all"], []) else list(cfg.plan.models)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise ConfigError(f"unknown model kind(s) {', '.join(unknown)}: choose from all, {', '.join(known)}")

    common = dict(data=cfg.data, model=cfg.model, optim=cfg.optim, train=cfg.train)
    left, right = cfg.plan.backbone, cfg.plan.right_backbone or cfg.plan.backbone
    runs: dict[str, RunSpec] = {}

    def add(spec: RunSpec) -> RunSpec:
        runs.setdefault(spec.run_id, spec)
        return spec

    for seed in cfg.plan.seeds:

        def unilateral(backbone: str, member: int = 0, seed: int = seed) -> RunSpec:
            return add(RunSpec("unilateral", backbone, seed, member=member, **common))

        def hemispheres(seed: int = seed) -> tuple[RunSpec, RunSpec]:
            return (
                add(RunSpec("hemisphere-fine", left, seed, **common)),
                add(RunSpec("hemisphere-coarse", right, seed, **common)),
            )

        for name in wanted:
            if name in ("hemisphere-fine", "hemisphere-coarse"):
                hemispheres()
            elif name == "bilateral-specialised":
                deps = tuple(s.run_id for s in hemispheres())
                add(RunSpec(name, left, seed, right_backbone=right, depends_on=deps, **common))
            elif name == "bilateral-unspecialised":
                add(RunSpec(name, left, seed, right_backbone=right, **common))
            elif name == "unilateral":
                unilateral(left)
            elif name.startswith("unilateral-"):
                unilateral(name.removeprefix("unilateral-"))
            else:  # ensemble-topK
                pool = tuple(unilateral(left, m).run_id for m in range(cfg.plan.pool_size))
                k = int(name.removeprefix("ensemble-top"))
                add(RunSpec("ensemble", left, seed, top_k=k, depends_on=pool, **common))

    ordered = sorted(
        runs.values(), key=lambda s: (KINDS.index(s.kind), s.backbone, s.seed, s.member, s.top_k)
    )
    stages = [[s for s in ordered if not s.depends_on], [s for s in ordered if s.depends_on]]
    return Plan(stages=[stage for stage in stages if stage])
