"""Tests of bilateral.data: real CIFAR-10 archive, error paths, splits, augmentation, loader."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bilateral.data import (
    DeviceLoader,
    HierarchicalDataset,
    HierarchicalSplit,
    LoaderOptions,
    augment_batch,
    fine_to_coarse_from_map,
    folders,
    load_dataset,
    normalize,
    stratified_subset,
    validation_split,
)
from bilateral.data.holdout import split_held_out
from bilateral.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = REPO.parent / "shared" / "data" / "cifar10-jpg"
CACHE = REPO / "data"  # shared by test runs, so the 60,000 JPEGs are decoded only once


@pytest.fixture(scope="module")
def cifar10():
    return load_dataset(f"cifar10-hier:{CIFAR10}", cache_dir=CACHE)


def _coarse_of(ds: HierarchicalDataset) -> dict[str, str]:
    return {fine: ds.coarse_names[ds.fine_to_coarse[i]] for i, fine in enumerate(ds.fine_names)}


# --- real CIFAR-10 -------------------------------------------------------------------------


def test_cifar10_hier_loads_the_real_archive(cifar10):
    assert (len(cifar10.train), len(cifar10.test)) == (50_000, 10_000)
    assert (cifar10.num_fine, cifar10.num_coarse) == (10, 2)
    assert cifar10.fine_names[:4] == ["airplane", "automobile", "bird", "cat"]
    coarse_of = _coarse_of(cifar10)
    assert coarse_of["airplane"] == "vehicle" and coarse_of["cat"] == "animal"
    assert cifar10.train.images.dtype == np.uint8 and cifar10.train.images.shape[1:] == (32, 32, 3)
    assert not np.array_equal(cifar10.train.images[0], cifar10.train.images[1])
    assert cifar10.train.images[:100].std() > 20
    assert np.bincount(cifar10.train.fine).tolist() == [5000] * 10
    assert np.bincount(cifar10.test.coarse).tolist() == [4000, 6000]
    mean, std = cifar10.mean_std()
    assert np.allclose(mean, (0.491, 0.482, 0.447), atol=0.01) and 0.2 < min(std) < max(std) < 0.3


def test_cifar10_hier4_uses_the_same_images_with_four_coarse_classes(cifar10):
    hier4 = load_dataset(f"cifar10-hier4:{CIFAR10 / 'cifar10-jpg.tar.gz'}", cache_dir=CACHE)
    assert (len(hier4.train), len(hier4.test), hier4.num_coarse) == (50_000, 10_000, 4)
    coarse_of = _coarse_of(hier4)
    assert coarse_of["airplane"] == coarse_of["ship"] == "air_sea_vehicle"
    assert coarse_of["cat"] == "mammal" and coarse_of["bird"] == "other_animal"
    assert np.array_equal(hier4.test.images, cifar10.test.images)
    assert hier4.fingerprint() != cifar10.fingerprint()


def test_second_cifar10_load_reads_the_cache(cifar10, monkeypatch):
    monkeypatch.setattr(folders, "_decode", lambda source: pytest.fail("decoded again"))
    again = load_dataset(f"cifar10-hier:{CIFAR10}", cache_dir=CACHE)
    assert again.fingerprint() == cifar10.fingerprint()


# --- image folders and archives --------------------------------------------------------------


def _image(seed: int, size: int = 32) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _tree(root: Path, classes=("cat", "dog", "car"), per_class: int = 3) -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                _image(100 * c + i).save(root / split / name / f"{i}.png")
    return root


def _tar(tree: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="mini")
    return archive


def _coarse_map(path: Path) -> Path:
    path.write_text(json.dumps({"animal": ["cat", "dog"], "vehicle": ["car"]}))
    return path


def test_folder_tree_and_its_archive_decode_identically(tmp_path):
    tree = _tree(tmp_path / "mini")
    cmap = _coarse_map(tmp_path / "map.json")
    from_tree = load_dataset(f"folder:{tree}:{cmap}", cache_dir=tmp_path / "c")
    archive = _tar(tree, tmp_path / "mini.tar.gz")
    from_tar = load_dataset(f"folder:{archive}:{cmap}", cache_dir=tmp_path / "c")
    assert from_tree.fine_names == ["car", "cat", "dog"] and from_tree.coarse_names == ["animal", "vehicle"]
    assert from_tree.fine_to_coarse.tolist() == [1, 0, 0]
    assert np.array_equal(from_tree.train.images, from_tar.train.images)
    assert np.array_equal(from_tree.test.coarse, from_tar.test.coarse)
    assert np.array_equal(from_tree.train.images[3], np.asarray(_image(0)))  # cat/0.png, after car/*
    assert len(list((tmp_path / "c" / "cache").glob("*.npz"))) == 2


def test_truncated_archive_names_the_file(tmp_path):
    archive = _tar(_tree(tmp_path / "mini"), tmp_path / "mini.tar.gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="mini.tar.gz.*truncated or corrupt.*Fix"):
        load_dataset(f"folder:{archive}:{_coarse_map(tmp_path / 'map.json')}", cache_dir=tmp_path)


def test_corrupt_jpg_is_named_in_a_tree_and_in_an_archive(tmp_path):
    tree = _tree(tmp_path / "mini")
    (tree / "test" / "dog" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cmap = _coarse_map(tmp_path / "map.json")
    with pytest.raises(DataError, match=r"dog/bad\.jpg.*cannot decode"):
        load_dataset(f"folder:{tree}:{cmap}", cache_dir=tmp_path)
    archive = _tar(tree, tmp_path / "mini.tar.gz")
    with pytest.raises(DataError, match=r"mini\.tar\.gz \(member mini/test/dog/bad\.jpg\)"):
        load_dataset(f"folder:{archive}:{cmap}", cache_dir=tmp_path)


def test_image_of_the_wrong_size_is_rejected(tmp_path):
    tree = _tree(tmp_path / "mini")
    _image(7, size=64).save(tree / "train" / "car" / "big.png")
    with pytest.raises(DataError, match=r"car/big\.png: image is 64x64, expected 32x32"):
        load_dataset(f"folder:{tree}:{_coarse_map(tmp_path / 'map.json')}", cache_dir=tmp_path)


def test_missing_path_split_or_class(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such file or folder; expected cifar10-jpg.tar.gz"):
        load_dataset(f"cifar10-hier:{tmp_path / 'nowhere'}", cache_dir=tmp_path)
    tree = _tree(tmp_path / "mini")
    cmap = _coarse_map(tmp_path / "map.json")
    for image in (tree / "test" / "car").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"classes \['car'\] are missing from one of train/ and test/"):
        load_dataset(f"folder:{tree}:{cmap}", cache_dir=tmp_path)
    for folder in (tree / "test").iterdir():
        for image in folder.iterdir():
            image.unlink()
        folder.rmdir()
    (tree / "test").rmdir()
    with pytest.raises(DataError, match="split folder test/ is missing"):
        load_dataset(f"folder:{tree}:{cmap}", cache_dir=tmp_path)


def test_corrupt_cache_is_deleted_and_rebuilt_with_a_warning(tmp_path):
    spec = f"folder:{_tree(tmp_path / 'mini')}:{_coarse_map(tmp_path / 'map.json')}"
    first = load_dataset(spec, cache_dir=tmp_path)
    (cache_file,) = (tmp_path / "cache").glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:500])
    with pytest.warns(UserWarning, match="cache file is corrupt"):
        second = load_dataset(spec, cache_dir=tmp_path)
    assert second.fingerprint() == first.fingerprint()
    assert np.load(cache_file)["train_images"].shape == (9, 32, 32, 3)


def test_coarse_map_errors():
    fine = ["cat", "dog", "car"]
    f2c, names = fine_to_coarse_from_map({"vehicle": ["car"], "animal": ["dog", "cat"]}, fine)
    assert f2c.tolist() == [1, 1, 0] and names == ["vehicle", "animal"]
    with pytest.raises(DataError, match="fine class 'cat' is listed under 'animal' and 'pet'"):
        fine_to_coarse_from_map({"animal": ["cat", "dog"], "pet": ["cat"], "vehicle": ["car"]}, fine)
    with pytest.raises(DataError, match=r"fine classes \['car'\] are in no coarse class"):
        fine_to_coarse_from_map({"animal": ["cat", "dog"]}, fine)
    with pytest.raises(DataError, match=r"fine classes \['bus'\] do not exist"):
        fine_to_coarse_from_map({"animal": ["cat", "dog"], "vehicle": ["car", "bus"]}, fine)


def test_unknown_spec_lists_the_known_ones():
    with pytest.raises(
        ConfigError, match=r"(?s)unknown dataset spec 'imagenet'.*synthetic.*cifar10-hier4:<path>.*folder:"
    ):
        load_dataset("imagenet")
    with pytest.raises(
        ConfigError, match=r"'cifar10-hier' is malformed. Fix: write it as cifar10-hier:<path>"
    ):
        load_dataset("cifar10-hier")


# --- CIFAR-100 from a local folder ---------------------------------------------------------

FINE_TO_COARSE = [0, 0, 0, 1, 1, 1]


def _fake_cifar100(root: Path, break_map: bool = False) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    meta = {"fine_label_names": [f"f{i}" for i in range(6)], "coarse_label_names": ["c0", "c1"]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    for name, n in (("train", 24), ("test", 12)):
        fine = np.arange(n) % 6
        coarse = np.array(FINE_TO_COARSE)[fine]
        if break_map:
            coarse[0] = 1 - coarse[0]
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": fine.tolist(),
            "coarse_labels": coarse.tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    return folder


def test_cifar100_non_official_copy_fails_md5_check(tmp_path):
    folder = _fake_cifar100(tmp_path)
    with pytest.raises(DataError, match=r"(?s)train: md5 .* not the official copy .*verify_md5=false"):
        load_dataset(f"cifar100:{folder}", cache_dir=tmp_path)


def test_cifar100_reads_both_label_levels(tmp_path):
    folder = _fake_cifar100(tmp_path)
    ds = load_dataset(f"cifar100:{tmp_path}", cache_dir=tmp_path, verify_md5=False)
    assert (len(ds.train), len(ds.test), ds.num_fine, ds.num_coarse) == (24, 12, 6, 2)
    assert ds.fine_to_coarse.tolist() == FINE_TO_COARSE
    assert ds.coarse_names == ["c0", "c1"] and ds.fine_names[5] == "f5"
    assert ds.train.fine.tolist() == (np.arange(24) % 6).tolist()
    assert ds.test.coarse.tolist() == np.array(FINE_TO_COARSE)[np.arange(12) % 6].tolist()
    raw = pickle.loads((folder / "train").read_bytes())["data"][1]
    assert ds.train.images[1, 0, 2].tolist() == [raw[2], raw[1024 + 2], raw[2048 + 2]]  # CHW -> HWC
    # without a path, a copy already in cache_dir is read instead of downloaded
    cached = load_dataset("cifar100", cache_dir=tmp_path, verify_md5=False)
    assert cached.fingerprint() == ds.fingerprint()


def test_cifar100_labels_that_break_the_map_are_rejected(tmp_path):
    _fake_cifar100(tmp_path, break_map=True)
    with pytest.raises(DataError, match="coarse labels are not a function of the fine labels"):
        load_dataset(f"cifar100:{tmp_path}", cache_dir=tmp_path, verify_md5=False)


def test_cifar100_missing_folder(tmp_path):
    with pytest.raises(DataError, match="train, test, meta missing; expected a cifar-100-python"):
        load_dataset(f"cifar100:{tmp_path}", cache_dir=tmp_path)


# --- synthetic -------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_consistent():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert a.fingerprint() == b.fingerprint()
    assert (len(a.train), len(a.test), a.num_fine, a.num_coarse) == (6000, 2000, 20, 4)
    assert np.bincount(a.train.fine).tolist() == [300] * 20
    a.validate()
    a.test.coarse[0] = (a.test.coarse[0] + 1) % 4
    with pytest.raises(DataError, match="disagrees with the fine -> coarse map"):
        a.validate()


# --- splits ----------------------------------------------------------------------------------


def test_validation_split_is_disjoint_stratified_and_seeded():
    fine = np.random.default_rng(0).integers(0, 7, 1000)
    train, val = validation_split(fine, 150, seed=1)
    assert len(val) == 150 and np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    assert np.all(np.diff(val) > 0) and train.dtype == val.dtype == np.int64
    expected = np.bincount(fine) * 150 / 1000
    assert np.all(np.abs(np.bincount(fine[val], minlength=7) - expected) <= 1)
    assert np.array_equal(validation_split(fine, 150, seed=1)[1], val)
    assert not np.array_equal(validation_split(fine, 150, seed=2)[1], val)
    all_train, empty = validation_split(fine, 0, seed=1)
    assert len(all_train) == 1000 and len(empty) == 0
    with pytest.raises(ConfigError, match="val_size"):
        validation_split(fine, 1000, seed=1)


def test_a_declared_pool_gives_the_validation_images_and_none_of_them_trains():
    fine = np.tile(np.arange(5), 40)
    pool = np.arange(200) >= 150
    train, val = validation_split(fine, 20, seed=1, pool=pool)
    assert np.array_equal(train, np.arange(150))
    assert len(val) == 20 and val.min() >= 150 and np.bincount(fine[val]).tolist() == [4] * 5
    assert not np.array_equal(validation_split(fine, 20, seed=2, pool=pool)[1], val)
    assert np.array_equal(validation_split(fine, 50, seed=1, pool=pool)[1], np.arange(150, 200))
    with pytest.raises(ConfigError, match="more than the 50 images the data reserves.*at most 50"):
        validation_split(fine, 51, seed=1, pool=pool)


def test_data_without_a_pool_keeps_its_fingerprint_and_validation_split():
    data = load_dataset("synthetic")  # pinned values of before val_pool existed: run data unchanged
    assert data.val_pool is None and data.fingerprint() == "39f3900eb59e0e1c"
    _, val = validation_split(data.train.fine, 1000, seed=0)
    assert hashlib.sha256(val.tobytes()).hexdigest()[:16] == "01d3dfbb335a2a11"


def test_holding_classes_out_keeps_the_declared_pool_on_its_images():
    source = load_dataset("synthetic")
    source = dataclasses.replace(source, val_pool=source.train.images[:, 0, 0, 0] % 3 == 0)
    kept, held = split_held_out(source, 1, seed=0)
    for part in (kept, held):
        part.validate()
        reserved = {img.tobytes() for img in source.train.images[source.val_pool]}
        assert [img.tobytes() in reserved for img in part.train.images] == part.val_pool.tolist()
    with pytest.raises(DataError, match="val_pool has dtype bool and shape \\(5,\\)"):
        dataclasses.replace(source, val_pool=np.ones(5, dtype=bool)).validate()


def test_stratified_subset():
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    subset = stratified_subset(labels, 100, seed=0)
    assert np.bincount(labels[subset]).tolist() == [10, 20, 30, 40]
    assert np.all(np.diff(subset) > 0)
    assert len(stratified_subset(labels, 5000, seed=0)) == 1000


# --- augmentation ----------------------------------------------------------------------------


def test_augment_batch_crops_windows_of_the_reflect_padded_image():
    images = torch.rand(16, 3, 32, 32)
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    padded = F.pad(images, (4, 4, 4, 4), mode="reflect")
    for b in range(len(images)):
        windows = [
            w
            for dy in range(9)
            for dx in range(9)
            for w in (padded[b, :, dy : dy + 32, dx : dx + 32],)
            for w in (w, w.flip(-1))
        ]
        assert any(torch.equal(out[b], w) for w in windows)
    assert not torch.equal(out, images)


def test_augment_batch_flips_half_and_is_seeded():
    images = torch.rand(4000, 1, 6, 6)
    out = augment_batch(images, torch.Generator().manual_seed(0), padding=0)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 0.46 < flipped.float().mean().item() < 0.54
    again = augment_batch(images, torch.Generator().manual_seed(0), padding=0)
    other = augment_batch(images, torch.Generator().manual_seed(1), padding=0)
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_normalize():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    mean, std = torch.tensor([0.5, 0.0, 1.0]), torch.tensor([0.5, 1.0, 2.0])
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32
    assert out[0, :, 0].tolist() == [[-1.0, 1.0], [0.0, 1.0], [-0.5, 0.0]]


# --- DeviceLoader ----------------------------------------------------------------------------


def _split(n: int = 100) -> HierarchicalSplit:
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    ids = np.arange(n, dtype=np.int64)  # fine label = sample id, to observe the order
    return HierarchicalSplit(images=images, fine=ids, coarse=ids % 2)


def _loader(split: HierarchicalSplit, indices: np.ndarray | None = None, **kwargs) -> DeviceLoader:
    args = dict(batch_size=32, device="cpu", mean=(0.5,) * 3, std=(0.25,) * 3, train=True, seed=3)
    return DeviceLoader(split, indices, LoaderOptions(**{**args, **kwargs}))


def _epoch(loader: DeviceLoader, epoch: int) -> list:
    loader.set_epoch(epoch)
    return list(loader)


def test_train_loader_is_a_function_of_seed_and_epoch():
    split = _split()
    first, second = _epoch(_loader(split), 5), _epoch(_loader(split), 5)
    assert len(first) == 3 and all(len(fine) == 32 for _, fine, _ in first)
    for (x1, f1, c1), (x2, f2, c2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(f1, f2) and torch.equal(c1, c2)
        assert torch.equal(c1, f1 % 2)
    order = torch.cat([fine for _, fine, _ in first])
    assert len(set(order.tolist())) == 96
    other_epoch = torch.cat([fine for _, fine, _ in _epoch(_loader(split), 6)])
    other_seed = torch.cat([fine for _, fine, _ in _epoch(_loader(split, seed=4), 5)])
    assert not torch.equal(order, other_epoch) and not torch.equal(order, other_seed)
    assert len(_loader(split, batch_size=500)) == 1  # fewer samples than a batch: one short batch


def test_reseeded_loader_equals_a_new_one_and_shares_its_tensors():
    split = _split()
    base = _loader(split, seed=3)
    reseeded, fresh = base.with_seed(4), _loader(split, seed=4)
    for (x1, f1, _), (x2, f2, _) in zip(_epoch(reseeded, 5), _epoch(fresh, 5), strict=True):
        assert torch.equal(x1, x2) and torch.equal(f1, f2)
    assert reseeded.images.data_ptr() == base.images.data_ptr() and base.seed == 3


def test_eval_loader_covers_every_index_once_in_order():
    split = _split()
    indices = np.arange(1, 100, 3)
    loader = _loader(split, indices=indices, batch_size=8, train=False, channels_last=True)
    batches = _epoch(loader, 0)
    assert len(loader) == len(batches) == 5 and loader.num_samples == 33
    assert [len(f) for _, f, _ in batches] == [8, 8, 8, 8, 1]
    assert torch.cat([f for _, f, _ in batches]).tolist() == indices.tolist()
    x = batches[0][0]
    assert x.shape == (8, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    expected = (torch.from_numpy(split.images[1]).permute(2, 0, 1) / 255 - 0.5) / 0.25
    assert torch.allclose(x[0], expected)
