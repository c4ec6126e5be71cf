"""A run's training state between epochs: its counters, its members built and resumed from
`last`, when the next checkpoint is due, and host copies that later steps cannot change."""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
from torch import nn

from bilateral.assemble import build_model
from bilateral.distributed import from_rank0
from bilateral.errors import CheckpointError
from bilateral.models import load_state_strict
from bilateral.plan import RunSpec
from bilateral.store import RunStore, SweepStore


def fresh_state() -> dict:
    return {
        "epoch": -1,
        "best_score": -math.inf,
        "best_epoch": -1,
        "train_time_s": 0.0,
        "eval_time_s": 0.0,
        "checkpoint_time_s": 0.0,
        "wall_s": 0.0,
        "images": 0,
    }


STATE_KEYS = tuple(fresh_state())  # what a `last` checkpoint holds besides model and optimiser


def build_members(specs: list[RunSpec], store: SweepStore, data) -> list[nn.Module]:
    """Each member initialised from its own seed, exactly as it would be trained alone."""
    members = []
    for spec in specs:
        torch.manual_seed(spec.init_seed)
        model = build_model(spec, data.num_fine, data.num_coarse)
        spec.kind_spec.prepare(spec, store, model)  # e.g. frozen hemispheres from their runs
        members.append(model)
    return members


def load_last(
    specs: list[RunSpec], run_stores: list[RunStore], members: list[nn.Module]
) -> list[dict] | None:
    """The members' last checkpoints (weights loaded into `members`), or None when none has one.
    Under DDP rank 0 reads them and every rank gets its copy: all resume from the same epoch."""

    def read() -> list[dict | None]:
        return [rs.load_checkpoint("last") if rs.has_checkpoint("last") else None for rs in run_stores]

    lasts = from_rank0(read)
    epochs = [-1 if last is None else last["epoch"] for last in lasts]
    if len(set(epochs)) > 1:
        raise CheckpointError(
            f"runs {', '.join(s.run_id for s in specs)} stopped after different epochs {epochs} and "
            "cannot resume as one fused group: rerun the sweep (it groups runs by their last epoch), "
            "or run without --fuse"
        )
    if epochs[0] < 0:
        return None
    for model, last, rs in zip(members, lasts, run_stores, strict=True):
        load_state_strict(model, last["model"], source=str(rs.path("checkpoints/last.pt")))
    return lasts


def checkpoint_due(spec: RunSpec, epoch: int, epochs: int, written_at: float, world: int) -> bool:
    """After the last epoch, and every train.checkpoint_every epochs or, with
    train.checkpoint_minutes, at the first epoch end that many minutes after the last write (rank
    0's clock decides for every DDP rank: they must write, and meet at the barrier, together)."""
    if epoch == epochs - 1:
        return True
    minutes = spec.train.checkpoint_minutes
    if minutes is None:
        return (epoch + 1) % spec.train.checkpoint_every == 0
    due = time.monotonic() - written_at >= 60 * minutes
    if world > 1:
        decision = torch.tensor([due])
        dist.broadcast(decision, 0)
        due = bool(decision)
    return due


def host_tree(tree):
    """A copy of nested dicts, lists and tuples whose tensors are on the host, which later training
    steps cannot change."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: host_tree(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(host_tree(value) for value in tree)
    return tree


def trained_parts(model: nn.Module) -> list[str]:
    """The model's top-level parts that trained (e.g. ["heads"] for frozen hemispheres)."""
    return [name for name, part in model.named_children() if any(p.requires_grad for p in part.parameters())]
