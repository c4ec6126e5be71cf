"""The navon source: real digit scans, independent balanced labels, disjoint glyphs, any size."""

import numpy as np
import pytest
import torch

from bilateral.data import LoaderOptions, load_dataset
from bilateral.data.augment import augment_batch
from bilateral.data.loaders import make_loader
from bilateral.data.navon import GRID, cell_size, digit_scans, glyph_pools, large_masks, navon_with_sources
from bilateral.data.sources import class_counts
from bilateral.errors import ConfigError
from bilateral.plan import build_plan
from bilateral.run_data import make_splits
from bilateral.store import SweepStore
from bilateral.training import run
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def navon32():
    return navon_with_sources(32, seed=0, num_train=2000, num_val=500, num_test=600)


def test_glyphs_are_real_scans_split_disjointly_by_the_seed(navon32):
    scans, labels = digit_scans()
    assert scans.shape == (1797, 8, 8) and sorted(np.unique(labels)) == list(range(10))
    pools = glyph_pools(labels, seed=0)
    assert [len(p) for p in pools] == [989, 269, 539] and len(np.unique(np.concatenate(pools))) == 1797
    data, sources = navon32
    train_pool, val_pool, test_pool = (set(p) for p in pools)
    small, large = sources["train"]
    for images, pool in ((~data.val_pool, train_pool), (data.val_pool, val_pool)):
        assert set(small[images]) <= pool and set(large[images]) <= pool
    assert set(sources["test"][0]) <= test_pool and set(sources["test"][1]) <= test_pool
    assert not np.array_equal(glyph_pools(labels, seed=1)[2], pools[2])


def test_no_scan_is_in_both_the_training_and_the_validation_images(navon32):
    data, sources = navon32
    assert len(data.train) == 2500 and data.val_pool.sum() == 500
    spec = build_plan(tiny_config("data.source=navon", "plan.models=[unilateral]")).runs[0]
    splits = make_splits(data, spec)  # data.val_size=200, data.train_subset=1000
    assert (len(splits.train), len(splits.val)) == (1000, 200)
    scans = [np.union1d(*(s[part] for s in sources["train"])) for part in (splits.train, splits.val)]
    assert np.intersect1d(*scans).size == 0 and min(len(s) for s in scans) > 100
    assert np.bincount(data.train.fine[splits.val]).tolist() == [20] * 10
    with pytest.raises(ConfigError, match="at most 500"):
        make_splits(data, build_plan(tiny_config("data.source=navon", "data.val_size=501")).runs[0])


def test_every_image_is_its_large_digit_made_of_its_small_digit(navon32):
    data, sources = navon32
    scans, labels = digit_scans()
    small, large = sources["train"]
    assert np.array_equal(labels[small], data.train.fine) and np.array_equal(labels[large], data.train.coarse)
    cell = cell_size(32)
    top = (32 - GRID * cell) // 2
    for i in range(20):
        gray = data.train.images[i].astype(np.float32).mean(axis=2)
        mask = large_masks(scans[large[i : i + 1]])[0]
        cells = gray[top : top + GRID * cell, top : top + GRID * cell].reshape(GRID, cell, GRID, cell)
        contrast = cells.std(axis=(1, 3))  # a cell holding a glyph has ink and ground in it
        assert contrast[mask].min() > contrast[~mask].max()
        # the copies in the cells are the same glyph: each correlates with their mean
        copies = cells.transpose(0, 2, 1, 3)[mask].reshape(mask.sum(), -1)
        mean = copies.mean(axis=0)
        assert min(np.corrcoef(c, mean)[0, 1] for c in copies) > 0.8


def test_labels_are_balanced_and_independent(navon32):
    data, _ = navon32
    for split in (data.train, data.test):
        pairs = np.bincount(split.fine * 10 + split.coarse, minlength=100)
        assert pairs.max() - pairs.min() <= 1  # every (local, global) pair equally often
    assert data.fine_to_coarse is None and not data.hierarchical and not data.flip_invariant
    data.validate()
    assert class_counts("navon:64") == (10, 10)


def test_deterministic_per_seed_and_any_size():
    a, _ = navon_with_sources(32, seed=3, num_train=200, num_val=100, num_test=100)
    b, _ = navon_with_sources(32, seed=3, num_train=200, num_val=100, num_test=100)
    c, _ = navon_with_sources(32, seed=4, num_train=200, num_val=100, num_test=100)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    big, _ = navon_with_sources(64, seed=3, num_train=200, num_val=100, num_test=100)
    assert big.train.images.shape == (300, 64, 64, 3) and big.image_size == 64
    for split in ("train", "test"):  # the same labels at every size
        for level in ("fine", "coarse"):
            assert np.array_equal(getattr(getattr(big, split), level), getattr(getattr(a, split), level))
    with pytest.raises(ConfigError, match="navon image size 8 is out of range"):
        load_dataset("navon:8")


def test_training_crops_without_mirroring_and_other_loaders_refuse():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(0), padding=0, flip=False), x)
    data, _ = navon_with_sources(32, num_train=200, num_val=100, num_test=100)
    opts = LoaderOptions(50, "cpu", (0.5,) * 3, (0.25,) * 3, train=True, flip=False)
    with pytest.raises(ConfigError, match="data.loader=torch crops and flips 32x32 images.*memory"):
        make_loader("torch", data.train, None, opts)


def test_a_run_on_independent_labels_records_them_and_skips_coarse_from_fine(tmp_path):
    cfg = tiny_config("data.source=navon", "train.epochs=1", "plan.models=[bilateral-unspecialised]")
    (spec,) = build_plan(cfg).runs
    record = run(spec, SweepStore(tmp_path), device="cpu", data_dir=cfg.data_dir)
    assert record["labels"] == "independent" and record["image_size"] == 32
    assert record["augment_flip"] is False
    assert "test_acc_coarse_from_fine" not in record
    assert 0 <= record["test_acc_fine"] <= 1 and 0 <= record["test_acc_coarse"] <= 1
