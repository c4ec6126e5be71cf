"""What a run sees: its dataset (less any held-out classes), decoded once per process, and its
train / validation / test splits.

Analysis, evaluation and data preparation use these too, without entering training.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from bilateral.config import DataConfig
from bilateral.data import HierarchicalDataset, load_dataset, stratified_subset, validation_split
from bilateral.data.holdout import without_held_out
from bilateral.errors import ConfigError
from bilateral.plan import RunSpec


@dataclass
class Splits:
    """Indices into the dataset's train and test arrays; val is held out of train."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def describe(self, spec: RunSpec) -> dict:
        digest = hashlib.sha256(self.val.tobytes()).hexdigest()[:16]
        return {
            "split_seed": spec.data.split_seed,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "val_indices_sha256": digest,
        }


@functools.lru_cache(maxsize=4)
def load_data(source: str, data_dir: str, verify_md5: bool) -> HierarchicalDataset:
    """Once per process: a local sweep decodes its dataset once for all its runs."""
    return load_dataset(source, cache_dir=data_dir, verify_md5=verify_md5)


def run_data(cfg: DataConfig, data_dir: str) -> HierarchicalDataset:
    """The data a run trains, validates and is tested on: its source less any held-out classes."""
    return _without_held_out(cfg.source, data_dir, cfg.verify_md5, cfg.holdout_per_coarse, cfg.split_seed)


@functools.lru_cache(maxsize=4)
def _without_held_out(source: str, data_dir: str, verify_md5: bool, per_coarse: int, seed: int):
    return without_held_out(load_data(source, data_dir, verify_md5), per_coarse, seed)


def make_splits(data: HierarchicalDataset, spec: RunSpec) -> Splits:
    cfg = spec.data
    train, val = validation_split(data.train.fine, cfg.val_size, cfg.split_seed, data.val_pool)
    if cfg.train_subset:
        train = train[stratified_subset(data.train.fine[train], cfg.train_subset, cfg.split_seed)]
    test = np.arange(len(data.test))
    if cfg.test_subset:
        test = stratified_subset(data.test.fine, cfg.test_subset, cfg.split_seed)
    return Splits(train, val, test)


def check_batches(splits: Splits, spec: RunSpec) -> None:
    """Refuse, before training, a run whose training split holds no full batch: it would train on
    one short batch an epoch, which is not the run its config describes."""
    if spec.trains and len(splits.train) < spec.train.batch_size:
        subset = f", data.train_subset={spec.data.train_subset}" if spec.data.train_subset else ""
        raise ConfigError(
            f"train.batch_size={spec.train.batch_size} is larger than the {len(splits.train)} training "
            f"images of {spec.data.source} (after data.val_size={spec.data.val_size}{subset}), so no "
            f"epoch holds a full batch. Fix: set train.batch_size to at most {len(splits.train)}, or "
            "train on more images"
        )
