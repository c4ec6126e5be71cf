"""The plan: which runs a sweep trains, what each run depends on, in which stage it runs.

The rows (`--models` names) and how each becomes runs come from the model kinds
(bilateral/kinds: the paper's plan is listed there); a run's stage is one after the latest of its
dependencies, so a backend can run each stage's runs in parallel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from bilateral.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TrainConfig
from bilateral.errors import ConfigError
from bilateral.kinds import Kind, all_kinds, kind_of, load_kind_modules


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
    plugin: str = ""  # the module declaring the kind, when it is not under bilateral/kinds

    @property
    def kind_spec(self) -> Kind:
        return kind_of(self.kind, self.plugin)

    @property
    def model_name(self) -> str:
        """The row this run belongs to in summary.csv."""
        return self.kind_spec.row_name(self)

    @property
    def backbone_name(self) -> str:
        right = self.right_backbone
        return f"{self.backbone}+{right}" if right and right != self.backbone else self.backbone

    @property
    def run_id(self) -> str:
        """Hash of what changes results: how often checkpoints are written does not."""
        identity = self.to_dict()
        identity["train"].pop("checkpoint_every")
        if not identity["plugin"]:  # the ids of built-in kinds' runs predate plug-ins
            identity.pop("plugin")
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
        return self.kind_spec.trains

    @property
    def fusion_key(self) -> str | None:
        """Runs with equal keys differ only in seed and pool member: same architecture, data and
        hyperparameters, so they can train as one fused network (--fuse). None: never fused."""
        if not self.trains or not self.kind_spec.fusable:
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
    """The names --models accepts (the rows of the table), in plan order."""
    load_kind_modules(cfg.plan.kind_modules)
    return [row for kind in all_kinds() for row in kind.rows(cfg)]


class PlanBuilder:
    """What a kind's add_runs builds runs with: the sweep's settings, and every run added so far."""

    def __init__(self, cfg: SweepConfig):
        self.common = dict(data=cfg.data, model=cfg.model, optim=cfg.optim, train=cfg.train)
        self.left, self.right = cfg.plan.backbone, cfg.plan.right_backbone or cfg.plan.backbone
        self.pool_size = cfg.plan.pool_size
        self.runs: dict[str, RunSpec] = {}
        self._row_kind = {row: kind for kind in all_kinds() for row in kind.rows(cfg)}

    def add(self, kind: str, backbone: str, seed: int, **fields) -> RunSpec:
        """The run of these settings (added once however many rows need it)."""
        spec = RunSpec(kind, backbone, seed, plugin=kind_of(kind).module, **self.common, **fields)
        return self.runs.setdefault(spec.run_id, spec)

    def row(self, row: str, seed: int) -> RunSpec:
        """The run of a row for a seed, added with what it depends on: how a kind asks for another."""
        return self._row_kind[row].add_runs(row, seed, self)


def build_plan(cfg: SweepConfig) -> Plan:
    known = model_names(cfg)
    wanted = known if cfg.plan.models in (["all"], []) else list(cfg.plan.models)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise ConfigError(f"unknown model kind(s) {', '.join(unknown)}: choose from all, {', '.join(known)}")
    plan = PlanBuilder(cfg)
    for seed in cfg.plan.seeds:
        for row in wanted:
            plan.row(row, seed)
    order = [kind.name for kind in all_kinds()]
    ordered = sorted(
        plan.runs.values(), key=lambda s: (order.index(s.kind), s.backbone, s.seed, s.member, s.top_k)
    )
    depth: dict[str, int] = {}

    def stage_of(spec: RunSpec) -> int:
        """One stage after the latest of its dependencies."""
        if spec.run_id not in depth:
            depth[spec.run_id] = max((stage_of(plan.runs[d]) + 1 for d in spec.depends_on), default=0)
        return depth[spec.run_id]

    stages: dict[int, list[RunSpec]] = {}
    for spec in ordered:
        stages.setdefault(stage_of(spec), []).append(spec)
    return Plan(stages=[stages[n] for n in sorted(stages)])
