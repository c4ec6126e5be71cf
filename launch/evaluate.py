"""Evaluate a finished sweep beyond accuracy: python launch/evaluate.py results/<sweep>

    python launch/evaluate.py results/<sweep>                                   # every part
    python launch/evaluate.py results/<sweep> --parts robustness,detection      # only some parts
    python launch/evaluate.py results/<sweep> --images 500                      # CPU-sized: 500 a seed
    python launch/sweep.py --experiment transfer --data cifar10-hier4:../shared/data/cifar10-jpg --seeds 0,1
    python launch/evaluate.py results/smoke-cifar10-hier4-resnet9 --images 500  # then transfer applies too

Writes results/<sweep>/evaluation/: report.md (start there), CSVs and figures/*.png. A part that
cannot run on this sweep is listed in report.md and on stderr with the reason; the others still run.
Exit status: 0 when every part ran, 1 when some part could not or a record is damaged, 2 when no
part could (or the directory is not a sweep).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bilateral.errors import BilateralError
from bilateral.evaluation import PARTS, run_evaluation


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda | cuda:N")
    p.add_argument("--data-dir", default="data", help="dataset cache the sweep used (default data)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument(
        "--images", type=int, default=0, help="test images per seed (stratified); 0 = all (default)"
    )
    args = p.parse_args(argv)
    if args.images < 0:
        p.error(f"--images {args.images}: give a positive number of images, or 0 for all")
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    try:
        result = run_evaluation(args.sweep_dir, args.device, args.data_dir, parts=parts, images=args.images)
    except BilateralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in result.problems("evaluation"):
        print(line, file=sys.stderr)
    print(f"wrote {result.report}")
    return result.exit_status()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    sys.exit(main(sys.argv[1:]))
