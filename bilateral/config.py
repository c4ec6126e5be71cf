"""Typed sweep configuration: dataclass defaults <- preset YAML <- config file <- key=value overrides.

OmegaConf does the merging and rejects keys that do not exist and values of the wrong type; this
module turns its exceptions into messages that say which key is wrong and which keys exist.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bilateral.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take; checked when the configuration is loaded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


def bounded(default: Any, low: float | None = None, high: float | None = None, **open_ends: bool) -> Any:
    """A dataclass field whose value must lie in Range(low, high, ...)."""
    return field(default=default, metadata={"range": Range(low, high, **open_ends)})


@dataclass
class DataConfig:
    """What data a run sees. Everything here changes results, so it is part of every run id."""

    source: str = "synthetic"  # see bilateral.data.load_dataset for the spellings
    verify_md5: bool = True  # False accepts a CIFAR-100 copy that is not the official one
    val_size: int = bounded(5000, 1)  # held out of train, stratified: chooses checkpoints and ensembles
    split_seed: int = bounded(0, 0)  # the same validation split for every run of a sweep
    train_subset: int | None = bounded(None, 1)  # stratified subset of the remaining train images (CPU-sized)
    test_subset: int | None = bounded(None, 1)  # stratified subset of the test set (CPU-sized runs)
    holdout_per_coarse: int = bounded(0, 0)  # fine classes per coarse class kept out of every split
    # the runs see (train, val, pool, test), for the evaluation's transfer part (bilateral/data/holdout)
    loader: str = "memory"  # memory (on-device tensors) | ffcv (.beton files) | torch (DataLoader)
    # seed: every run of one seed (and pool member) sees the same data order and augmentation draws,
    # whatever its kind, so differences between arms of a seed are paired (common random numbers);
    # run: each run draws its own (sweeps before 2026-12-08; they resume only with this value)
    pairing: str = "seed"


@dataclass
class ModelConfig:
    width: float = bounded(1.0, 0, low_open=True)  # channel multiplier on every backbone; 1.0 is the paper's
    dropout: float = bounded(0.6, 0, 1, high_open=True)  # before each head, as in the authors' code
    bn_momentum: float = bounded(0.1, 0, 1)  # PyTorch convention; the authors' 0.9 weights the new batch 0.9
    frozen_bn_update: bool = False  # True: frozen hemispheres still update BN statistics (authors' code)
    zero_init_residual: bool = False  # ResNet-18/34 blocks start as identities (last BN scale 0, as in
    # torchvision): deep nets then learn from the first steps, which short CPU runs need (smoke)


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | sgd
    lr: float = bounded(1e-4, 0, low_open=True)
    momentum: float = bounded(0.9, 0, 1, high_open=True)  # sgd only
    nesterov: bool = True  # sgd only
    weight_decay: float = bounded(1e-5, 0)  # heads and baselines
    hemisphere_weight_decay: float = bounded(1e-3, 0)  # the specialised hemispheres
    schedule: str = "constant"  # constant | onecycle (linear warm-up then linear decay to 0)
    warmup_fraction: float = bounded(0.2, 0, 1, high_open=True)  # onecycle only
    label_smoothing: float = bounded(0.0, 0, 1, high_open=True)


@dataclass
class TrainConfig:
    epochs: int = bounded(180, 1)
    batch_size: int = bounded(256, 1)  # at most the training split (bilateral.run_data.check_batches)
    eval_batch_size: int = bounded(1024, 1)
    # Epochs of runs that train heads only, on frozen backbones (bilateral-specialised and its
    # controls): heads on fixed features reach their asymptote long before a backbone does.
    # None: train.epochs. A run's spec holds the epochs it trains (bilateral.plan).
    head_epochs: int | None = bounded(None, 1)
    bf16: bool = False  # bf16 autocast for training where the GPU or CPU computes bf16; evaluation stays fp32
    channels_last: bool = False
    compile: bool = False
    checkpoint_every: int = bounded(1, 1)  # write `last` (and a pending `best`) every N epochs and at the end
    # Minutes instead: write at the first epoch end that long after the last write, at the end, and
    # when training stops early (SIGTERM, Ctrl-C, submitit's USR2 requeue, a failure) from a copy of
    # the last epoch end held in host memory. For epochs of seconds on shared storage, where a
    # checkpoint each epoch costs as much as the epoch (and 10 of them with --fuse 10).
    checkpoint_minutes: float | None = bounded(None, 0, low_open=True)
    eval_every: int = bounded(1, 1)  # validate every N epochs and at the end; only those can become `best`
    test_checkpoint: str = "best"  # best (on validation) | last: what bilateral nets and baselines are
    # tested with. Hemispheres are always tested, and used by the nets built on them, at `best`.
    # False: the test split is never loaded or evaluated, and the record holds no test metric (the
    # runs of launch/tune.py, which choose settings on validation alone)
    evaluate_test: bool = True
    sync_bn: bool = True  # DDP on GPU: BatchNorm statistics over the global batch (syncs the host per step)
    # Tracking beyond TensorBoard (bilateral/tracking.py); neither changes results or run ids.
    # mlflow: an MLflow tracking URI (http://host:5000, file:./mlruns) to log every run to;
    # wandb: offline | online, to log every run to Weights & Biases (offline: `wandb sync` later).
    mlflow: str | None = None
    wandb: str | None = None


@dataclass
class PlanConfig:
    """Which runs a sweep contains: the comparison's rows (plan.experiment), for these seeds."""

    backbone: str = "resnet9"  # hemispheres, unilateral baseline, ensemble pool
    right_backbone: str | None = None  # a different backbone for the right (coarse) hemisphere
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    experiment: str = "paper"  # the comparison: the rows of the table (bilateral/comparison.py)
    models: list[str] = field(default_factory=lambda: ["all"])  # all = every row of the comparison
    pool_size: int = bounded(10, 1)
    kind_modules: list[str] = field(default_factory=list)  # modules declaring more kinds (bilateral.kinds)
    ensemble_top: list[int] = field(default_factory=lambda: [2, 5])


@dataclass
class ReportConfig:
    """How report.md and summary.csv state the results; changes no run."""

    std_ddof: int = bounded(1, 0, 1)  # standard deviations over seeds: 1 (sample) or 0 (the authors')


@dataclass
class TunedConfig:
    """Settings chosen per row by launch/tune.py (bilateral/tuning): a sweep's `--config tuned.yaml`.
    Each run of a row named here trains with its settings, and its record says where they came from."""

    source: str | None = None  # the tuned.yaml that chose them
    seeds: list[int] = field(default_factory=list)  # the tuning seeds: a sweep must use others
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # "<model>/<backbone>": {key: value}


@dataclass
class SweepConfig:
    name: str | None = None  # results/<name>/; derived from preset, data and backbone when unset
    preset: str = "smoke"
    out: str = "results"
    device: str = "auto"  # auto = cuda when available, else cpu
    data_dir: str = "data"  # caches of decoded datasets
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tuned: TunedConfig = field(default_factory=TunedConfig)


PRESETS = ("smoke", "small", "fast", "paper", "authors")


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return Path(str(resources.files("bilateral") / "presets" / f"{name}.yaml"))


def parse_seeds(text: str) -> list[int]:
    """'0,1,2', '0-4' or '3' -> list of ints."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise ValueError
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(
            f"malformed seeds {text!r}: give a comma-separated list of integers (0,1,2) or a range (0-4)"
        ) from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"malformed seeds {text!r}: seeds must be distinct non-negative integers")
    return seeds


def _known_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            keys += _known_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _merge(base: Any, other: Any, origin: str) -> Any:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        known = ", ".join(_known_keys(SweepConfig()))
        raise ConfigError(
            f"bad config from {origin}: key {key!r}: {exc.msg if hasattr(exc, 'msg') else exc}. "
            f"Fix the key or value; known keys are: {known}"
        ) from None


def load_config(
    preset: str = "smoke", config_file: str | Path | None = None, overrides: list[str] = ()
) -> SweepConfig:
    """Defaults, then the preset, then a YAML file, then key=value overrides (later wins)."""
    cfg = OmegaConf.structured(SweepConfig)
    cfg = _merge(cfg, OmegaConf.load(preset_path(preset)), f"preset {preset!r}")
    cfg.preset = preset
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist: pass the path of a YAML file")
        cfg = _merge(cfg, _read_yaml(path), str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.epochs=3)")
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
    config: SweepConfig = OmegaConf.to_object(cfg)
    validate(config)
    return config


def with_settings(cfg: SweepConfig, settings: dict[str, Any], origin: str) -> SweepConfig:
    """cfg with dotted settings ({"model.bn_momentum": 0.9}) applied and checked like overrides."""
    merged = OmegaConf.structured(cfg)
    for key, value in settings.items():
        section, _, name = key.partition(".")
        merged = _merge(merged, OmegaConf.create({section: {name: value}}), f"{origin}: setting {key!r}")
    config: SweepConfig = OmegaConf.to_object(merged)
    try:
        validate(config)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    return config


def yaml_problem(exc: yaml.YAMLError) -> str:
    """' at line L, column C: what the parser found' for a YAML error."""
    where = getattr(exc, "problem_mark", None)
    at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
    return f"{at}: {getattr(exc, 'problem', None) or str(exc).splitlines()[0]}"


def _read_yaml(path: Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML{yaml_problem(exc)}. Fix the file: it holds a "
            "mapping of sections to keys, e.g. 'train:\\n  epochs: 3'"
        ) from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(
            f"config file {str(path)!r} holds a {type(loaded).__name__}, not a mapping of sections to keys: "
            "write it as e.g. 'train:\\n  epochs: 3'"
        )
    return loaded


def _check_ranges(node: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            _check_ranges(value, f"{prefix}{f.name}.")
        elif "range" in f.metadata and value is not None and value not in f.metadata["range"]:
            key, allowed = prefix + f.name, f.metadata["range"]
            default = "" if f.default is None else f" (the default is {f.default:g})"
            raise ConfigError(
                f"{key}={value!r} is out of range: it must be {allowed}. Fix: set {key} to a value "
                f"{allowed}{default}"
            )


def validate(cfg: SweepConfig) -> None:
    """Value checks OmegaConf's types cannot express: ranges (see `bounded`) and choices."""
    _check_ranges(cfg)
    choices = {
        "optim.name": ("adam", "sgd"),
        "optim.schedule": ("constant", "onecycle"),
        "data.loader": ("memory", "ffcv", "torch"),
        "data.pairing": ("seed", "run"),
        "train.test_checkpoint": ("best", "last"),
        "train.wandb": (None, "offline", "online"),
    }
    for key, allowed in choices.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            names = ", ".join("null (off)" if a is None else a for a in allowed)
            raise ConfigError(f"{key}={value!r} is not supported: choose one of {names}")
    from bilateral.placement import check_device

    check_device(cfg.device)
    if not cfg.plan.seeds:
        raise ConfigError("plan.seeds is empty: give at least one seed (e.g. --seeds 0)")
    if min(cfg.plan.seeds) < 0:  # numpy's generators refuse them, in the middle of a run
        raise ConfigError(
            f"plan.seeds={cfg.plan.seeds} is out of range: seeds are 0 or more (e.g. --seeds 0-4)"
        )
    reused = sorted(set(cfg.plan.seeds) & set(cfg.tuned.seeds))
    if reused:
        raise ConfigError(
            f"plan.seeds {reused} were the tuning seeds of {cfg.tuned.source}: a comparison measured on "
            "the seeds its settings were chosen on is biased; choose other seeds (e.g. --seeds 0-4)"
        )
    if cfg.train.checkpoint_minutes is not None and cfg.train.checkpoint_every != 1:
        raise ConfigError(
            f"train.checkpoint_every={cfg.train.checkpoint_every} and train.checkpoint_minutes="
            f"{cfg.train.checkpoint_minutes} are two policies for the same checkpoints: set one of them"
        )
    if any(k < 1 or k > cfg.plan.pool_size for k in cfg.plan.ensemble_top):
        raise ConfigError(
            f"plan.ensemble_top={cfg.plan.ensemble_top} must lie in 1..plan.pool_size={cfg.plan.pool_size}"
        )


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
