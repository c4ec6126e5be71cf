"""RunSpec -> nn.Module: each model kind builds its own network (bilateral/kinds)."""

from __future__ import annotations

from torch import nn

from bilateral.models.cifar_resnet import zero_init_residuals
from bilateral.plan import RunSpec


def build_model(spec: RunSpec, num_fine: int, num_coarse: int) -> nn.Module:
    """An untrained network for a training run (ensembles are assembled from their members)."""
    model = spec.kind_spec.build(spec, num_fine, num_coarse)
    if spec.model.zero_init_residual:  # every kind's ResNet-18/34 blocks, wherever they sit
        zero_init_residuals(model)
    return model
