"""The baseline: a plain torch DataLoader over PIL images with per-image torchvision transforms.

RandomCrop(32, padding=4, padding_mode="reflect"), RandomHorizontalFlip, ToTensor, Normalize: the
textbook CIFAR pipeline, in worker processes. It visits samples in the same order as DeviceLoader
(torch.randperm seeded with (seed, epoch)) and seeds torch's generator for each sample with a hash
of (seed, epoch, sample), so an epoch is a pure function of (seed, epoch) whatever the number of
workers, and the caller's random state is never touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision import transforms

from bilateral.data.hierarchy import HierarchicalSplit
from bilateral.data.memory_loader import LoaderOptions, batches_per_epoch, training_order
from bilateral.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _Images(Dataset):
    """Sample (i, epoch) -> (transformed image, fine, coarse); epoch None = no augmentation."""

    def __init__(self, split: HierarchicalSplit, indices: np.ndarray, mean, std, seed: int):
        self.images = split.images[indices]
        self.fine = torch.from_numpy(split.fine[indices])
        self.coarse = torch.from_numpy(split.coarse[indices])
        self.seed = seed
        self.plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        self.augment = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
                transforms.RandomHorizontalFlip(),
                self.plain,
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int | None]):
        i, epoch = key
        image = Image.fromarray(self.images[i])
        if epoch is None:
            x = self.plain(image)
        elif get_worker_info() is not None:  # a worker process: its generator is its own
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, i))  # CPU: what transforms use
            x = self.augment(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(sample_seed(self.seed, epoch, i))
                x = self.augment(image)
        return x, self.fine[i], self.coarse[i]


def sample_seed(seed: int, epoch: int, sample: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{epoch}/{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class Batches:
    """The DataLoader's batch_sampler: this rank's batches of sample keys (index, epoch or None).

    The order is DeviceLoader's (bilateral.data.memory_loader.training_order) for training, the
    given order otherwise. With world > 1, each batch is cut to this rank's contiguous share,
    the slice train.py takes of the memory loader's global batches.
    """

    def __init__(self, num_samples: int, batch_size: int, train: bool, seed: int, rank: int, world: int):
        self.num_samples, self.batch_size, self.train, self.seed = num_samples, batch_size, train, seed
        self.rank, self.world = rank, world
        self.epoch = 0

    def __len__(self) -> int:
        return batches_per_epoch(self.num_samples, self.batch_size, self.train)

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        if self.train:
            order = training_order(self.num_samples, self.seed, self.epoch)[0].tolist()
        else:
            order = list(range(self.num_samples))
        epoch = self.epoch if self.train else None
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            n = len(batch)
            batch = batch[self.rank * n // self.world : (self.rank + 1) * n // self.world]
            yield [(i, epoch) for i in batch]


class TorchLoader:
    """DeviceLoader's interface over a torch DataLoader (see the module docstring).

    train=True shuffles, augments and drops the last incomplete batch (when there is a full one).
    With world > 1 (train only, inside torch.distributed) it loads just this rank's contiguous
    share of each global batch, the samples the memory loader's batch would give this rank, so
    per_rank is True; batch_size stays the global batch size.
    """

    def __init__(
        self,
        split: HierarchicalSplit,
        indices: np.ndarray | None,
        opts: LoaderOptions,
        workers: int | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        batch_size, seed = opts.batch_size, opts.seed
        if batch_size % world:
            raise ConfigError(f"batch size {batch_size} must be a multiple of the {world} DDP workers")
        indices = np.arange(len(split)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.device = torch.device(opts.device)
        self.rebuild = (split, indices, opts, workers, rank, world)  # for with_seed
        self.batch_size, self.train, self.per_rank = batch_size, opts.train, world > 1
        self.memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        self.num_samples = len(indices)
        self.batches = Batches(len(indices), batch_size, opts.train, seed, rank, world)
        workers = torch.get_num_threads() if workers is None else workers
        self.loader = DataLoader(
            _Images(split, indices, opts.mean, opts.std, seed),
            batch_sampler=self.batches,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),  # worker seeds: not from the caller's generator
        )

    def set_epoch(self, epoch: int) -> None:
        self.batches.epoch = epoch

    def with_seed(self, seed: int) -> TorchLoader:
        """The same samples with another order and augmentation (a fused run's own stream)."""
        split, indices, opts, workers, rank, world = self.rebuild
        return TorchLoader(split, indices, replace(opts, seed=seed), workers, rank, world)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        for x, fine, coarse in self.loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            yield x, fine.to(self.device, non_blocking=True), coarse.to(self.device, non_blocking=True)
