"""FFCV for real: .beton round trip, the reflect-crop operation, the three loaders, runs and sweeps
with data.loader=ffcv (in process on real CIFAR-10, and with 2 DDP workers under Ray)."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import Squeeze, ToTensor
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import chisquare

from bilateral.data import DeviceLoader, load_dataset, normalize
from bilateral.data.beton import beton_dir, prepare_betons
from bilateral.data.ffcv_loader import FfcvLoader, ReflectCropFlip, draws
from bilateral.data.loaders import LOADERS, make_loader
from bilateral.data.memory_loader import LoaderOptions
from bilateral.data.torch_loader import TorchLoader
from launch.sweep import main
from ray_jobs import cluster
from tests.conftest import CIFAR10_JPG, REPO, TINY

SEED = 7


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


@pytest.fixture(scope="module")
def parts(data):
    rng = np.random.default_rng(0)  # shuffled subsets: a .beton keeps its part's order
    return {
        "train": ("train", rng.permutation(len(data.train))[:1500]),
        "test": ("test", rng.permutation(len(data.test))[:300]),
    }


@pytest.fixture(scope="module")
def betons(data, parts, tmp_path_factory):
    return prepare_betons(data, parts, tmp_path_factory.mktemp("betons"), workers=2)


def read_sequential(path, image_ops=(), epoch=None, batch_size=256):
    """Every field of a .beton in file order, through plain FFCV (image ops after the decoder)."""
    label = [IntDecoder(), ToTensor(), Squeeze()]
    ops = list(image_ops)
    for op in ops:
        if epoch is not None:
            op.set_epoch(epoch)
    loader = Loader(
        str(path),
        batch_size=batch_size,
        num_workers=torch.get_num_threads(),
        order=OrderOption.SEQUENTIAL,
        drop_last=False,
        pipelines={
            "image": [SimpleRGBImageDecoder(), *ops, ToTensor()],
            "fine": label,
            "coarse": [IntDecoder(), ToTensor(), Squeeze()],
            "index": [IntDecoder(), ToTensor(), Squeeze()],
        },
    )
    batches = [[t.clone() for t in batch] for batch in loader]
    return [torch.cat(column).numpy() for column in zip(*batches, strict=True)]


def test_beton_round_trip_is_exact(data, parts, betons):
    for name, (source, indices) in parts.items():
        split = data.train if source == "train" else data.test
        images, fine, coarse, index = read_sequential(betons[name])
        np.testing.assert_array_equal(index, indices)
        np.testing.assert_array_equal(images, split.images[indices])  # raw mode: bit exact
        np.testing.assert_array_equal(fine, split.fine[indices])
        np.testing.assert_array_equal(coarse, split.coarse[indices])
        np.testing.assert_array_equal(coarse, data.fine_to_coarse[fine])
    assert betons["train"].stat().st_size < 12 * 2**20  # small pages: 1500 images are 4.6 MB of pixels


def test_prepared_files_are_cached_and_keyed_on_the_split(data, parts, betons):
    root = betons["train"].parents[2]
    mtime = betons["train"].stat().st_mtime_ns
    assert prepare_betons(data, parts, root) == betons
    assert betons["train"].stat().st_mtime_ns == mtime  # not rewritten
    manifest = json.loads((betons["train"].parent / "manifest.json").read_text())
    assert manifest["fingerprint"] == data.fingerprint()
    assert manifest["parts"]["train"] == {"split": "train", "samples": 1500}
    other = {**parts, "test": ("test", parts["test"][1][:-1])}
    assert beton_dir(data, other, root) != betons["train"].parent
    assert not list(betons["train"].parent.glob("*.tmp"))


def test_racing_writers_wait_for_each_other(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from bilateral.data import load_dataset
        from bilateral.data.beton import prepare_betons
        data = load_dataset("synthetic")
        paths = prepare_betons(data, {{"train": ("train", np.arange(3000))}}, {str(tmp_path)!r})
        print(paths["train"])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180)[0].strip().splitlines()[-1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs[0] == outs[1]
    data = load_dataset("synthetic")
    images, fine, _, index = read_sequential(outs[0])
    np.testing.assert_array_equal(images, data.train.images[:3000])
    np.testing.assert_array_equal(fine, data.train.fine[:3000])
    assert len(list(tmp_path.rglob("*.beton"))) == 1 and not list(tmp_path.rglob("*.tmp"))


def test_reflect_crop_flip_takes_windows_of_the_reflect_padded_image(data, parts, betons):
    source = data.train.images
    for epoch in (0, 1):
        out, _, _, index = read_sequential(betons["train"], [ReflectCropFlip(SEED)], epoch)
        expected = draws(SEED, epoch, np.arange(len(index)), 4)
        found = []
        for j in range(600):
            padded = np.pad(source[index[j]], ((4, 4), (4, 4), (0, 0)), mode="reflect")
            windows = sliding_window_view(padded, (32, 32, 3))[:, :, 0]  # (9, 9, 32, 32, 3)
            dy, dx, flip = expected[j]
            assert np.array_equal(out[j], windows[dy, dx][:, ::-1] if flip else windows[dy, dx])
            hits = [
                (y, x, f)
                for f in (0, 1)
                for y, x in np.argwhere((windows == (out[j][:, ::-1] if f else out[j])).all((2, 3, 4)))
            ]
            assert hits  # in bounds: some window (or its mirror image) of the padded image
            if len(hits) == 1:
                found.append(hits[0])
        found = np.array(found)
        assert len(found) > 550 and abs(found[:, 2].mean() - 0.5) < 0.07  # flip rate
        for axis in (0, 1):  # offsets uniform over 0..8
            counts = np.bincount(found[:, axis], minlength=9)
            assert len(counts) == 9 and chisquare(counts).pvalue > 1e-3
        if epoch == 0:
            first = out
    assert (first != out).any((1, 2, 3)).mean() > 0.9  # another epoch, other crops


def test_ffcv_train_loader_statistics_and_determinism(data, betons):
    mean, std = data.mean_std()
    loader = FfcvLoader(betons["train"], LoaderOptions(256, "cpu", mean, std, train=True, seed=SEED))
    assert len(loader) == 1500 // 256 and loader.num_samples == 1500 and loader.batch_size == 256
    loader.set_epoch(1)
    batches = list(loader)
    x = torch.cat([b[0] for b in batches])
    fine, coarse = torch.cat([b[1] for b in batches]), torch.cat([b[2] for b in batches])
    assert x.shape == (1280, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    assert fine.dtype == coarse.dtype == torch.int64
    assert torch.equal(coarse, torch.from_numpy(data.fine_to_coarse)[fine])
    per_channel = x.transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(1).abs().max() < 0.05 and (per_channel.std(1) - 1).abs().max() < 0.05
    again = next(iter(loader))  # a pure function of (seed, epoch); yielded batches are copies
    assert all(torch.equal(a, b) for a, b in zip(again, batches[0], strict=True))
    loader.set_epoch(2)
    assert not torch.equal(next(iter(loader))[1], batches[0][1])  # another order
    other = FfcvLoader(betons["train"], LoaderOptions(256, "cpu", mean, std, train=True, seed=SEED + 1))
    other.set_epoch(1)
    assert not torch.equal(next(iter(other))[0], batches[0][0])


def test_the_three_loaders_share_one_interface(data, parts, betons):
    indices = parts["train"][1]
    mean, std = data.mean_std()
    expected = normalize(
        torch.from_numpy(data.train.images[indices]).permute(0, 3, 1, 2), *map(torch.tensor, (mean, std))
    )
    for kind in LOADERS:
        common = dict(beton=betons["train"], workers=2)
        evaluate = make_loader(
            kind, data.train, indices, LoaderOptions(512, "cpu", mean, std, False, SEED), **common
        )
        assert len(evaluate) == 3 and evaluate.num_samples == 1500 and evaluate.batch_size == 512
        x, fine, coarse = (torch.cat(column) for column in zip(*evaluate, strict=True))
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)  # the same samples, in order
        assert torch.equal(fine, torch.from_numpy(data.train.fine[indices]))
        assert torch.equal(coarse, torch.from_numpy(data.train.coarse[indices]))
        opts = LoaderOptions(256, "cpu", mean, std, True, SEED, channels_last=True)
        train = make_loader(kind, data.train, indices, opts, **common)
        train.set_epoch(0)
        shapes = [(tuple(x.shape), x.dtype, f.dtype) for x, f, _ in train]
        assert len(train) == 5 and shapes == [((256, 3, 32, 32), torch.float32, torch.int64)] * 5
        assert next(iter(train))[0].is_contiguous(memory_format=torch.channels_last)
        assert not getattr(train, "per_rank", False)
        reseeded, fresh = (
            train.with_seed(SEED + 1),
            make_loader(kind, data.train, indices, replace(opts, seed=SEED + 1), **common),
        )
        for loader in (reseeded, fresh):
            loader.set_epoch(0)
        assert torch.equal(next(iter(reseeded))[1], next(iter(fresh))[1])  # a fused member's own stream
        assert not torch.equal(next(iter(reseeded))[1], next(iter(train))[1])


def test_torch_loader_is_seeded_per_sample_and_shards_like_the_memory_loader(data):
    mean, std = data.mean_std()
    idx = np.arange(1000)
    opts = LoaderOptions(100, "cpu", mean, std, True, SEED)
    one = [TorchLoader(data.train, idx, opts, workers=w) for w in (0, 2)]
    for loader in one:
        loader.set_epoch(3)
    state = torch.get_rng_state()
    assert torch.equal(next(iter(one[0]))[0], next(iter(one[1]))[0])  # whatever the workers
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    memory = DeviceLoader(data.train, idx, opts)
    memory.set_epoch(3)
    fine = next(iter(memory))[1]
    shares = [TorchLoader(data.train, idx, opts, workers=0, rank=r, world=2) for r in (0, 1)]
    for share in shares:
        share.set_epoch(3)
        assert share.per_rank and share.batch_size == 100 and len(share) == 10
    assert torch.equal(torch.cat([next(iter(s))[1] for s in shares]), fine)


def test_ffcv_distributed_mode_gives_each_rank_its_own_samples(data, betons, monkeypatch):
    mean, std = data.mean_std()
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a: 2)
    labels = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, r=rank: r)
        loader = FfcvLoader(
            betons["train"], LoaderOptions(300, "cpu", mean, std, True, SEED), distributed=True
        )
        assert loader.per_rank and loader.batch_size == 300 and len(loader) == 5  # 750 samples a rank
        loader.set_epoch(0)
        batches = list(loader)
        assert {len(b[0]) for b in batches} == {150}
        labels.append(torch.cat([b[1] for b in batches]))
    every = np.sort(data.train.fine[read_sequential(betons["train"])[3]])
    np.testing.assert_array_equal(np.sort(torch.cat(labels).numpy()), every)  # together: each once
    assert not torch.equal(labels[0], labels[1][: len(labels[0])])


def cifar10_sweep(out, *args):
    return [
        "--data", f"cifar10-hier:{CIFAR10_JPG}", "--loader", "ffcv", "--out", str(out), "--name", "t",
        "--models", "unilateral", "--seeds", "0", *TINY, f"data_dir={REPO / 'data'}", *args,
    ]  # fmt: skip


def test_local_sweep_with_ffcv_on_real_cifar10(tmp_path):
    assert main(cifar10_sweep(tmp_path, "--device", "cpu")) == 0
    summary = pd.read_csv(tmp_path / "t" / "summary.csv")
    assert summary.loc[0, "model"] == "unilateral" and 0.5 < summary.loc[0, "coarse_acc_mean"] <= 1
    (record,) = (tmp_path / "t" / "runs").glob("*/record.json")
    assert json.loads(record.read_text())["spec"]["data"]["loader"] == "ffcv"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("ray") / "cluster.json"
    info = cluster.start(num_cpus=4, state=state)  # 4 logical CPUs on 2 cores: driver + 2 DDP workers
    yield info
    cluster.stop(state)
    assert not cluster.cluster_pids(info["temp_dir"])


def test_ray_ddp_sweep_with_ffcv_on_real_cifar10(tmp_path, ray_cluster):
    data_dir = tmp_path / "data"  # no .beton files yet: the two DDP workers race to write them
    data_dir.mkdir()
    (data_dir / "cache").symlink_to(REPO / "data" / "cache")  # the decoded images
    args = cifar10_sweep(tmp_path, "--cluster", "ray", "--device", "cpu", "--address", ray_cluster["address"])
    args += ["--workers-per-run", "2", "train.epochs=1", f"data_dir={data_dir}"]
    env = {**os.environ, **cluster.ENV, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "launch" / "sweep.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = (tmp_path / "t" / "runs").glob("*/record.json")
    record = json.loads(record.read_text())
    assert record["workers"] == 2 and record["spec"]["data"]["loader"] == "ffcv"
    assert 0.5 < record["test_acc_coarse"] <= 1
    (manifest,) = (data_dir / "ffcv").glob("*/manifest.json")
    assert json.loads(manifest.read_text())["parts"]["train"]["samples"] == 1000
    assert not list((data_dir / "ffcv").rglob("*.tmp"))
