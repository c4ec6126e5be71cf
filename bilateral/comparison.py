"""Comparisons as data: a YAML file of the rows of a table (bilateral/experiments/*.yaml or any path).

    rows:
      - bilateral-specialised                 # a model kind's own row, as --models names it
      - ensemble                              # a kind's name that is no row: every row it offers
      - name: bilateral-vgg-right             # a row of its own, made from a kind's row:
        kind: bilateral-specialised           #   the row it starts from
        right_backbone: vgg11                 #   its backbones (default: plan.backbone / right_backbone)
        options: {connection: gate}           #   what the kind reads from plan.options
      - name: specialised-bn-0.9              # a row trained under other config settings: they
        kind: bilateral-specialised           #   apply to its runs and to the runs it depends on,
        settings: {model.bn_momentum: 0.9}    #   which are then named "<row> [<settings>]"
    kind_modules: [my_lab.kinds]              # modules declaring more kinds (optional)
    settings: {data.holdout_per_coarse: 1}    # config settings every run of it trains under (optional)
    contrasts:                                # the questions the table answers (optional): report.md
      margin: 1.0                             #   tests these first, Holm over them alone; margin: the
      primary:                                #   equivalence margin in accuracy points (1.0 = 0.01)
        - {row: bilateral-specialised, minus: unilateral}               # heads: [fine, coarse]
        - {row: bilateral-specialised, minus: ensemble-top2, heads: [fine]}

Presets say how runs train (optimiser, epochs, data size); comparisons say which rows there are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bilateral.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, yaml_problem
from bilateral.errors import ConfigError

ROW_KEYS = ("name", "kind", "backbone", "right_backbone", "options", "settings")
CONTRAST_KEYS = ("row", "minus", "heads")
HEADS = ("fine", "coarse")
RUN_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Row:
    name: str
    base: str  # the kind's row it is made from; == name for a kind's own row
    backbone: str | None = None
    right_backbone: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # "section.key": value, as key=value overrides

    @property
    def custom(self) -> bool:
        """A row of its own (its runs carry its name and options) rather than a kind's row."""
        own = self.options or self.settings or self.backbone or self.right_backbone
        return self.name != self.base or bool(own)


@dataclass(frozen=True)
class Contrast:
    """A declared question: row minus `minus`, per head, in test accuracy."""

    row: str
    minus: str
    heads: tuple[str, ...] = HEADS

    @property
    def label(self) -> str:
        return f"{self.row} − {self.minus}"


@dataclass(frozen=True)
class Comparison:
    name: str
    rows: list[Row]
    kind_modules: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # for every run: the comparison needs them
    contrasts: list[Contrast] = field(default_factory=list)  # the primary family; [] = none declared
    margin: float | None = None  # equivalence margin in accuracy points (1.0 = 0.01 accuracy)

    def check_contrast_rows(self, rows: list[str]) -> None:
        """Every row a contrast names is one of `rows` (the comparison's rows with kinds expanded,
        as --models names them): a typo fails before training, not after it."""
        for c in self.contrasts:
            missing = [name for name in (c.row, c.minus) if name not in rows]
            if missing:
                raise ConfigError(
                    f"experiment {self.name!r}: contrast {c.label} names row(s) {missing} that the "
                    f"comparison does not have: use one of {', '.join(rows)}"
                )


def shipped() -> list[str]:
    folder = resources.files("bilateral") / "experiments"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_comparison(name_or_path: str) -> Comparison:
    """A shipped comparison by name (paper, callosal, ...) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and name_or_path in shipped():
        path = Path(str(resources.files("bilateral") / "experiments" / f"{name_or_path}.yaml"))
    if not path.is_file():
        raise ConfigError(
            f"experiment {name_or_path!r} is neither a shipped comparison ({', '.join(shipped())}) nor a "
            "YAML file: give one of those names or the path of a file"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"experiment file {str(path)!r} is not valid YAML{yaml_problem(exc)}. Fix the file"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise ConfigError(f"experiment file {str(path)!r} needs a non-empty list `rows:` (see {__name__})")
    unknown = sorted(set(data) - {"rows", "kind_modules", "settings", "contrasts"})
    if unknown:
        raise ConfigError(
            f"experiment file {str(path)!r}: unknown key(s) {unknown}; the known keys are rows, "
            "kind_modules, settings, contrasts"
        )
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"experiment file {str(path)!r}: settings must be a mapping")
    for key in settings:
        _check_setting(str(key), f"experiment file {str(path)!r}")
    rows = [_row(entry, path) for entry in data["rows"]]
    names = [r.name for r in rows]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"experiment file {str(path)!r} names row(s) {twice} twice: give each its own name")
    contrasts, margin = _contrasts(data.get("contrasts"), f"experiment file {str(path)!r}")
    return Comparison(
        path.stem,
        rows,
        list(data.get("kind_modules") or []),
        {str(k): v for k, v in settings.items()},
        contrasts,
        margin,
    )


def _contrasts(entry: Any, where: str) -> tuple[list[Contrast], float | None]:
    """The `contrasts:` block: {margin: points (optional), primary: [{row, minus, heads?}, ...]}.
    Row names are checked against the expanded rows when a plan is built (check_contrast_rows)."""
    if entry is None:
        return [], None
    example = "contrasts: {margin: 1.0, primary: [{row: bilateral-specialised, minus: unilateral}]}"
    if not isinstance(entry, dict) or set(entry) - {"margin", "primary"}:
        raise ConfigError(f"{where}: contrasts must be a mapping of margin and primary, e.g. {example}")
    margin = entry.get("margin")
    number = isinstance(margin, int | float) and not isinstance(margin, bool)
    if margin is not None and (not number or margin <= 0):
        raise ConfigError(
            f"{where}: contrasts.margin is {margin!r}: give a positive number of accuracy points "
            "(1.0 = 0.01 accuracy), or leave it out"
        )
    primary = entry.get("primary")
    if not isinstance(primary, list) or not primary:
        raise ConfigError(f"{where}: contrasts.primary must be a non-empty list, e.g. {example}")
    contrasts = []
    for item in primary:
        if not isinstance(item, dict) or not {"row", "minus"} <= set(item) or set(item) - set(CONTRAST_KEYS):
            raise ConfigError(
                f"{where}: contrast {item!r} must be a mapping with keys row and minus (and optionally "
                f"heads: a list of {', '.join(HEADS)})"
            )
        heads = item.get("heads", list(HEADS))
        valid = isinstance(heads, list) and heads and not set(heads) - set(HEADS)
        if not valid or len(set(heads)) < len(heads):
            raise ConfigError(
                f"{where}: contrast {item['row']} − {item['minus']}: heads {heads!r} must be a list of "
                f"distinct heads among {', '.join(HEADS)}"
            )
        contrast = Contrast(str(item["row"]), str(item["minus"]), tuple(h for h in HEADS if h in heads))
        if contrast.row == contrast.minus:
            raise ConfigError(f"{where}: contrast {contrast.label} compares a row with itself: name two rows")
        if contrast in contrasts:
            raise ConfigError(f"{where}: contrast {contrast.label} is declared twice: keep one")
        contrasts.append(contrast)
    return contrasts, None if margin is None else float(margin)


def _row(entry: Any, path: Path) -> Row:
    if isinstance(entry, str):
        return Row(entry, entry)
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(
            f"experiment file {str(path)!r}: row {entry!r} is neither a row name nor a mapping {{name: ...}}"
        )
    unknown = sorted(set(entry) - set(ROW_KEYS))
    if unknown:
        raise ConfigError(
            f"experiment file {str(path)!r}: row {entry['name']!r} has unknown key(s) {unknown}; known: "
            f"{', '.join(ROW_KEYS)}"
        )
    options, settings = entry.get("options") or {}, entry.get("settings") or {}
    for key, value in (("options", options), ("settings", settings)):
        if not isinstance(value, dict):
            raise ConfigError(
                f"experiment file {str(path)!r}: row {entry['name']!r}: {key} must be a mapping"
            )
    for key in settings:
        _check_setting(str(key), f"experiment file {str(path)!r}: row {entry['name']!r}")
    return Row(
        str(entry["name"]),
        str(entry.get("kind", entry["name"])),
        entry.get("backbone"),
        entry.get("right_backbone"),
        dict(options),
        {str(k): v for k, v in settings.items()},
    )


def _check_setting(key: str, where: str) -> None:
    """A row's setting names a key of a run's config (data, model, optim, train): a sweep-wide key
    (plan, report, device) would mean nothing for one row."""
    section, _, name = key.partition(".")
    known = {f.name for f in dataclasses.fields(RUN_SECTIONS[section])} if section in RUN_SECTIONS else set()
    if name not in known:
        every = ", ".join(f"{s}.{f.name}" for s, c in RUN_SECTIONS.items() for f in dataclasses.fields(c))
        raise ConfigError(f"{where}: setting {key!r} is not a key of a run's config: use one of {every}")
