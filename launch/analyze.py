"""Analyse a finished sweep: python launch/analyze.py results/<sweep>

    python launch/analyze.py results/smoke-synthetic-resnet9
    python launch/analyze.py results/<sweep> --parts scenarios,attribution      # only some parts
    python launch/analyze.py results/<sweep> --device cuda --gradcam-images 0   # Grad-CAM on every test image

Writes results/<sweep>/analysis/: report.md (start there), CSVs and figures/*.png. A part that cannot
run on this sweep (e.g. no bilateral run finished) is listed in report.md and on stderr with what to
train; the others still run. A run whose record.json is damaged is left out and named with the fix.
Exit status: 0 when every part ran on every run, 1 when some part could not or a record is damaged,
2 when no part could (or the directory is not a sweep).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bilateral.analysis import PARTS, run_analysis
from bilateral.errors import BilateralError


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda | cuda:N")
    p.add_argument("--data-dir", default="data", help="dataset cache the sweep used (default data)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument(
        "--gradcam-images",
        type=int,
        default=1000,
        help="test images per seed for the Grad-CAM spread statistics; 0 = all (default 1000)",
    )
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    try:
        result = run_analysis(
            args.sweep_dir, args.device, args.data_dir, parts=parts, gradcam_images=args.gradcam_images
        )
    except BilateralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in result.problems("analysis"):
        print(line, file=sys.stderr)
    print(f"wrote {result.report}")
    return result.exit_status()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    sys.exit(main(sys.argv[1:]))
