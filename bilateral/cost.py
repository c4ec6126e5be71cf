"""What a run costs in FLOPs, counted on its network rather than derived by hand (so plug-in kinds
get it too): per image at inference, and per training image, where the parts that train cost their
forward and backward (about 3x the forward) and frozen parts their forward alone.

The paper's claim is about cost at equal accuracy, and wall time on a shared machine measures the
machine as much as the model: FLOPs are the cost a comparison states; wall time stays beside them.
Counted: convolutions and matrix products (torch.utils.flop_counter), 2 FLOPs per multiply-add.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from bilateral.models.checkpoint import count_parameters
from bilateral.plan import RunSpec

BACKWARD_PER_FORWARD = 2  # a trained layer's backward: gradients of its input and of its weights


@dataclass(frozen=True)
class RunCost:
    params: int
    trained_params: int
    inference_flops: int  # one image, the whole network (an ensemble: all its members)
    train_flops_per_image: int  # one training image: forward of everything, backward of what trains

    def training_flops(self, images: int) -> int:
        return self.train_flops_per_image * images


def run_cost(spec: RunSpec, num_fine: int, num_coarse: int, image_size: int) -> RunCost:
    """The cost of a run of this spec. A kind that does not train (an ensemble) infers with its
    members' networks (Kind.network) and trains nothing itself: its members' training is their own
    rows' cost."""
    return _cost_of(json.dumps(spec.to_dict(), sort_keys=True), num_fine, num_coarse, image_size)


@functools.lru_cache(maxsize=64)
def _cost_of(spec_json: str, num_fine: int, num_coarse: int, image_size: int) -> RunCost:
    spec = RunSpec.from_dict(json.loads(spec_json))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = spec.kind_spec.network(spec, num_fine, num_coarse).eval()
    if spec.trains and not spec.kind_spec.trains_backbones(spec):
        model.freeze_hemispheres()  # as the kind's prepare() does once its checkpoints are loaded
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    total = by_module.get("Global", 0)
    frozen = sum(
        by_module.get(f"{root}.{name}", 0)
        for name, part in model.named_children()
        if not any(p.requires_grad for p in part.parameters())
    )
    if not spec.trains:
        return RunCost(count_parameters(model), 0, int(total), 0)
    return RunCost(
        params=count_parameters(model),
        trained_params=count_parameters(model, trainable_only=True),
        inference_flops=int(total),
        train_flops_per_image=int(total + BACKWARD_PER_FORWARD * (total - frozen)),
    )
