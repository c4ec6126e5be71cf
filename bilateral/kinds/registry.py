"""Model kinds, each declared once as a `Kind`, and the one registry that knows them.

A kind says everything the suite needs about one kind of run: the rows (`--models` names) it
offers, how a row becomes runs and their dependencies (`add_runs`), the network it builds, how its
dependencies' checkpoints go in and which parts train (`prepare`), its weight decay, whether runs of
it can train fused, and its role in the analysis. Adding a kind means writing one module that
subclasses `Kind` and calls `register`; a sweep names modules outside `bilateral/` in
`plan.kind_modules`, and every process that meets one of its runs imports the module again from
`RunSpec.plugin`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar, Literal

from bilateral.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bilateral.config import OptimConfig, SweepConfig
    from bilateral.data import HierarchicalDataset
    from bilateral.plan import PlanBuilder, RunSpec
    from bilateral.store import SweepStore

# left / right: a hemisphere alone (fine / coarse head); bilateral: two hemispheres and both heads;
# baseline: anything else that trains; ensemble: assembled from other runs, never trained
Role = Literal["left", "right", "bilateral", "baseline", "ensemble"]


class Kind:
    """One model kind. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    role: ClassVar[Role] = "baseline"
    trains: ClassVar[bool] = True  # False: assembled from its dependencies (ensembles)
    fusable: ClassVar[bool] = True  # runs that differ only in seed can train as one network (--fuse)
    reference: ClassVar[bool] = False  # the row every other row is compared with (report.md)
    from_hemispheres: ClassVar[bool] = False  # bilateral: built from this seed's hemisphere runs
    colour: ClassVar[str | None] = None  # in the analysis figures
    how_to_get: ClassVar[str] = ""  # said when the analysis misses a run of this kind
    module: str = ""  # the module that registered it; "" for the kinds under bilateral/kinds

    def rows(self, cfg: SweepConfig) -> list[str]:
        """The `--models` names this kind offers, in plan order."""
        return [self.name]

    def add_runs(self, row: str, seed: int, plan: PlanBuilder) -> RunSpec:
        """Add the runs of one row for one seed (and, through plan.row, what they depend on); return
        the row's own run."""
        return plan.add(self.name, plan.left, seed)

    def row_name(self, spec: RunSpec) -> str:
        """The row a run of this kind belongs to in summary.csv."""
        return self.name

    def build(self, spec: RunSpec, num_fine: int, num_coarse: int) -> nn.Module:
        """An untrained network for a run of this kind."""
        raise ConfigError(f"{self.name} runs are not built from scratch")

    def network(self, spec: RunSpec, num_fine: int, num_coarse: int) -> nn.Module:
        """The untrained network a run of this kind infers with: what its cost is counted on
        (bilateral.cost). A kind that does not train gives its members' networks together."""
        return self.build(spec, num_fine, num_coarse)

    def prepare(self, spec: RunSpec, store: SweepStore, model: nn.Module) -> None:
        """After initialisation: load what the run depends on, freeze what must not train."""

    def assemble(
        self, spec: RunSpec, store: SweepStore, data: HierarchicalDataset, device: torch.device
    ) -> tuple[nn.Module, dict]:
        """A kind that does not train (trains = False) builds its model from finished runs here:
        (the model, its record's fields)."""
        raise ConfigError(f"{self.name} runs train: they are not assembled")

    def weight_decay(self, optim: OptimConfig) -> float:
        return optim.weight_decay

    def dataset(
        self, spec: RunSpec, store: SweepStore, data: HierarchicalDataset, device: torch.device
    ) -> HierarchicalDataset:
        """The data the run trains and is tested on: the source's, unless the kind replaces labels."""
        return data

    def trains_backbones(self, spec: RunSpec) -> bool:
        """False: the backbones stay frozen and a step is a forward without their backward."""
        return True


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Make a kind known; its module is remembered so that other processes can import it."""
    if kind.name in _KINDS and type(_KINDS[kind.name]) is not type(kind):
        raise ConfigError(f"model kind {kind.name!r} is declared twice: rename one of them")
    module = type(kind).__module__
    kind.module = "" if module.startswith("bilateral.kinds.") else module
    _KINDS[kind.name] = kind
    return kind


def load_kind_modules(modules: list[str]) -> None:
    """Import the modules that declare a sweep's own kinds (plan.kind_modules)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"plan.kind_modules names {module!r}, which cannot be imported ({exc}). Fix: give the "
                "dotted name of a module Python can import: installed, or under a folder on PYTHONPATH "
                "(PYTHONPATH=. for one in the folder you run from)"
            ) from None


def kind_of(name: str, module: str = "") -> Kind:
    """The kind called name; module (RunSpec.plugin) is imported first when it is not yet known."""
    if name not in _KINDS and module:
        load_kind_modules([module])
    if name not in _KINDS:
        raise ConfigError(f"unknown model kind {name!r}: the known kinds are {', '.join(_KINDS)}")
    return _KINDS[name]


def all_kinds() -> list[Kind]:
    """Every known kind, in declaration order: built-ins first, then those of kind modules."""
    return list(_KINDS.values())


def with_role(role: Role) -> list[Kind]:
    return [k for k in _KINDS.values() if k.role == role]
