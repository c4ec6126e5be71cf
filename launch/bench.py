"""Benchmarks, each printing ratios against a plain PyTorch baseline measured in the same process.

    python launch/bench.py loaders                                            # synthetic data
    python launch/bench.py loaders --data cifar10-hier:../shared/data/cifar10-jpg
    python launch/bench.py loaders --data cifar100 --device cuda --batch-size 512 --workers 8

loaders: images/s of each data loader (data.loader = torch | memory | ffcv) over the same training
images with the same augmentation (reflect-pad-4 random crop, horizontal flip, normalisation),
batches delivered on --device: one warm-up epoch (FFCV JIT-compiles its pipeline, DataLoader
starts its workers), then --epochs timed epochs. The ratio column is against the torch DataLoader.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch
from tabulate import tabulate

from bilateral.data.beton import prepare_betons
from bilateral.data.loaders import LOADERS, make_loader
from bilateral.data.split import stratified_subset
from bilateral.train import load_data, resolve_device


def epoch_seconds(loader, epoch: int, device: torch.device) -> tuple[float, int]:
    loader.set_epoch(epoch)
    tic = time.perf_counter()
    images = 0
    for x, _, _ in loader:
        images += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tic, images


def bench_loaders(args: argparse.Namespace) -> int:
    kinds = args.loaders.split(",")
    unknown = set(kinds) - set(LOADERS)
    if unknown:
        print(f"error: unknown loaders {sorted(unknown)}: choose from {', '.join(LOADERS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.workers)  # the memory loader's CPU ops get what the others get
    device = resolve_device(args.device)
    data = load_data(args.data, args.data_dir, True)
    split = data.train
    indices = np.arange(len(split))
    if args.subset:
        indices = stratified_subset(split.fine, args.subset, seed=0)
    mean, std = data.mean_std()
    beton = (
        prepare_betons(data, {"train": ("train", indices)}, args.data_dir)["train"]
        if "ffcv" in kinds
        else None
    )
    print(
        f"{data.name}: {len(indices)} training images, batch {args.batch_size}, device {device}, "
        f"{args.workers} workers (FFCV threads / DataLoader processes / torch threads) on "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
    )
    rows = []
    for kind in kinds:  # torch first: its worker processes fork before numba starts threads
        loader = make_loader(
            kind, split, indices, args.batch_size, device, mean, std, train=True, seed=0,
            beton=beton, workers=args.workers,
        )  # fmt: skip
        warm, _ = epoch_seconds(loader, 0, device)
        seconds, images = 0.0, 0
        for epoch in range(1, args.epochs + 1):
            s, n = epoch_seconds(loader, epoch, device)
            seconds, images = seconds + s, images + n
        rows.append({"loader": kind, "images/s": images / seconds, "warm-up epoch s": warm})
        print(f"  {kind}: {images / seconds:,.0f} images/s (warm-up epoch {warm:.1f} s)", flush=True)
        del loader
    base = next((r["images/s"] for r in rows if r["loader"] == "torch"), None)
    for row in rows:
        row["vs torch"] = f"{row['images/s'] / base:.2f}x" if base else "-"
        row["images/s"] = f"{row['images/s']:,.0f}"
        row["warm-up epoch s"] = f"{row['warm-up epoch s']:.1f}"
    print(tabulate(rows, headers="keys", tablefmt="github"))
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    loaders = sub.add_parser("loaders", help="images/s of each data loader, and ratios to torch's DataLoader")
    loaders.add_argument("--data", default="synthetic", help="dataset spec, as for launch/sweep.py")
    loaders.add_argument("--data-dir", default="data", help="dataset and .beton caches")
    loaders.add_argument("--loaders", default="torch,memory,ffcv", help="comma-separated subset")
    loaders.add_argument("--batch-size", type=int, default=256)
    loaders.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    loaders.add_argument("--workers", type=int, default=os.cpu_count())
    loaders.add_argument("--subset", type=int, help="stratified subset of the training images")
    loaders.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up epoch")
    loaders.set_defaults(run=bench_loaders)
    args = p.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
