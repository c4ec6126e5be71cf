"""K same-shape networks as one: every layer holds the K models side by side along its channels.

A Conv2d(in, out, groups=g) of each model becomes one Conv2d(K*in, K*out, groups=K*g), a
BatchNorm2d(C) one BatchNorm2d(K*C), a Linear one batched matmul; pooling, ReLU, residual sums
and dropout act per channel already. Model k reads input channels [3k, 3k+3), i.e. its own batch,
so the fused net computes exactly what the K models compute apart, in one pass of large kernels:
what a small CPU-sized (or GPU-wasting) network needs. A net that concatenates channels of two
branches (BilateralNet) has a `fused_members` attribute, set to K here, to concatenate per model.
Losses add up per model, and Adam / SGD act per element, so one optimiser over the fused
parameters trains the K models as K optimisers would.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bilateral.errors import ConfigError

STATELESS = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)


class GroupedLinear(nn.Module):
    """K Linear layers applied to K slices of the input: (B, K*in) -> (B, K*out)."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.k = len(linears)
        self.weight = nn.Parameter(torch.stack([lin.weight.detach() for lin in linears]).clone())
        self.bias = nn.Parameter(torch.stack([lin.bias.detach() for lin in linears]).clone())

    def forward(self, x: Tensor) -> Tensor:
        z = torch.einsum("bki,koi->bko", x.reshape(len(x), self.k, -1), self.weight) + self.bias
        return z.reshape(len(x), -1)


def _fuse_leaf(modules: Sequence[nn.Module]) -> nn.Module:
    first, k = modules[0], len(modules)
    if isinstance(first, nn.Conv2d):
        fused = nn.Conv2d(
            k * first.in_channels,
            k * first.out_channels,
            first.kernel_size,
            first.stride,
            first.padding,
            first.dilation,
            k * first.groups,
            first.bias is not None,
            first.padding_mode,
        )
        with torch.no_grad():
            fused.weight.copy_(torch.cat([m.weight for m in modules]))
            if first.bias is not None:
                fused.bias.copy_(torch.cat([m.bias for m in modules]))
        return fused
    if isinstance(first, nn.BatchNorm2d):
        fused = nn.BatchNorm2d(
            k * first.num_features, first.eps, first.momentum, first.affine, first.track_running_stats
        )
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(fused, name).copy_(torch.cat([getattr(m, name) for m in modules]))
            fused.num_batches_tracked.copy_(first.num_batches_tracked)
        # one counter for K members that step together; each member's own is it plus an offset
        fused.member_offsets = [int(m.num_batches_tracked - first.num_batches_tracked) for m in modules]
        return fused
    if isinstance(first, nn.Linear):
        return GroupedLinear(modules)
    if isinstance(first, STATELESS):
        return copy.deepcopy(first)
    raise ConfigError(
        f"cannot fuse {type(first).__name__}: fused training supports conv/BN/linear networks "
        "(resnet9, vgg11, vgg11-features, resnet18/34); train this kind without --fuse"
    )


def _fuse_into(target: nn.Module, modules: Sequence[nn.Module]) -> None:
    for name, child in list(target.named_children()):
        parts = [getattr(m, name) for m in modules]
        if any(True for _ in child.children()):
            _fuse_into(child, parts)
        else:
            setattr(target, name, _fuse_leaf(parts))


def fuse(models: Sequence[nn.Module]) -> nn.Module:
    """One network computing the K models: input (B, K*3, H, W), every output (B, K*classes).

    Frozen parameters stay frozen (a specialised bilateral net: only the heads train) and module
    attributes such as a frozen hemisphere's eval mode carry over from the first model.
    """
    if len({tuple((k, v.shape) for k, v in m.state_dict().items()) for m in models}) != 1:
        raise ConfigError("fused models must have the same architecture and width")
    fused = copy.deepcopy(models[0])
    _fuse_into(fused, models)
    for module in fused.modules():  # nets that mix channels across layers keep the K blocks apart
        if hasattr(module, "fused_members"):
            module.fused_members = len(models)
    frozen = {name for name, p in models[0].named_parameters() if not p.requires_grad}
    for name, p in fused.named_parameters():
        p.requires_grad_(name not in frozen)
    fused.train(models[0].training)
    return fused


def stack_inputs(batches: Sequence[Tensor]) -> Tensor:
    """K batches (B, C, H, W) -> (B, K*C, H, W): model k sees batch k."""
    return torch.cat(list(batches), dim=1)


def split_outputs(outputs: dict[str, Tensor], k: int) -> dict[str, Tensor]:
    """(B, K*classes) -> (K, B, classes) per head."""
    return {h: z.reshape(len(z), k, -1).transpose(0, 1) for h, z in outputs.items()}


def _split(whole: Tensor, like: Tensor, k: int) -> list[Tensor]:
    """A fused tensor -> the K members' tensors shaped like `like` (one member's)."""
    if whole.dim() == 0 or whole.shape == like.shape:  # shared: num_batches_tracked, Adam's step
        return [whole.clone() for _ in range(k)]
    if whole.dim() == like.dim() + 1:  # GroupedLinear: (K, ...)
        return [part.clone() for part in whole]
    return [part.clone() for part in whole.chunk(k, dim=0)]


def _join(parts: Sequence[Tensor], like: Tensor) -> Tensor:
    """Inverse of _split: `like` is the fused tensor (or one of the same shape)."""
    if parts[0].dim() == 0 or parts[0].shape == like.shape:
        return parts[0].clone()
    if like.dim() == parts[0].dim() + 1:
        return torch.stack(list(parts))
    return torch.cat(list(parts))


def unfuse(fused: nn.Module, template: nn.Module, k: int) -> list[dict[str, Tensor]]:
    """The K models' state dicts (keys of `template`, an unfused model of the same architecture)."""
    fused_state = fused.state_dict()
    states: list[dict[str, Tensor]] = [{} for _ in range(k)]
    for key, value in template.state_dict().items():
        parts = _split(fused_state[key], value, k)
        if key.endswith("num_batches_tracked"):  # members fused with different counts keep them
            offsets = fused.get_submodule(key.rpartition(".")[0]).member_offsets
            parts = [part + offset for part, offset in zip(parts, offsets, strict=True)]
        for state, part in zip(states, parts, strict=True):
            state[key] = part
    return states


def _trainable(model: nn.Module) -> list[Tensor]:
    """The parameters an optimiser over `model` holds, in its order (bilateral.training builds it so)."""
    return [p for p in model.parameters() if p.requires_grad]


def unfuse_optimizer_state(state: dict, fused: nn.Module, template: nn.Module, k: int) -> list[dict]:
    """The optimiser state_dict of the fused model -> the K state_dicts that K separate optimisers
    (each over its own model's trainable parameters, same hyperparameters) would hold: a fused
    run's checkpoint resumes unfused, and the other way round."""
    params = list(zip(_trainable(fused), _trainable(template), strict=True))
    members: list[dict] = [
        {"state": {}, "param_groups": copy.deepcopy(state["param_groups"])} for _ in range(k)
    ]
    for index, per_param in state["state"].items():
        _, like = params[index]
        for name, value in per_param.items():
            parts = _split(value, like, k) if torch.is_tensor(value) else [value] * k
            for member, part in zip(members, parts, strict=True):
                member["state"].setdefault(index, {})[name] = part
    return members


def fuse_optimizer_states(states: Sequence[dict], fused: nn.Module) -> dict:
    """K members' optimiser state_dicts (as unfuse_optimizer_state gives) -> the fused optimiser's."""
    params = _trainable(fused)
    joined: dict = {"state": {}, "param_groups": copy.deepcopy(states[0]["param_groups"])}
    for index, per_param in states[0]["state"].items():
        joined["state"][index] = {
            name: _join([s["state"][index][name] for s in states], params[index])
            if torch.is_tensor(value)
            else value
            for name, value in per_param.items()
        }
    return joined
