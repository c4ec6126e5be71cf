"""The optimisation recipe of a run: its parameter groups and optimiser, the learning-rate
schedule, and the loss over the heads a model has."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bilateral.plan import RunSpec

HEADS = ("fine", "coarse")


def _param_groups(spec: RunSpec, model: nn.Module) -> list[dict]:
    decay = spec.kind_spec.weight_decay(spec.optim)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": decay}]


def make_optimizer(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (L2 weight decay, as the authors) or SGD; the fused multi-tensor kernels on CUDA."""
    cfg = spec.optim
    groups = _param_groups(spec, model)
    fused = next(model.parameters()).is_cuda or None
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused)
    return torch.optim.Adam(groups, lr=cfg.lr, fused=fused)


def lr_at(spec: RunSpec, step: int, total_steps: int) -> float:
    """Constant, or one-cycle: linear warm-up to lr, then linear decay to zero."""
    cfg = spec.optim
    if cfg.schedule == "constant":
        return cfg.lr
    warmup = max(1, math.ceil(cfg.warmup_fraction * total_steps))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def loss_fn(outputs: dict[str, torch.Tensor], fine: torch.Tensor, coarse: torch.Tensor, smoothing: float):
    """CE(fine) + CE(coarse) over the heads the model has, plus the loss a model computes itself
    ("loss": e.g. a self-supervised one, bilateral.models.ssl)."""
    labels = {"fine": fine, "coarse": coarse}
    terms = [
        F.cross_entropy(outputs[h].float(), labels[h], label_smoothing=smoothing)
        for h in HEADS
        if h in outputs
    ]
    if "loss" in outputs:
        terms.append(outputs["loss"].float())
    return sum(terms)
