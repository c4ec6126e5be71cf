"""make_loader: one constructor for the three loaders (data.loader = memory | ffcv | torch).

Every loader has DeviceLoader's interface: set_epoch(e), len() (batches per epoch on this rank),
iteration yielding (x float32 NCHW normalised, fine int64, coarse int64) on the device,
batch_size (the global batch) and num_samples. `per_rank` says whether a training loader already
yields only this DDP rank's share of each global batch (ffcv and torch under DDP) or the whole
global batch (memory; missing attribute = False), which the training loop then slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from bilateral.data.hierarchy import HierarchicalSplit
from bilateral.data.memory_loader import DeviceLoader, LoaderOptions
from bilateral.errors import ConfigError
from bilateral.extras import require

LOADERS = ("memory", "ffcv", "torch")


class Loader(Protocol):
    """What the training loop needs of a loader; make_loader returns one of the three."""

    batch_size: int

    def set_epoch(self, epoch: int) -> None: ...

    def with_seed(self, seed: int) -> Loader: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]: ...


def check_loader(kind: str, size: int, flip: bool) -> None:
    """The ffcv and torch loaders crop and flip 32x32 images: refuse other data before any run (the
    front door's preflight) rather than in each run, after its .beton files were written."""
    if kind != "memory" and (size != 32 or not flip):
        raise ConfigError(
            f"data.loader={kind} crops and flips 32x32 images, and this data is {size}x{size}"
            f"{'' if flip else ' with labels a flip changes'}. Fix: use data.loader=memory"
        )


def make_loader(
    kind: str,
    split: HierarchicalSplit,
    indices: np.ndarray | None,
    opts: LoaderOptions,
    *,
    beton: str | Path | None = None,
    workers: int | None = None,
    rank: int = 0,
    world: int = 1,
) -> Loader:
    """A loader of split[indices]; ffcv reads the same samples from `beton` (bilateral.data.beton).

    rank and world > 1 (training loaders inside torch.distributed) make ffcv and torch load only
    this rank's samples. workers: FFCV threads or DataLoader processes (default: torch's threads).
    """
    if kind == "memory":
        return DeviceLoader(split, indices, opts)
    check_loader(kind, split.images.shape[1], opts.flip)
    if kind == "torch":
        from bilateral.data.torch_loader import TorchLoader

        return TorchLoader(split, indices, opts, workers, rank, world)
    if kind == "ffcv":
        if beton is None:
            raise ConfigError("the ffcv loader needs the .beton file of the split (bilateral.data.beton)")
        require("ffcv", "data.loader=ffcv")
        from bilateral.data.ffcv_loader import FfcvLoader

        loader = FfcvLoader(beton, opts, workers, distributed=world > 1)
        expected = len(split) if indices is None else len(indices)
        if loader.num_samples != expected:
            raise ConfigError(
                f"{beton} holds {loader.num_samples} samples, the split {expected}. Fix: delete the "
                "file's directory and rerun, so that it is prepared again."
            )
        return loader
    raise ConfigError(f"data.loader={kind!r} is not supported: choose one of {', '.join(LOADERS)}")
