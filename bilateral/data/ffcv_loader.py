"""FFCV loading with the paper's augmentation, as a drop-in for DeviceLoader.

The augmentation is one numba-compiled FFCV operation, ReflectCropFlip: a 32x32 window of the
image reflect-padded by 4 (numpy/torch "reflect": the edge pixel is not repeated) and a horizontal
flip with p = 0.5, exactly what bilateral.data.augment does to a batch. FFCV's own
RandomTranslate pads with a constant and its RandomHorizontalFlip draws from numba's unseeded
per-thread generators; here each sample's window and flip are a hash of (seed, epoch, sample),
so an epoch's batches are a pure function of (seed, epoch) whatever the number of threads or
DDP workers, and a resumed run replays them. The epoch reaches the compiled code through a
one-element array that the code reads at run time (set_epoch writes it), so nothing recompiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numba
import numpy as np
import torch
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from ffcv.reader import Reader
from ffcv.transforms import NormalizeImage, Squeeze, ToDevice, ToTensor, ToTorchImage
from numba.core import cgutils, types
from numba.extending import intrinsic

from bilateral.data.augment import normalize
from bilateral.data.memory_loader import LoaderOptions
from bilateral.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@intrinsic
def _pointer(typingctx, address):
    """An integer address as a void* (to read memory that changes after compilation)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@numba.njit(inline="always")
def _mix(x):
    """splitmix64's finaliser: a bijection of uint64 whose output bits look independent."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit
def draw(seed: int, epoch: int, sample: int, padding: int) -> tuple[int, int, bool]:
    """(row offset, column offset, flip) of one sample: offsets uniform in 0..2*padding."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    r = _mix(_mix(_mix(np.uint64(seed) + golden) + np.uint64(epoch) * golden) + np.uint64(sample))
    span = np.uint64(2 * padding + 1)
    return np.int64(r % span), np.int64((r >> np.uint64(20)) % span), (r >> np.uint64(40)) & np.uint64(1) == 1


@numba.njit
def draws(seed: int, epoch: int, samples: np.ndarray, padding: int) -> np.ndarray:
    """(N, 3) int64: draw() for many samples (tests and the torch loader's twin use it)."""
    out = np.empty((len(samples), 3), dtype=np.int64)
    for i in range(len(samples)):
        dy, dx, flip = draw(seed, epoch, samples[i], padding)
        out[i, 0], out[i, 1], out[i, 2] = dy, dx, flip
    return out


@numba.njit(inline="always")
def _reflect(i, n):
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


class ReflectCropFlip(Operation):
    """Random crop of the reflect-padded image, then horizontal flip with p = 0.5 (uint8 NHWC).

    Sample j of the .beton file (FFCV passes the file indices of a batch) in epoch e gets
    draw(seed, e, j, padding). Call set_epoch(e) before iterating over epoch e.
    """

    def __init__(self, seed: int, padding: int = 4, flip: bool = True):
        super().__init__()
        if not 0 <= padding < 32:
            raise ConfigError(f"padding {padding} must lie in 0..31 (reflect padding of 32x32 images)")
        self.seed, self.padding, self.flip = int(seed), int(padding), bool(flip)
        self.epoch = np.zeros(1, dtype=np.int64)  # read by the compiled code at its address

    def set_epoch(self, epoch: int) -> None:
        self.epoch[0] = epoch

    def generate_code(self):
        my_range = Compiler.get_iterator()
        seed, pad, flip_ok = self.seed, self.padding, self.flip
        address = self.epoch.ctypes.data

        def crop_flip(images, dst, indices):
            epoch = numba.carray(_pointer(address), 1, np.int64)[0]
            n, h, w, c = images.shape
            for i in my_range(n):
                dy, dx, flip = draw(seed, epoch, indices[i], pad)
                flip = flip and flip_ok
                for y in range(h):
                    sy = _reflect(y + dy - pad, h)
                    for x in range(w):
                        sx = _reflect((w - 1 - x if flip else x) + dx - pad, w)
                        for k in range(c):
                            dst[i, y, x, k] = images[i, sy, sx, k]
            return dst

        crop_flip.is_parallel = True
        crop_flip.with_indices = True
        return crop_flip

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        return replace(previous_state, jit_mode=True), AllocationQuery(
            previous_state.shape, previous_state.dtype
        )


class FfcvLoader:
    """Batches of a .beton file written by bilateral.data.beton, with DeviceLoader's interface.

    Yields (x float32 NCHW normalised, fine int64, coarse int64) on `device`. train=True shuffles
    (FFCV's RANDOM order seeded with seed + epoch), augments with ReflectCropFlip and drops the
    last incomplete batch; train=False reads in file order and keeps every sample.
    distributed=True (train only, inside torch.distributed) shards with FFCV's distributed mode:
    each rank reads its own samples in batches of batch_size / world, so per_rank is True and
    the training loop must not slice the batches again. batch_size stays the global batch size.
    On CPU, normalisation is FFCV's numba NormalizeImage; on CUDA the uint8 batch is copied
    (ToDevice) and normalised there. Yielded tensors are copies, never FFCV's reused buffers.
    """

    def __init__(
        self,
        path: str | Path,
        opts: LoaderOptions,
        workers: int | None = None,
        distributed: bool = False,
        padding: int = 4,
    ) -> None:
        batch_size, mean, std, train, seed = opts.batch_size, opts.mean, opts.std, opts.train, opts.seed
        world = torch.distributed.get_world_size() if distributed else 1
        if batch_size % world:
            raise ConfigError(f"batch size {batch_size} does not split over {world} DDP workers")
        self.device = torch.device(opts.device)
        self.rebuild = (path, opts, workers, distributed, padding)  # for with_seed
        self.batch_size = batch_size
        self.per_rank = distributed
        self.memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        self.epoch = 0
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.augment = ReflectCropFlip(seed, padding) if train else None
        on_cpu = self.device.type == "cpu"
        image = [SimpleRGBImageDecoder(), *([self.augment] if train else [])]
        if on_cpu:
            scale = np.float32(255)
            image += [NormalizeImage(np.array(mean) * scale, np.array(std) * scale, np.float32)]
            image += [ToTensor(), ToTorchImage()]
        else:
            image += [ToTensor(), ToDevice(self.device, non_blocking=True), ToTorchImage()]

        def label() -> list[Operation]:
            return [IntDecoder(), ToTensor(), Squeeze(), *([] if on_cpu else [ToDevice(self.device)])]

        self.num_samples = Reader(str(path)).num_samples
        self.loader = Loader(
            str(path),
            batch_size=batch_size // world,
            # FFCV sets torch's thread count to its own: by default keep the one this process has
            num_workers=min(workers or torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS),
            order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
            distributed=distributed,
            seed=seed,
            # as DeviceLoader: drop the last incomplete batch only when there is a full one
            drop_last=train and self.num_samples // world >= batch_size // world,
            pipelines={"image": image, "fine": label(), "coarse": label(), "index": None},
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def with_seed(self, seed: int) -> FfcvLoader:
        """The same samples with another order and augmentation (a fused run's own stream)."""
        path, opts, workers, distributed, padding = self.rebuild
        return FfcvLoader(path, replace(opts, seed=seed), workers, distributed, padding)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        if self.augment is not None:
            self.augment.set_epoch(self.epoch)
        self.loader.next_epoch = self.epoch  # FFCV's order of epoch e: seeded with seed + e
        batches = iter(self.loader)
        try:
            for image, fine, coarse in batches:
                if self.device.type == "cpu":
                    x = image.clone(memory_format=self.memory_format)
                else:
                    x = normalize(image, self.mean, self.std).contiguous(memory_format=self.memory_format)
                yield x, fine.clone(), coarse.clone()
        finally:  # an epoch left early: stop FFCV's thread, which would otherwise live on
            batches.close()
