"""The plan: which runs a sweep trains, what each run depends on, in which stage it runs.

The rows (`--models` names) and how each becomes runs come from the model kinds
(bilateral/kinds: the paper's plan is listed there); a run's stage is one after the latest of its
dependencies, so a backend can run each stage's runs in parallel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field

from bilateral.comparison import Comparison, Row, load_comparison
from bilateral.config import DataConfig, ModelConfig, OptimConfig, SweepConfig, TrainConfig, with_settings
from bilateral.errors import ConfigError
from bilateral.kinds import Kind, all_kinds, kind_of, load_kind_modules
from bilateral.models.registry import UNFUSABLE
from bilateral.tuning.tuned import chosen_for

LATER_DEFAULTS = {
    ("train", "eval_every"): 1,
    ("train", "test_checkpoint"): "best",
    ("data", "holdout_per_coarse"): 0,
    ("model", "zero_init_residual"): False,
    ("train", "head_epochs"): None,
    ("train", "evaluate_test"): True,
}
# A setting whose default changed: specs written before it existed meant this value.
LEGACY_VALUES = {("data", "pairing"): "run"}


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
    row: str = ""  # a comparison's own row (bilateral/comparison.py); "" = the kind's row
    options: dict = field(default_factory=dict)  # that row's options, read by its kind
    settings: dict = field(default_factory=dict)  # a row's own config settings ("train.eval_every": 2)
    tuned: dict = field(default_factory=dict)  # {source, row, settings} when launch/tune.py chose them

    @property
    def kind_spec(self) -> Kind:
        return kind_of(self.kind, self.plugin)

    @property
    def model_name(self) -> str:
        """The row this run belongs to in summary.csv: a run that a row with settings depends on
        is named by them, so it never shares a row with the same kind's run without them."""
        if self.row:
            return self.row
        name = self.kind_spec.row_name(self)
        return f"{name} [{settings_label(self.settings)}]" if self.settings else name

    @property
    def base_model(self) -> str:
        """The kind's own row this run is a variant of (its comparison row or settings aside)."""
        return self.kind_spec.row_name(self)

    @property
    def backbones(self) -> list[str]:
        """The distinct backbones of the run's network (left first)."""
        return list(dict.fromkeys([self.backbone, self.right_backbone or self.backbone]))

    @property
    def backbone_name(self) -> str:
        right = self.right_backbone
        return f"{self.backbone}+{right}" if right and right != self.backbone else self.backbone

    @property
    def run_id(self) -> str:
        """Hash of what changes results: how often checkpoints are written, and where a run is
        tracked, do not."""
        identity = self.to_dict()
        for key in ("checkpoint_every", "checkpoint_minutes", "mlflow", "wandb"):  # how a run is written
            # down, not its result
            identity["train"].pop(key)
        identity.pop("tuned")  # where settings came from: the settings themselves are in the sections
        for key in ("plugin", "row", "options", "settings"):  # unset, the paper's run ids stay as they were
            if not identity[key]:
                identity.pop(key)
        for (section, key), default in {**LATER_DEFAULTS, **LEGACY_VALUES}.items():  # so do settings added
            if identity[section][key] == default:  # since, at the value runs had before them
                identity[section].pop(key)
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        member = f"-m{self.member}" if self.member else ""
        return f"{self._id_name}-{self.backbone_name}-s{self.seed}{member}-{digest}"

    @property
    def _id_name(self) -> str:
        """model_name in characters every file system, shell and scheduler takes: a run a row's
        settings retrain is `hemisphere-fine_model.bn_momentum-0.9`, not `hemisphere-fine [...]`."""
        if self.row or not self.settings:
            return self.model_name
        slug = "_".join(f"{key}-{value}" for key, value in sorted(self.settings.items()))
        return f"{self.base_model}_{re.sub(r'[^A-Za-z0-9._-]', '-', slug)}"

    @property
    def init_seed(self) -> int:
        """Seed of initialisation and dropout: distinct per kind, backbone, seed and member."""
        key = f"{self.kind}/{self.backbone_name}/{self.seed}/{self.member}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")

    @property
    def data_seed(self) -> int:
        """Seed of data order and augmentation. Paired (data.pairing=seed): one per seed and pool
        member, so every arm of a seed trains on the same batches and augmentations and a paired
        test between arms pairs what it claims to; per run (run): the init seed, as before."""
        if self.data.pairing == "run":
            return self.init_seed
        key = f"data/{self.seed}/{self.member}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")

    @property
    def trains(self) -> bool:
        return self.kind_spec.trains

    @property
    def fusion_key(self) -> str | None:
        """Runs with equal keys differ only in seed and pool member: same architecture, data and
        hyperparameters, so they can train as one fused network (--fuse). None: never fused."""
        if not self.trains or not self.kind_spec.fusable or set(self.backbones) & UNFUSABLE:
            return None
        fields = {k: v for k, v in self.to_dict().items() if k not in ("seed", "member", "depends_on")}
        return json.dumps(fields, sort_keys=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        sections = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
        d = {k: (dict(v) if k in sections else v) for k, v in d.items()}
        for (section, key), value in LEGACY_VALUES.items():  # a spec written before the key existed
            d[section].setdefault(key, value)
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


def model_names(cfg: SweepConfig, comparison: Comparison | None = None) -> list[str]:
    """The names --models accepts: the comparison's rows, then every other row of a known kind."""
    rows = [row.name for row in (comparison or _comparison(cfg)).rows]
    return rows + [r for kind in all_kinds() for r in kind.rows(cfg) if r not in rows]


def _comparison(cfg: SweepConfig) -> Comparison:
    """plan.experiment with its kind modules loaded, and a kind's name (that is no row) expanded
    into the kind's rows."""
    comparison = load_comparison(cfg.plan.experiment)
    load_kind_modules([*comparison.kind_modules, *cfg.plan.kind_modules])
    offered = {r for kind in all_kinds() for r in kind.rows(cfg)}
    rows: list[Row] = []
    for row in comparison.rows:
        if row.custom or row.name in offered or row.name not in {k.name for k in all_kinds()}:
            rows.append(row)
        else:
            rows += [Row(r, r) for r in kind_of(row.name).rows(cfg)]
    return dataclasses.replace(comparison, rows=rows)


# What a hemisphere's run never reads: it trains alone and is tested, and used, at its best
# checkpoint on validation. Its spec holds the defaults, so rows that differ only in these share it.
NOT_READ_BY_HEMISPHERES = {"model.frozen_bn_update": False, "train.test_checkpoint": "best"}


def settings_label(settings: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(settings.items()))


@dataclass
class _Frame:
    """The row being added: its runs carry its name and options; its dependencies, its backbones;
    both, its settings (and those of the rows that asked for it)."""

    kind: str
    name: str
    options: dict
    left: str
    right: str
    settings: dict


def with_own_epochs(spec: RunSpec) -> RunSpec:
    """The spec with the epochs its run trains: train.head_epochs for runs that train heads only on
    frozen backbones, train.epochs for every other; head_epochs is then unset, so runs that never
    read it keep their run ids whatever it is."""
    head_epochs = spec.train.head_epochs
    if head_epochs is None:
        return spec
    heads_only = spec.trains and not spec.kind_spec.trains_backbones(spec)
    train = dataclasses.replace(
        spec.train, epochs=head_epochs if heads_only else spec.train.epochs, head_epochs=None
    )
    return dataclasses.replace(spec, train=train)


class PlanBuilder:
    """What a kind's add_runs builds runs with: the sweep's settings, the row being added (its
    backbones and options), and every run added so far."""

    def __init__(self, cfg: SweepConfig, comparison: Comparison):
        if comparison.settings:  # e.g. transfer: classes held out of every run
            cfg = with_settings(cfg, comparison.settings, f"experiment {comparison.name!r}")
        self.cfg = cfg
        self.pool_size = cfg.plan.pool_size
        self.runs: dict[str, RunSpec] = {}
        left, right = cfg.plan.backbone, cfg.plan.right_backbone or cfg.plan.backbone
        self._frames = [_Frame("", "", {}, left, right, {})]
        self._configs: dict[str, SweepConfig] = {}  # the sweep's config under each row's settings
        self._rows = {r: Row(r, r) for kind in all_kinds() for r in kind.rows(cfg)}
        self._row_kind = {r: kind for kind in all_kinds() for r in kind.rows(cfg)}
        custom = {row.name: row for row in comparison.rows}
        for row in custom.values():
            if row.base not in self._row_kind:
                raise ConfigError(
                    f"experiment {comparison.name!r}: row {row.name!r} is made from {row.base!r}, which no "
                    f"known kind offers: choose one of {', '.join(self._row_kind)} (or add its kind module)"
                )
        self._rows.update(custom)
        for row in filter(lambda r: r.settings, custom.values()):  # a bad value fails here, naming its row
            with_settings(cfg, row.settings, f"experiment {comparison.name!r}: row {row.name!r}")

    @property
    def left(self) -> str:
        return self._frames[-1].left

    @property
    def right(self) -> str:
        return self._frames[-1].right

    @property
    def options(self) -> dict:
        """The options of the row being added (empty for a kind's own row)."""
        return self._frames[-1].options

    def add(self, kind: str, backbone: str, seed: int, **fields) -> RunSpec:
        """The run of these settings (added once however many rows need it)."""
        frame = self._frames[-1]
        if kind == frame.kind and frame.name:
            fields = {"row": frame.name, "options": frame.options, **fields}
        settings, forced = frame.settings, {}
        if kind_of(kind).role in ("left", "right"):
            settings = {k: v for k, v in settings.items() if k not in NOT_READ_BY_HEMISPHERES}
            forced = NOT_READ_BY_HEMISPHERES
        spec = self._spec(kind, backbone, seed, settings, forced, fields)
        tuned = chosen_for(self.cfg.tuned, spec)  # settings launch/tune.py chose for this run's row
        if tuned:
            forced = {**tuned["settings"], **forced}
            spec = self._spec(kind, backbone, seed, settings, forced, {**fields, "tuned": tuned})
        return self.runs.setdefault(spec.run_id, spec)

    def _spec(
        self, kind: str, backbone: str, seed: int, settings: dict, forced: dict, fields: dict
    ) -> RunSpec:
        """A run under the row's settings (its label) and forced ones (applied, not in its label)."""
        cfg = self._config({**settings, **forced})
        common = dict(data=cfg.data, model=cfg.model, optim=cfg.optim, train=cfg.train)
        spec = RunSpec(
            kind, backbone, seed, plugin=kind_of(kind).module, settings=settings, **common, **fields
        )
        return with_own_epochs(spec)

    def _config(self, settings: dict) -> SweepConfig:
        key = settings_label(settings)
        if key not in self._configs:
            self._configs[key] = with_settings(self.cfg, settings, f"settings {key!r}")
        return self._configs[key]

    def row(self, name: str, seed: int) -> RunSpec:
        """The run of a row for a seed, added with what it depends on: how a kind asks for another."""
        row, outer = self._rows[name], self._frames[-1]
        kind = self._row_kind[row.base]
        self._frames.append(
            _Frame(
                kind.name,
                row.name if row.custom else "",
                row.options,
                row.backbone or outer.left,
                row.right_backbone or row.backbone or outer.right,
                {**outer.settings, **row.settings},
            )
        )
        try:
            return kind.add_runs(row.base, seed, self)
        finally:
            self._frames.pop()


def build_plan(cfg: SweepConfig) -> Plan:
    comparison = _comparison(cfg)
    known = model_names(cfg, comparison)  # every row: --models may name one the comparison does not list
    every = [row.name for row in comparison.rows]
    wanted = every if cfg.plan.models in (["all"], []) else list(cfg.plan.models)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise ConfigError(f"unknown model kind(s) {', '.join(unknown)}: choose from all, {', '.join(known)}")
    plan = PlanBuilder(cfg, comparison)
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
