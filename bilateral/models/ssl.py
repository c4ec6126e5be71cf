"""A backbone trained without labels: SimCLR (lightly's projection head and NT-Xent loss).

Its forward returns {"loss": NT-Xent of two random views of the batch} and no heads, so the
training loop adds that loss to the (absent) cross-entropies and the evaluation selects its
checkpoint by the same loss on the validation images: no label is ever read. The views are made on
the batch, on its device, per image: a random resized crop (scale 0.3-1, via an affine grid) and
brightness/contrast jitter, on top of the loader's own crop and flip.

Under DDP each rank holds its share of the global batch; the loss gathers every rank's projections
(lightly's `gather_distributed`, with gradients), so each image is contrasted with the whole global
batch as in one process, and 1-worker and N-worker runs optimise the same objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bilateral.extras import require

CROP_SCALE = (0.3, 1.0)  # area fraction of the random resized crop
JITTER = 0.4  # brightness and contrast, as SimCLR's colour jitter strength
EVAL_VIEW_SEED = 0  # validation views are the same draws at every epoch: a comparable loss


def random_views(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One random view of each image of a normalised (N, C, H, W) batch."""
    n = len(x)

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(n, *shape, device=x.device, generator=generator)

    side = uniform(*CROP_SCALE).sqrt()  # the crop's side as a fraction of the image's
    shift = (uniform(-1.0, 1.0, 2) * (1 - side)[:, None]).T
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = side, side
    theta[:, 0, 2], theta[:, 1, 2] = shift[0], shift[1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    view = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    contrast = uniform(1 - JITTER, 1 + JITTER, 1, 1, 1)
    brightness = uniform(-JITTER, JITTER, 1, 1, 1)
    mean = view.mean(dim=(1, 2, 3), keepdim=True)
    return ((view - mean) * contrast + mean + brightness).to(x.dtype)


class SimCLRNet(nn.Module):
    """backbone -> projection head; trained by NT-Xent between two views of each image."""

    def __init__(self, backbone: nn.Module, projection_dim: int = 128, temperature: float = 0.5) -> None:
        super().__init__()
        require("lightly", "self-supervised hemispheres")
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        self.backbone = backbone
        dim = backbone.out_dim
        self.projection = SimCLRProjectionHead(dim, dim, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        self.heads = nn.ModuleDict()  # no classifier: the analysis reads features() alone

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        generator = None
        if not self.training:
            generator = torch.Generator(x.device).manual_seed(EVAL_VIEW_SEED)
        views = torch.cat([random_views(x, generator), random_views(x, generator)])
        z = self.projection(self.backbone(views))
        with torch.autocast(x.device.type, enabled=False):  # the contrastive logits in fp32
            z = z.float()
            return {"loss": self.criterion(z[: len(x)], z[len(x) :])}
