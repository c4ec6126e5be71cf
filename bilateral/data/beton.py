"""FFCV .beton files of a dataset's train / val / test parts, written once and shared by every run.

    data/ffcv/<dataset fingerprint>-<split hash>/{train,val,test}.beton + manifest.json

Each file holds exactly the samples of its part, in the order of its index array, with fields
image (raw uint8 32x32x3, bit exact), fine, coarse and index (the sample's position in the
dataset's train or test split). The directory is keyed on the data and on the index arrays, so a
run reads the files of its own split and never a stale one.

Writers take an exclusive lock on the directory's lock file, write every file under a temporary
name and rename it into place, and write manifest.json last: a directory with a manifest is
complete, and processes (Ray trials, DDP ranks, Slurm tasks) racing to prepare the same files wait
for the first instead of corrupting each other's output.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from bilateral.data.hierarchy import HierarchicalDataset
from bilateral.errors import ConfigError, DataError, disk_full, is_disk_full
from bilateral.extras import require
from bilateral.store import write_json

FIELDS = ("image", "fine", "coarse", "index")
PAGE_SIZE = 1 << 21  # FFCV's minimum; its 8 MiB default makes a tiny .beton 25 MB
PARTS = ("train", "val", "test")

# part name -> (the dataset split it draws from: "train" | "test", indices into that split)
Parts = Mapping[str, tuple[str, np.ndarray]]


def split_parts(splits) -> dict[str, tuple[str, np.ndarray]]:
    """The parts of bilateral.run_data.Splits (val is held out of the train split)."""
    return {"train": ("train", splits.train), "val": ("train", splits.val), "test": ("test", splits.test)}


def split_hash(parts: Parts) -> str:
    """16 hex chars identifying which samples each part holds, in which order."""
    h = hashlib.sha256()
    for name in sorted(parts):
        source, indices = parts[name]
        h.update(f"{name}:{source}:".encode())
        h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def beton_dir(data: HierarchicalDataset, parts: Parts, root: str | Path = "data") -> Path:
    return Path(root) / "ffcv" / f"{data.fingerprint()}-{split_hash(parts)}"


def prepare_betons(
    data: HierarchicalDataset, parts: Parts, root: str | Path = "data", workers: int = 1
) -> dict[str, Path]:
    """{part: path of its .beton}, writing the files first unless a complete set is cached."""
    directory = beton_dir(data, parts, root)
    paths = {name: directory / f"{name}.beton" for name in parts}
    manifest = directory / "manifest.json"
    if manifest.exists():
        return paths
    for name, (source, indices) in parts.items():
        if source not in ("train", "test"):
            raise ConfigError(f"part {name!r} draws from split {source!r}: use 'train' or 'test'")
        if len(indices) == 0:
            raise ConfigError(
                f"the {name} part is empty, and FFCV cannot write an empty .beton. "
                "Fix: give it samples (data.val_size > 0) or use data.loader=memory."
            )
    require("ffcv", "writing .beton files (data.loader=ffcv)")
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory.with_suffix(".lock")):
        if manifest.exists():  # another process wrote them while this one waited
            return paths
        for name, (source, indices) in parts.items():
            split = data.train if source == "train" else data.test
            _write_atomic(paths[name], _Samples(split, np.asarray(indices, dtype=np.int64)), workers)
        info = {
            "dataset": data.name,
            "fingerprint": data.fingerprint(),
            "parts": {name: {"split": src, "samples": len(idx)} for name, (src, idx) in parts.items()},
            "fields": list(FIELDS),
            "page_size": PAGE_SIZE,
        }
        write_json(manifest, info)
    return paths


class _Samples:
    """What DatasetWriter.from_indexed_dataset reads: sample i -> (image, fine, coarse, index)."""

    def __init__(self, split, indices: np.ndarray):
        if len(indices) and (indices.min() < 0 or indices.max() >= len(split)):
            raise DataError(f"indices fall outside the split's {len(split)} samples")
        self.images = split.images[indices]
        self.fine = split.fine[indices]
        self.coarse = split.coarse[indices]
        self.index = indices

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.images[i], int(self.fine[i]), int(self.coarse[i]), int(self.index[i])


def _write_atomic(path: Path, samples: _Samples, workers: int) -> None:
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        fields = {
            "image": RGBImageField(write_mode="raw"),
            "fine": IntField(),
            "coarse": IntField(),
            "index": IntField(),
        }
        writer = DatasetWriter(tmp, fields, page_size=PAGE_SIZE, num_workers=max(1, workers))
        writer.from_indexed_dataset(samples, chunksize=1000)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(path, samples.images.nbytes) from None
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes, or the process dies
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
