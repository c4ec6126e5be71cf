"""RunSpec -> nn.Module: each model kind builds its own network (bilateral/kinds)."""

from __future__ import annotations

from torch import nn

from bilateral.experiment import RunSpec


def build_model(spec: RunSpec, num_fine: int, num_coarse: int) -> nn.Module:
    """An untrained network for a training run (ensembles are assembled from their members)."""
    return spec.kind_spec.build(spec, num_fine, num_coarse)
