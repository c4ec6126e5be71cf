"""Write a sweep's data in a loader's format ahead of time (a sweep also does it when missing).

    python launch/prepare_data.py --data cifar10-hier:../shared/data/cifar10-jpg --format ffcv
    python launch/prepare_data.py --preset paper --data cifar100:/datasets --format ffcv
    python launch/prepare_data.py --data synthetic --format ffcv data.val_size=500   # any data.* override

Takes the same --preset / --config / --data / key=value as launch/sweep.py, because the split (the
validation hold-out and any train or test subsets) decides what each file holds. Writes
<data_dir>/ffcv/<dataset fingerprint>-<split hash>/{train,val,test}.beton and prints their paths;
a complete directory is left as it is.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bilateral.config import PRESETS, load_config
from bilateral.data.beton import prepare_betons, split_parts
from bilateral.errors import BilateralError
from bilateral.plan import build_plan
from bilateral.run_data import make_splits, run_data


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset spec, as for launch/sweep.py (default: the preset's)")
    p.add_argument("--format", choices=["ffcv"], default="ffcv", help="ffcv: .beton files")
    p.add_argument("--preset", default="smoke", help=f"one of {', '.join(PRESETS)} (default smoke)")
    p.add_argument("--config", help="YAML file of overrides, applied after the preset")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="writer processes")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.val_size=5000")
    args = p.parse_args(argv)
    overrides = ([f"data.source={args.data}"] if args.data else []) + args.overrides
    try:
        cfg = load_config(args.preset, args.config, overrides)
        spec = build_plan(cfg).runs[0]  # every run of a sweep shares the data section
        data = run_data(spec.data, cfg.data_dir)
        splits = make_splits(data, spec)
        paths = prepare_betons(data, split_parts(splits), cfg.data_dir, workers=args.workers)
    except BilateralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for part, path in paths.items():
        print(
            f"{part:5} {len(getattr(splits, part)):6} samples  {path.stat().st_size / 2**20:7.1f} MiB  {path}"
        )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
