"""Stratified index selection: a held-out validation split, and small subsets for CPU runs."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from bilateral.errors import ConfigError


def validation_split(
    fine: np.ndarray, val_size: int, seed: int, pool: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, val_indices): sorted, disjoint, stratified by fine label, fixed by seed.

    Checkpoints are selected on the validation part, so the test split is used once, at the end.
    pool (HierarchicalDataset.val_pool) reserves images for validation: val_size of them are drawn
    and none of them trains, so validation shares no source with training.
    """
    if pool is not None:
        return _from_pool(fine, val_size, seed, pool)
    n = len(fine)
    if val_size == 0:
        return np.arange(n, dtype=np.int64), np.empty(0, dtype=np.int64)
    if not 0 < val_size < n:
        raise ConfigError(
            f"validation size {val_size} must be between 0 and {n - 1} (the train split has {n} "
            "images). Fix: lower data.val_size."
        )
    return _stratified(n, fine, test_size=val_size, seed=seed, what="data.val_size")


def _from_pool(fine: np.ndarray, val_size: int, seed: int, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reserved = np.flatnonzero(pool)
    if not 0 <= val_size <= len(reserved):
        raise ConfigError(
            f"validation size {val_size} is more than the {len(reserved)} images the data reserves for "
            f"validation (drawn from sources no training image uses). Fix: set data.val_size to at most "
            f"{len(reserved)}."
        )
    val = reserved[stratified_subset(fine[reserved], val_size, seed)] if val_size else reserved[:0]
    return np.flatnonzero(~pool), val


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` samples with the class proportions of `labels` (all if size >= N)."""
    n = len(labels)
    if size >= n:
        return np.arange(n, dtype=np.int64)
    if size <= 0:
        raise ConfigError(f"subset size {size} must be positive. Fix: raise it or drop the subset.")
    subset, _ = _stratified(n, labels, test_size=n - size, seed=seed, what="the subset size")
    return subset


def _stratified(
    n: int, labels: np.ndarray, test_size: int, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    try:
        first, second = train_test_split(
            np.arange(n, dtype=np.int64), test_size=test_size, stratify=labels, random_state=seed
        )
    except ValueError as exc:  # too few samples for some class, or fewer than one per class
        raise ConfigError(
            f"cannot draw a stratified split of {n} samples ({exc}). "
            f"Fix: make {what} at least the number of classes and leave each class 2+ samples."
        ) from exc
    return np.sort(first), np.sort(second)
