"""Batches from a split held whole on the device, the fastest path for CIFAR-sized data."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bilateral.data.augment import augment_batch, normalize, to_device_async
from bilateral.data.hierarchy import HierarchicalSplit
from bilateral.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class LoaderOptions:
    """How every loader (memory, ffcv, torch) batches a split: the same options give the same
    samples, order and augmentation from each of them."""

    batch_size: int  # the global batch: a DDP rank's share is batch_size / world
    device: torch.device | str
    mean: Sequence[float]  # per channel, in [0, 1] units
    std: Sequence[float]
    train: bool  # shuffle, augment, drop the last incomplete batch
    seed: int = 0  # data order and augmentation of epoch e are a function of (seed, e)
    channels_last: bool = False
    flip: bool = True  # False where a mirror image changes a label (HierarchicalDataset.flip_invariant)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size {self.batch_size} must be at least 1. Fix: raise it.")


def batches_per_epoch(num_samples: int, batch_size: int, train: bool) -> int:
    """Training drops the last incomplete batch when there is a full one (BatchNorm needs more than
    one sample); evaluation keeps every sample."""
    if train and num_samples >= batch_size:
        return num_samples // batch_size
    return -(-num_samples // batch_size)


def training_order(num_samples: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
    """Epoch `epoch`'s order of the samples, a function of (seed, epoch) alone, so that a resumed run
    replays it; and the CPU generator, which goes on to draw the epoch's augmentation."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator), generator


class DeviceLoader:
    """Whole split resident on `device` as uint8 NCHW; batches are made by indexing, augmenting
    and normalising on the device.

    train=True shuffles, augments and drops the last incomplete batch (when there is a full one;
    BatchNorm needs more than one sample). train=False keeps the given order and every sample.
    Call set_epoch(e) before each epoch: the order and augmentation of epoch e depend only on
    (seed, e), so a resumed run replays the same batches without saving generator state.
    """

    def __init__(self, split: HierarchicalSplit, indices: np.ndarray | None, opts: LoaderOptions) -> None:
        select = slice(None) if indices is None else np.asarray(indices, dtype=np.int64)
        self.device = torch.device(opts.device)
        self.images = torch.from_numpy(split.images[select]).permute(0, 3, 1, 2).contiguous()
        self.images = self.images.to(self.device)
        self.fine = torch.from_numpy(split.fine[select]).to(self.device)
        self.coarse = torch.from_numpy(split.coarse[select]).to(self.device)
        self.mean = torch.tensor(opts.mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(opts.std, dtype=torch.float32, device=self.device)
        self.batch_size = opts.batch_size
        self.train = opts.train
        self.seed = opts.seed
        self.channels_last = opts.channels_last
        self.flip = opts.flip
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples held (a training epoch may skip the last incomplete batch of them)."""
        return len(self.fine)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def with_seed(self, seed: int) -> DeviceLoader:
        """The same split with another data order and augmentation, sharing the device tensors
        (K fused runs hold one copy of the training set, not K)."""
        other = copy.copy(self)
        other.seed, other.epoch = seed, 0
        return other

    def __len__(self) -> int:
        return batches_per_epoch(self.num_samples, self.batch_size, self.train)

    def __iter__(self) -> Iterator[Batch]:
        if self.train:
            order, generator = training_order(self.num_samples, self.seed, self.epoch)
            order = to_device_async(order, self.device)
        else:
            order = torch.arange(self.num_samples, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = normalize(self.images[idx], self.mean, self.std)
            if self.train:
                x = augment_batch(x, generator, flip=self.flip)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.fine[idx], self.coarse[idx]
