"""A model kind declared outside bilateral/, as a user would: a net with both heads whose backbone
starts from this seed's trained left hemisphere and is fine-tuned end to end (tests/test_kinds.py).
"""

from bilateral.kinds import Kind, kind_of, register
from bilateral.models import UnilateralNet, build_backbone, load_state_strict

LEFT = "hemisphere-fine"


class FinetunedLeft(Kind):
    name = "finetuned-left"
    how_to_get = "--models finetuned-left plan.kind_modules=[tests.kinds_plugin]"

    def add_runs(self, row, seed, plan):
        left = plan.row(LEFT, seed)
        return plan.add(self.name, left.backbone, seed, depends_on=(left.run_id,))

    def build(self, spec, num_fine, num_coarse):
        backbone = build_backbone(spec.backbone, width=spec.model.width, bn_momentum=spec.model.bn_momentum)
        return UnilateralNet(backbone, num_fine, num_coarse, spec.model.dropout)

    def prepare(self, spec, store, model):
        (dep,) = (store.run(d) for d in spec.depends_on)
        assert kind_of(dep.read_record()["kind"]).role == "left"
        state = dep.load_checkpoint("best")["model"]
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        load_state_strict(model.backbone, backbone, source=str(dep.path("checkpoints/best.pt")))


register(FinetunedLeft())
