"""Rebuild a sweep's summary from its finished runs: python launch/aggregate.py results/<sweep>

Writes results/<sweep>/{runs.csv,summary.csv,report.md} and copies summary.csv next to the sweep
directory (results/summary.csv); prints report.md. A run whose record.json is damaged is left out,
named on stderr with the fix, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bilateral.errors import BilateralError
from bilateral.report import write_report


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", type=Path)
    args = p.parse_args(argv)
    try:
        damaged = write_report(args.sweep_dir, copy_summary_to=args.sweep_dir.parent / "summary.csv")
    except (FileNotFoundError, BilateralError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.sweep_dir / "report.md").read_text())
    for run_id, why in damaged.items():
        print(f"error: {run_id} left out of the summary: {why}", file=sys.stderr)
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
