"""Navon figures from real handwritten digits: a large digit (the global label) drawn out of copies
of a small digit (the local label), so which features are local and which global is known.

The glyphs are scikit-learn's bundled digits (1,797 real 8x8 scans of handwriting, 10 classes).
Each digit class's scans are split once, by the seed, into train, validation and test pools, so no
scan is seen in two of them. The train split holds the training images and, after them, the
validation images (drawn from the validation scans), which it declares as its val_pool: checkpoints
and probes are then chosen on glyphs the nets never trained on, as the test images are.

An image lays the large digit, resampled to a GRID x GRID mask, over a grid of cells; every cell
under the mask holds the same small digit, resampled to the cell's size. Background and ink colours
vary per image, and pixel noise is added.

Labels: fine = the small (local) digit, coarse = the large (global) digit. Every (local, global)
pair occurs equally often, so both labels are balanced and independent: there is no fine -> coarse
map (fine_to_coarse None). A horizontal flip changes a digit, so the dataset says flip_invariant
False and training crops without flipping.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bilateral.data.hierarchy import HierarchicalDataset, HierarchicalSplit
from bilateral.errors import ConfigError

GRID = 6  # cells per side of the large shape
SIZES = (32, 64)  # the image sides the suite tests; any side from 24 to 256 works
CLASSES = 10
TEST_FRACTION = 0.3  # of each digit class's scans, held out for the test images
VAL_FRACTION = 0.15  # of each digit class's scans, held out for the validation images
NUM_VAL = 5000  # validation images: as many as any preset's data.val_size asks for
MASK_THRESHOLD = 0.35  # of the large glyph's peak ink: a cell holds a small glyph above it
NOISE = 0.06


def digit_scans() -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (1797, 8, 8) in [0, 1], labels int64): scikit-learn's bundled digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def glyph_pools(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train, validation and test scans: each class split disjointly, TEST_FRACTION
    and VAL_FRACTION of it held out."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in range(CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test_cut = round(len(idx) * TEST_FRACTION)
        val_cut = test_cut + round(len(idx) * VAL_FRACTION)
        test.append(idx[:test_cut])
        val.append(idx[test_cut:val_cut])
        train.append(idx[val_cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val)), np.sort(np.concatenate(test))


def check_size(size: int) -> None:
    if not 4 * GRID <= size <= 256:
        raise ConfigError(
            f"navon image size {size} is out of range: give a side from {4 * GRID} to 256 (e.g. navon:32)"
        )


def cell_size(size: int) -> int:
    return size // GRID


Sources = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (small scan, large scan) per image


def make_navon(
    size: int = 32, seed: int = 0, num_train: int = 10_000, num_val: int = NUM_VAL, num_test: int = 2_000
) -> HierarchicalDataset:
    """The same arguments give the same arrays (about two seconds for the default sizes)."""
    return navon_with_sources(size, seed, num_train, num_val, num_test)[0]


def navon_with_sources(
    size: int = 32, seed: int = 0, num_train: int = 10_000, num_val: int = NUM_VAL, num_test: int = 2_000
) -> tuple[HierarchicalDataset, Sources]:
    """make_navon, and which scans (indices into digit_scans()) each image of each split was drawn
    from. The train split is num_train training images, then num_val validation images (val_pool)."""
    check_size(size)
    scans, labels = digit_scans()
    streams = np.random.SeedSequence(seed + 1).spawn(3)  # one per split: labels the same at every size
    made = [
        _make_split(np.random.default_rng(stream), scans, labels, pool, n, size)
        for stream, pool, n in zip(
            streams, glyph_pools(labels, seed), (num_train, num_val, num_test), strict=True
        )
    ]
    (train, train_src), (val, val_src), (test, test_src) = made
    dataset = HierarchicalDataset(
        name=f"navon{size}",
        train=HierarchicalSplit(
            images=np.concatenate([train.images, val.images]),
            fine=np.concatenate([train.fine, val.fine]),
            coarse=np.concatenate([train.coarse, val.coarse]),
        ),
        test=test,
        fine_names=[f"local-{d}" for d in range(CLASSES)],
        coarse_names=[f"global-{d}" for d in range(CLASSES)],
        fine_to_coarse=None,
        flip_invariant=False,
        val_pool=np.arange(num_train + num_val) >= num_train,
    )
    small, large = (np.concatenate(pair) for pair in zip(train_src, val_src, strict=True))
    return dataset, {"train": (small, large), "test": test_src}


def resample(glyphs: np.ndarray, side: int) -> np.ndarray:
    """(N, 8, 8) -> (N, side, side) by area averaging (down) or bilinear interpolation (up)."""
    x = torch.from_numpy(glyphs)[:, None]
    mode = "area" if side <= glyphs.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=(side, side), mode=mode, **kwargs)[:, 0].clamp(0, 1).numpy()


def large_masks(glyphs: np.ndarray) -> np.ndarray:
    """(N, GRID, GRID) bool: the cells of each large glyph that hold a small one."""
    cells = resample(glyphs, GRID)
    return cells > MASK_THRESHOLD * cells.max(axis=(1, 2), keepdims=True)


def _make_split(
    rng: np.random.Generator, scans: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int, size: int
) -> tuple[HierarchicalSplit, tuple[np.ndarray, np.ndarray]]:
    pairs = rng.permutation(np.arange(n) % (CLASSES * CLASSES))  # every (local, global) pair equally often
    local, global_ = pairs // CLASSES, pairs % CLASSES
    by_class = [pool[labels[pool] == c] for c in range(CLASSES)]
    small_idx = np.array([rng.choice(by_class[c]) for c in local])
    large_idx = np.array([rng.choice(by_class[c]) for c in global_])
    cell = cell_size(size)
    small = resample(scans[small_idx], cell)  # (n, cell, cell)
    mask = large_masks(scans[large_idx])  # (n, GRID, GRID)
    ink = np.kron(mask, np.ones((cell, cell), dtype=np.float32)) * np.tile(small, (1, GRID, GRID))
    canvas = np.zeros((n, size, size), dtype=np.float32)
    top = (size - GRID * cell) // 2
    canvas[:, top : top + GRID * cell, top : top + GRID * cell] = ink
    background = rng.uniform(0.0, 0.35, (n, 1, 1, 3)).astype(np.float32)
    colour = rng.uniform(0.65, 1.0, (n, 1, 1, 3)).astype(np.float32)
    dark = rng.random(n) < 0.5  # half the images: dark ink on a light ground
    background[dark], colour[dark] = 1 - background[dark], 1 - colour[dark]
    images = background + (colour - background) * canvas[..., None]
    images += NOISE * (2 * rng.random(images.shape, dtype=np.float32) - 1)
    pixels = np.clip(images * 255 + 0.5, 0, 255).astype(np.uint8)
    split = HierarchicalSplit(images=pixels, fine=local.astype(np.int64), coarse=global_.astype(np.int64))
    return split, (small_idx, large_idx)
