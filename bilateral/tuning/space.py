"""What launch/tune.py searches (a search space, from YAML) and how much (a budget, per row).

Every row of a comparison gets the same budget: the same number of trials, the same tuning seeds
and the same early-stopping rule, each trial trained for the row's own epochs. The space is data:

    every_row:                                   # the keys every row searches
      optim.lr: {low: 0.2, high: 5.0, relative: true, log: true}   # the row's own value x [0.2, 5]
      weight_decay: {low: 1.0e-5, high: 5.0e-3, log: true}       # the weight decay the row's kind reads
    rows:                                        # more keys for some rows (summary.csv's model name)
      bilateral-specialised: {model.dropout: {low: 0.0, high: 0.6}}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bilateral.comparison import RUN_SECTIONS
from bilateral.config import OptimConfig
from bilateral.errors import ConfigError

if TYPE_CHECKING:
    from bilateral.kinds import Kind
    from bilateral.plan import RunSpec

WEIGHT_DECAY = "weight_decay"  # stands for the key the row's kind reads (hemispheres have their own)
DIM_KEYS = ("low", "high", "log", "relative", "integer")


@dataclass(frozen=True)
class Dim:
    """One key's range: [low, high], or the row's configured value times [low, high] (relative)."""

    low: float
    high: float
    log: bool = False  # sample log-uniformly (learning rates, weight decays)
    relative: bool = False
    integer: bool = False  # sample integers (e.g. data.train_subset)

    def bounds(self, value: float) -> tuple[float, float]:
        return (self.low * value, self.high * value) if self.relative else (self.low, self.high)


@dataclass(frozen=True)
class Budget:
    """The same effort for every row: `trials` trials on `seeds` (never a comparison's seeds), each
    trained for the row's epochs unless ASHA stops it: every trial trains `grace` epochs, and at
    each rung (grace, grace x eta, ...) only the best 1/eta go on. Optuna's TPE samples at random
    for its first `startup` trials, then from its model of the finished ones."""

    trials: int
    seeds: tuple[int, ...] = (100,)
    grace: int = 1
    eta: int = 3
    startup: int = 2

    def describe(self) -> str:
        return (
            f"{self.trials} trials per row on tuning seed(s) {', '.join(map(str, self.seeds))}; ASHA: every "
            f"trial trains {self.grace} epoch(s), then only the best 1/{self.eta} go on at each rung; "
            f"TPE samples at random for its first {self.startup} trials (the first is the row's own settings)"
        )


# small: the `small` preset's core rows on a 2-core CPU in about 75 minutes (docs/tuning.md shows the
# arithmetic); gpu: full-width CIFAR-100 on a GPU cluster, enough trials for TPE to model the space.
BUDGETS = {
    "small": Budget(trials=4, seeds=(100,), grace=1, eta=3, startup=2),
    "gpu": Budget(trials=24, seeds=(100, 101), grace=4, eta=3, startup=8),
}


@dataclass(frozen=True)
class SearchSpace:
    every_row: dict[str, Dim]
    rows: dict[str, dict[str, Dim]] = field(default_factory=dict)

    def for_run(self, spec: RunSpec) -> dict[str, tuple[Dim, float]]:
        """{config key: (its range, the run's configured value)} of a row's own run; weight_decay
        becomes the key the run's kind reads."""
        dims = {**self.every_row, **self.rows.get(spec.model_name, {})}
        out = {}
        for key, dim in dims.items():
            key = decay_key(spec.kind_spec) if key == WEIGHT_DECAY else key
            section, name = key.split(".")
            out[key] = (dim, getattr(getattr(spec, section), name))
        return out

    def describe(self) -> list[str]:
        def text(key: str, d: Dim) -> str:
            scale = "log-uniform" if d.log else ("integer" if d.integer else "uniform")
            where = (
                f"the row's own value x [{d.low:g}, {d.high:g}]" if d.relative else f"[{d.low:g}, {d.high:g}]"
            )
            return f"`{key}`: {scale} in {where}"

        lines = [f"- every row: {'; '.join(text(k, d) for k, d in self.every_row.items())}"]
        lines += [
            f"- {row}: {'; '.join(text(k, d) for k, d in dims.items())}" for row, dims in self.rows.items()
        ]
        return lines


def decay_key(kind: Kind) -> str:
    """The optim key whose value a kind trains with as its weight decay (asked, not assumed, so
    that a plug-in kind's choice is respected)."""
    probe = OptimConfig(weight_decay=1.0, hemisphere_weight_decay=2.0)
    return "optim.hemisphere_weight_decay" if kind.weight_decay(probe) == 2.0 else "optim.weight_decay"


def default_space_path() -> Path:
    return Path(str(resources.files("bilateral") / "tuning" / "space.yaml"))


def load_space(path: str | Path | None = None) -> SearchSpace:
    """The search space of a YAML file (module docstring); the shipped one when path is None."""
    path = Path(path) if path is not None else default_space_path()
    where = f"search space {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{where} does not exist: give the path of a YAML file (see {__name__})")
    data = yaml.safe_load(path.read_text())
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("every_row"), dict)
        or set(data) - {"every_row", "rows"}
    ):
        raise ConfigError(f"{where} must be a mapping with every_row: {{key: range}} and optionally rows:")
    rows = data.get("rows") or {}
    return SearchSpace(
        _dims(data["every_row"], where),
        {str(row): _dims(dims, f"{where}, row {row!r}") for row, dims in rows.items()},
    )


def _dims(entry: Any, where: str) -> dict[str, Dim]:
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}: give a mapping of config keys to ranges, e.g. optim.lr: {{low: 0.01, high: 1}}"
        )
    dims = {}
    for key, spec in entry.items():
        key = str(key)
        section, _, name = key.partition(".")
        fields = (
            {f.name for f in dataclasses.fields(RUN_SECTIONS[section])} if section in RUN_SECTIONS else ()
        )
        if key != WEIGHT_DECAY and name not in fields:
            raise ConfigError(
                f"{where}: {key!r} is neither weight_decay nor a key of a run's config (data, model, optim, "
                "train)"
            )
        if key in ("train.epochs", "train.head_epochs"):
            raise ConfigError(
                f"{where}: {key} is not searched: ASHA's rungs are epochs and every trial trains the row's "
                "own; how many epochs each row needs is launch/study.py's question"
            )
        if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - set(DIM_KEYS):
            raise ConfigError(f"{where}: {key}: give {{low, high}} and optionally log, relative, integer")
        dim = Dim(**{k: (float(v) if k in ("low", "high") else bool(v)) for k, v in spec.items()})
        if not 0 <= dim.low < dim.high or (dim.log and dim.low == 0):
            raise ConfigError(f"{where}: {key}: need 0 <= low < high (low > 0 when log)")
        dims[key] = dim
    return dims
