"""Callosal nets: bilateral nets whose hemispheres exchange features (bilateral/models/callosal.py).

Options (a comparison row's `options`, checked when the plan is built):
  connection  sum | concat | gate (default gate)
  depths      stages after which the sides exchange (default: after each residual stage)
  init        scratch: end to end, unspecialised (default)
              frozen: from this seed's hemisphere runs, frozen; connections and heads train
              finetuned: from the hemisphere runs, everything trains
Runs of it do not fuse: an exchange mixes the two sides' channels, which --fuse lays out per member.
"""

from __future__ import annotations

from bilateral.errors import ConfigError
from bilateral.kinds.bilateral_nets import attach_hemispheres
from bilateral.kinds.hemispheres import LEFT, RIGHT
from bilateral.kinds.registry import Kind, register
from bilateral.models import build_backbone
from bilateral.models.callosal import CONNECTIONS, CallosalNet

INITS = ("scratch", "frozen", "finetuned")
OPTIONS = ("connection", "depths", "init")


def _options(options: dict) -> dict:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"callosal option(s) {unknown} unknown: the options are {', '.join(OPTIONS)}")
    chosen = {"connection": "gate", "depths": None, "init": "scratch", **options}
    if chosen["connection"] not in CONNECTIONS:
        raise ConfigError(
            f"callosal connection {chosen['connection']!r}: choose one of {', '.join(CONNECTIONS)}"
        )
    if chosen["init"] not in INITS:
        raise ConfigError(f"callosal init {chosen['init']!r}: choose one of {', '.join(INITS)}")
    depths = chosen["depths"]
    if depths is not None and not (isinstance(depths, list) and all(isinstance(d, int) for d in depths)):
        raise ConfigError(f"callosal depths {depths!r}: give a list of stage numbers, e.g. [1, 3]")
    return chosen


class Callosal(Kind):
    name, role, fusable = "callosal", "bilateral", False
    colour = "tab:red"
    how_to_get = "--experiment callosal"

    def add_runs(self, row, seed, plan):
        options = _options(plan.options)
        deps = ()
        if options["init"] != "scratch":
            deps = (plan.row(LEFT.name, seed).run_id, plan.row(RIGHT.name, seed).run_id)
        return plan.add(self.name, plan.left, seed, right_backbone=plan.right, depends_on=deps)

    def build(self, spec, num_fine, num_coarse):
        cfg, options = spec.model, _options(spec.options)

        def backbone(name: str):
            return build_backbone(name, width=cfg.width, bn_momentum=cfg.bn_momentum)

        right = backbone(spec.right_backbone or spec.backbone)
        return CallosalNet(
            backbone(spec.backbone),
            right,
            num_fine,
            num_coarse,
            cfg.dropout,
            options["connection"],
            options["depths"],
        )

    def prepare(self, spec, store, model):
        init = _options(spec.options)["init"]
        if init != "scratch":
            attach_hemispheres(spec, store, model)
        if init == "frozen":
            model.freeze_hemispheres(update_bn_stats=spec.model.frozen_bn_update)

    def trains_backbones(self, spec):
        return _options(spec.options)["init"] != "frozen"


CALLOSAL = register(Callosal())
