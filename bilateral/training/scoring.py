"""Scoring a model over a split, the score checkpoints are chosen by (validation only), and which
checkpoint a run is tested with."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bilateral.data.loaders import Loader
from bilateral.models.fused import split_outputs, stack_inputs
from bilateral.plan import RunSpec
from bilateral.training.objective import HEADS


def tested_checkpoint(spec: RunSpec) -> str:
    """The checkpoint a run is tested with: `best` on validation, or the last epoch's where the
    protocol asks for it (train.test_checkpoint=last). A hemisphere is always tested at `best`, the
    checkpoint the nets built on it load: never one the test set chose."""
    return "best" if spec.kind_spec.role in ("left", "right") else spec.train.test_checkpoint


def selection_score(val_metrics: dict) -> float:
    """Mean validation accuracy over the model's heads: what picks checkpoints and ensemble members.
    A model without heads (self-supervised) is picked by its own validation loss, lowest first."""
    accs = [val_metrics[f"acc_{h}"] for h in HEADS if f"acc_{h}" in val_metrics]
    return float(np.mean(accs)) if accs else -val_metrics["loss_model"]


def evaluate(model: nn.Module, loader: Loader, spec: RunSpec, dev) -> tuple[dict, dict[str, torch.Tensor]]:
    """Per-head accuracy and loss over a whole split, plus the logits (on CPU) in loader order."""
    return evaluate_members(model, loader, spec, dev, 1)[0]


@torch.no_grad()
def evaluate_members(
    model: nn.Module, loader: Loader, spec: RunSpec, dev, k: int
) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """evaluate() for each of the K members of a fused model (K = 1: a plain one); each sees every batch.

    Outputs stay on the device until the split is done: one copy to the host, not one per batch."""
    model.eval()
    logits: list[dict[str, list[torch.Tensor]]] = [{} for _ in range(k)]
    labels: dict[str, list[torch.Tensor]] = {"fine": [], "coarse": []}
    model_loss: list[list[torch.Tensor]] = [[] for _ in range(k)]  # a model's own loss, image-weighted
    for x, fine, coarse in loader:
        outputs = model(stack_inputs([x] * k) if k > 1 else x)
        for j, out in enumerate(member_outputs(outputs, k)):
            for h, z in out.items():
                if h == "loss":
                    model_loss[j].append(z.detach().float() * len(x))
                else:
                    logits[j].setdefault(h, []).append(z.float())
        labels["fine"].append(fine)
        labels["coarse"].append(coarse)
    truth = {h: torch.cat(v).cpu() for h, v in labels.items()}
    results = []
    for member, own_loss in zip(logits, model_loss, strict=True):
        out = {h: torch.cat(v).cpu() for h, v in member.items()}
        metrics = {}
        for h, z in out.items():
            metrics[f"acc_{h}"] = float((z.argmax(1) == truth[h]).float().mean())
            metrics[f"loss_{h}"] = float(F.cross_entropy(z, truth[h]))
        if own_loss:
            metrics["loss_model"] = float(torch.stack(own_loss).sum()) / len(truth["fine"])
        metrics["score"] = selection_score(metrics)
        results.append((metrics, out))
    return results


def member_outputs(outputs: dict[str, torch.Tensor], k: int) -> list[dict[str, torch.Tensor]]:
    if k == 1:
        return [outputs]
    split = split_outputs(outputs, k)
    return [{h: z[j] for h, z in split.items()} for j in range(k)]
