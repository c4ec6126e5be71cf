"""Batches from a split held whole on the device, the fastest path for CIFAR-sized data."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from bilateral.data.augment import augment_batch, normalize
from bilateral.data.hierarchy import HierarchicalSplit
from bilateral.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class DeviceLoader:
    """Whole split resident on `device` as uint8 NCHW; batches are made by indexing, augmenting
    and normalising on the device.

    train=True shuffles, augments and drops the last incomplete batch (when there is a full one;
    BatchNorm needs more than one sample). train=False keeps the given order and every sample.
    Call set_epoch(e) before each epoch: the order and augmentation of epoch e depend only on
    (seed, e), so a resumed run replays the same batches without saving generator state.
    """

    def __init__(
        self,
        split: HierarchicalSplit,
        indices: np.ndarray | None,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size} must be at least 1. Fix: raise it.")
        select = slice(None) if indices is None else np.asarray(indices, dtype=np.int64)
        self.device = torch.device(device)
        self.images = torch.from_numpy(split.images[select]).permute(0, 3, 1, 2).contiguous()
        self.images = self.images.to(self.device)
        self.fine = torch.from_numpy(split.fine[select]).to(self.device)
        self.coarse = torch.from_numpy(split.coarse[select]).to(self.device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.channels_last = channels_last
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
        n, bs = self.num_samples, self.batch_size
        if self.train and n >= bs:
            return n // bs
        return -(-n // bs)

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = self.num_samples
        if self.train:
            order = torch.randperm(n, generator=generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = normalize(self.images[idx], self.mean, self.std)
            if self.train:
                x = augment_batch(x, generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.fine[idx], self.coarse[idx]
