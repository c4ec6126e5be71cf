"""Datasets with two labels per image, fine and coarse.

Usually a hierarchy: the fine label implies the coarse one (fine_to_coarse). A dataset may instead
have two independent labels (fine_to_coarse None), such as navon's local and global shape; then
whatever assumes a hierarchy (coarse-from-fine accuracy) says that it does not apply.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from bilateral.errors import DataError

MIN_SIZE = 8  # smallest image side any backbone accepts

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass(eq=False)
class HierarchicalSplit:
    """One split (train or test): uint8 HWC images with their fine and coarse labels."""

    images: np.ndarray  # uint8 (N, S, S, 3); S = 32 for the CIFARs
    fine: np.ndarray  # int64 (N,)
    coarse: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.images)


@dataclass(eq=False)
class HierarchicalDataset:
    """A train and a test split plus the class names and the fine -> coarse map they share (None: the
    labels are independent). flip_invariant: a horizontal flip keeps both labels (False for glyphs).
    val_pool: bool per train image, True for those reserved for validation because they are drawn
    from other sources than the rest (navon: other glyph scans), so validation measures unseen
    sources; None lets the validation split draw from every train image (bilateral.data.split)."""

    name: str
    train: HierarchicalSplit
    test: HierarchicalSplit
    fine_names: list[str]
    coarse_names: list[str]
    fine_to_coarse: np.ndarray | None  # int64 (num_fine,): coarse index of each fine class
    flip_invariant: bool = True
    val_pool: np.ndarray | None = None
    _fingerprint: str | None = field(default=None, init=False, repr=False)
    _mean_std: Stats | None = field(default=None, init=False, repr=False)

    @property
    def num_fine(self) -> int:
        return len(self.fine_names)

    @property
    def num_coarse(self) -> int:
        return len(self.coarse_names)

    @property
    def hierarchical(self) -> bool:
        """True when the fine label implies the coarse one; False for independent labels."""
        return self.fine_to_coarse is not None

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[1])

    def validate(self) -> None:
        """Raise DataError unless arrays, names and labels are mutually consistent.

        Every loader calls this, so a model never trains on labels that disagree with the map.
        """
        f2c = self.fine_to_coarse
        if f2c is not None and (f2c.dtype != np.int64 or f2c.shape != (self.num_fine,)):
            raise DataError(
                f"{self.name}: fine_to_coarse has dtype {f2c.dtype} and shape {f2c.shape}, "
                f"expected int64 ({self.num_fine},). Fix: rebuild it with fine_to_coarse_from_map."
            )
        if f2c is not None and self.num_fine and (f2c.min() < 0 or f2c.max() >= self.num_coarse):
            raise DataError(
                f"{self.name}: fine_to_coarse points outside the {self.num_coarse} coarse classes. "
                "Fix: make every fine class map to an existing coarse class."
            )
        for split_name, split in (("train", self.train), ("test", self.test)):
            self._validate_split(split_name, split)
        pool = self.val_pool
        if pool is not None and (pool.dtype != np.bool_ or pool.shape != (len(self.train),) or pool.all()):
            raise DataError(
                f"{self.name}: val_pool has dtype {pool.dtype} and shape {pool.shape}, expected bool "
                f"({len(self.train)},), one per train image, with some left to train on. Fix: rebuild it."
            )

    def _validate_split(self, split_name: str, split: HierarchicalSplit) -> None:
        where = f"{self.name} {split_name}"
        n = len(split.images)
        shape = split.images.shape
        size = self.train.images.shape[1] if self.train.images.ndim == 4 else 32
        if split.images.dtype != np.uint8 or shape[1:] != (size, size, 3) or size < MIN_SIZE:
            raise DataError(
                f"{where}: images have dtype {split.images.dtype} and shape {shape}, expected uint8 "
                f"(N, S, S, 3) with one side S >= {MIN_SIZE} for both splits. Fix: decode the images "
                "as square RGB uint8 of one size (32x32 for the CIFARs)."
            )
        for level, labels, count in (
            ("fine", split.fine, self.num_fine),
            ("coarse", split.coarse, self.num_coarse),
        ):
            if labels.dtype != np.int64 or labels.shape != (n,):
                raise DataError(
                    f"{where}: {level} labels have dtype {labels.dtype} and shape {labels.shape}, "
                    f"expected int64 ({n},), one per image. Fix: rebuild the dataset."
                )
            if n and (labels.min() < 0 or labels.max() >= count):
                raise DataError(
                    f"{where}: {level} labels fall outside 0..{count - 1}. "
                    f"Fix: check the labels against the {count} {level} class names."
                )
        if self.fine_to_coarse is None:
            return
        bad = np.flatnonzero(split.coarse != self.fine_to_coarse[split.fine])
        if bad.size:
            i = int(bad[0])
            fine = self.fine_names[split.fine[i]]
            raise DataError(
                f"{where}: {bad.size} samples have a coarse label that disagrees with the fine -> "
                f"coarse map (first: sample {i}, fine '{fine}', coarse "
                f"'{self.coarse_names[split.coarse[i]]}', map says "
                f"'{self.coarse_names[self.fine_to_coarse[split.fine[i]]]}'). "
                "Fix: correct the coarse labels or the coarse map."
            )

    def fingerprint(self) -> str:
        """16 hex chars identifying the exact data, recorded with every run to detect drift."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update("\n".join([self.name, *self.fine_names, "|", *self.coarse_names]).encode())
            if self.fine_to_coarse is not None:  # independent labels: nothing, as before for the rest
                h.update(np.ascontiguousarray(self.fine_to_coarse).tobytes())
            for split in (self.train, self.test):
                for array in (split.images, split.fine, split.coarse):
                    h.update(str(array.shape).encode())
                    h.update(np.ascontiguousarray(array).tobytes())
            if self.val_pool is not None:  # none declared: nothing, as before
                h.update(b"val_pool" + np.packbits(self.val_pool).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def mean_std(self) -> Stats:
        """Per-channel mean and std of the train images in [0, 1], for normalisation.

        Exact, from per-channel histograms built in chunks, so no float copy of the split is made.
        """
        if self._mean_std is None:
            counts = np.zeros((3, 256), dtype=np.int64)
            for start in range(0, len(self.train.images), 4096):
                chunk = self.train.images[start : start + 4096]
                for c in range(3):
                    counts[c] += np.bincount(chunk[..., c].ravel(), minlength=256)
            values = np.arange(256) / 255.0
            mean = counts @ values / counts.sum(axis=1)
            var = (counts * (values - mean[:, None]) ** 2).sum(axis=1) / counts.sum(axis=1)
            std = np.sqrt(var)
            self._mean_std = (
                (float(mean[0]), float(mean[1]), float(mean[2])),
                (float(std[0]), float(std[1]), float(std[2])),
            )
        return self._mean_std


def fine_to_coarse_from_map(
    coarse_to_fine: dict[str, list[str]], fine_names: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Turn a {coarse: [fine, ...]} map into (fine_to_coarse, coarse_names).

    Coarse classes keep the map's order. The map must assign each fine class exactly one coarse class.
    """
    index = {name: i for i, name in enumerate(fine_names)}
    coarse_names = list(coarse_to_fine)
    owners: dict[str, list[str]] = {}
    fine_to_coarse = np.full(len(fine_names), -1, dtype=np.int64)
    problems = [f"coarse class '{c}' lists no fine classes" for c in coarse_names if not coarse_to_fine[c]]
    for c, coarse in enumerate(coarse_names):
        for fine in coarse_to_fine[coarse]:
            owners.setdefault(fine, []).append(coarse)
            if fine in index:
                fine_to_coarse[index[fine]] = c
    unknown = sorted(f for f in owners if f not in index)
    if unknown:
        problems.append(f"fine classes {unknown} do not exist (the data has {sorted(index)})")
    twice = {f: c for f, c in owners.items() if len(c) > 1}
    problems += [f"fine class '{f}' is listed under {' and '.join(map(repr, c))}" for f, c in twice.items()]
    missing = [name for name in fine_names if name not in owners]
    if missing:
        problems.append(f"fine classes {missing} are in no coarse class")
    if problems:
        raise DataError(
            f"coarse map: {'; '.join(problems)}. Fix: list each fine class of the data under exactly one "
            "coarse class, by its folder name"
        )
    return fine_to_coarse, coarse_names


def labels_to_split(images: np.ndarray, fine: np.ndarray, fine_to_coarse: np.ndarray) -> HierarchicalSplit:
    """A split whose coarse labels are derived from its fine labels through the map."""
    fine = np.asarray(fine, dtype=np.int64)
    return HierarchicalSplit(images=images, fine=fine, coarse=fine_to_coarse[fine])
