"""RunSpec -> nn.Module: each model kind builds its own network (bilateral/kinds); a finished run's
network at the checkpoint it was tested with (ensembles, the analysis, the evaluation)."""

from __future__ import annotations

from torch import nn

from bilateral.models import load_state_strict
from bilateral.models.cifar_resnet import zero_init_residuals
from bilateral.plan import RunSpec
from bilateral.store import RunStore


def build_model(spec: RunSpec, num_fine: int, num_coarse: int) -> nn.Module:
    """An untrained network for a training run (ensembles are assembled from their members)."""
    model = spec.kind_spec.build(spec, num_fine, num_coarse)
    if spec.model.zero_init_residual:  # every kind's ResNet-18/34 blocks, wherever they sit
        zero_init_residuals(model)
    return model


def tested_model(run: RunStore, record: dict, num_fine: int, num_coarse: int) -> nn.Module:
    """The network of a finished run (its record) with the weights it was tested with (its
    record's tested_checkpoint; `best` for runs from before that field), loaded strictly."""
    model = build_model(RunSpec.from_dict(record["spec"]), num_fine, num_coarse)
    tested = record.get("tested_checkpoint", "best")
    load_state_strict(
        model, run.load_checkpoint(tested)["model"], source=str(run.path(f"checkpoints/{tested}.pt"))
    )
    return model
