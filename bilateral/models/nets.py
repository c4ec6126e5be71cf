"""Whole networks: unilateral (one backbone), bilateral (two hemispheres) and ensembles.

Every net's forward returns {"fine": logits, "coarse": logits} (only the heads it has), so the
training loop and the evaluation treat them alike.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bilateral.errors import ConfigError
from bilateral.models.heads import Head


def _out_dim(backbone: nn.Module) -> int:
    out_dim = getattr(backbone, "out_dim", None)
    if not isinstance(out_dim, int):
        raise ConfigError(
            f"{type(backbone).__name__} has no integer `out_dim`: "
            "build backbones with bilateral.models.build_backbone, or set `out_dim` on your module"
        )
    return out_dim


def _heads(in_dim: int, num_fine: int | None, num_coarse: int | None, dropout: float) -> nn.ModuleDict:
    sizes = {"fine": num_fine, "coarse": num_coarse}
    return nn.ModuleDict({k: Head(in_dim, n, dropout) for k, n in sizes.items() if n is not None})


class UnilateralNet(nn.Module):
    """One backbone with a fine head, a coarse head, or both (the baselines and the hemispheres)."""

    def __init__(
        self, backbone: nn.Module, num_fine: int | None, num_coarse: int | None, dropout: float = 0.6
    ) -> None:
        super().__init__()
        if num_fine is None and num_coarse is None:
            raise ConfigError("UnilateralNet needs at least one head: give num_fine, num_coarse or both")
        self.backbone = backbone
        self.heads = _heads(_out_dim(backbone), num_fine, num_coarse, dropout)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.features(x)
        return {k: head(z) for k, head in self.heads.items()}


class BilateralNet(nn.Module):
    """Two hemispheres see the same image; fine and coarse heads read their concatenated features.

    The hemispheres may be different backbones (e.g. resnet9 left, vgg11 right).
    """

    def __init__(
        self, left: nn.Module, right: nn.Module, num_fine: int, num_coarse: int, dropout: float = 0.6
    ) -> None:
        super().__init__()
        self.left = left
        self.right = right
        self.heads = _heads(_out_dim(left) + _out_dim(right), num_fine, num_coarse, dropout)
        self._hemispheres_in_eval = False
        self.fused_members = 1  # K when bilateral.models.fused.fuse made this net hold K nets side by side

    def freeze_hemispheres(self, update_bn_stats: bool = False) -> None:
        """Stop training the hemispheres: only the heads learn (the paper's specialised model).

        By default the hemispheres also stay in eval mode when the net is put in train mode, so a
        training step changes neither their weights nor their BatchNorm running statistics, and
        they normalise with the statistics they were trained with. update_bn_stats=True reproduces
        the authors' code, where the frozen hemispheres' BatchNorm kept batch statistics in
        training and kept updating its running statistics.
        """
        for p in [*self.left.parameters(), *self.right.parameters()]:
            p.requires_grad_(False)
        self._hemispheres_in_eval = not update_bn_stats
        self.train(self.training)

    def train(self, mode: bool = True) -> "BilateralNet":
        super().train(mode)
        if self._hemispheres_in_eval:
            self.left.eval()
            self.right.eval()
        return self

    def left_features(self, x: Tensor) -> Tensor:
        return self.left(x)

    def right_features(self, x: Tensor) -> Tensor:
        return self.right(x)

    def features(self, x: Tensor) -> Tensor:
        """[left, right] per net: fused, the K nets' features stay in K contiguous blocks."""
        left, right = self.left_features(x), self.right_features(x)
        k = self.fused_members
        return torch.cat([left.reshape(len(x), k, -1), right.reshape(len(x), k, -1)], dim=2).flatten(1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.features(x)
        return {k: head(z) for k, head in self.heads.items()}


class Ensemble(nn.Module):
    """Mean of the members' logits for each head (the paper averages logits, not probabilities)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("Ensemble needs at least one member: pass a non-empty list of nets")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs = [member(x) for member in self.members]
        keys = outputs[0].keys()
        if any(out.keys() != keys for out in outputs):
            raise ConfigError(
                f"ensemble members return different heads {[sorted(o) for o in outputs]}: "
                "build every member with the same heads (num_fine / num_coarse)"
            )
        return {k: torch.stack([out[k] for out in outputs]).mean(dim=0) for k in keys}
