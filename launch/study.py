"""How many epochs (or any one setting) each arm of a comparison needs: run the same sweep once per
value of one key, and tabulate every row's validation accuracy against the value.

    python launch/study.py --values 5,10,20,40 -- --preset small --experiment core --seeds 0
    python launch/study.py --key train.head_epochs --values 2,5,10 -- --preset small --experiment core

Each value is a sweep of its own, results/<name>-<value>/ (resumed like any sweep when rerun), run
in the order given (largest first gives the reference soonest); results/<name>/study.csv and
study.md hold the table: per row and head, the mean validation accuracy over seeds at each value,
its distance in points from the row's accuracy at the largest value, and the smallest value at which
every row is within --tolerance points of it. Validation only: the test
set chooses nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bilateral.errors import BilateralError
from bilateral.store import SweepStore, write_atomic

HEADS = ("fine", "coarse")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key", default="train.epochs", help="the config key to vary (default train.epochs)")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 5,10,20,40")
    p.add_argument("--name", default="study", help="results/<name>/ for the table; sweeps <name>-<value>")
    p.add_argument("--out", default="results", help="results root (default results)")
    p.add_argument("--tolerance", type=float, default=1.0, help="points from the largest value (default 1)")
    p.add_argument("sweep_args", nargs=argparse.REMAINDER, help="after --: the arguments of launch/sweep.py")
    args = p.parse_args(argv)
    values = [v.strip() for v in args.values.split(",") if v.strip()]
    if len(values) < 2:
        p.error(f"--values {args.values!r}: give at least two numbers, e.g. 40,20,10,5")
    try:
        ordered = sorted(values, key=float)
    except ValueError:
        p.error(f"--values {args.values!r}: give numbers, e.g. 40,20,10,5")
    sweep_args = [a for a in args.sweep_args if a != "--"]
    out = Path(args.out)
    for value in values:
        name = f"{args.name}-{value}"
        cmd = [sys.executable, str(Path(__file__).with_name("sweep.py")), *sweep_args]
        cmd += ["--out", str(out), "--name", name, f"{args.key}={value}"]
        print(f"study: {args.key}={value} -> {out / name}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(
                f"error: the sweep for {args.key}={value} failed; rerun this command to resume it",
                file=sys.stderr,
            )
            return 1
    try:
        table = study_table({v: out / f"{args.name}-{v}" for v in ordered})
    except BilateralError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folder = out / args.name
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "study.csv", table.to_csv(index=False).encode())
    text = markdown(table, args.key, args.tolerance)
    write_atomic(folder / "study.md", text.encode())
    print(text)
    return 0


def study_table(sweeps: dict[str, Path]) -> pd.DataFrame:
    """One row per (row, head, value): mean and std over seeds of the validation accuracy at the
    run's tested checkpoint, and the points from the row's accuracy at the last (largest) value."""
    rows = []
    for value, folder in sweeps.items():
        records, _ = SweepStore(folder).read_records()
        for r in records:
            if r["member"] != 0:
                continue
            for head in HEADS:
                if f"val_acc_{head}" in r:
                    rows.append(
                        {
                            "row": r["model"],
                            "head": head,
                            "value": value,
                            "seed": r["seed"],
                            "val_acc": r[f"val_acc_{head}"],
                            "wall_time_s": r["wall_time_s"],
                        }
                    )
    df = pd.DataFrame(rows)
    table = (
        df.groupby(["row", "head", "value"], sort=False)
        .agg(
            seeds=("seed", "nunique"),
            val_acc=("val_acc", "mean"),
            val_acc_std=("val_acc", "std"),
            wall_time_s=("wall_time_s", "mean"),
        )
        .reset_index()
    )
    last = list(sweeps)[-1]
    final = table[table["value"] == last].set_index(["row", "head"])["val_acc"]
    table["points_below_last"] = [
        100 * (final.get((r, h), float("nan")) - a)
        for r, h, a in zip(table["row"], table["head"], table["val_acc"], strict=True)
    ]
    return table


def markdown(table: pd.DataFrame, key: str, tolerance: float) -> str:
    values = list(dict.fromkeys(table["value"]))
    wide = table.pivot_table(index=["row", "head"], columns="value", values="val_acc", sort=False)[values]
    gap = table.pivot_table(index=["row", "head"], columns="value", values="points_below_last", sort=False)[
        values
    ]
    lines = [
        f"Validation accuracy by {key} (mean over seeds; in brackets, points below the last value)",
        "",
        "| row | head | " + " | ".join(values) + " |",
        "|---|---|" + "---|" * len(values),
    ]
    for (row, head), accs in wide.iterrows():
        cells = [f"{accs[v]:.4f} ({gap.loc[(row, head), v]:+.1f})" for v in values]
        lines.append(f"| {row} | {head} | " + " | ".join(cells) + " |")
    within = [v for v in values if (gap[v].abs() <= tolerance).all()]
    lines += [
        "",
        f"Smallest {key} with every row within {tolerance:g} point(s) of its accuracy at {values[-1]}: "
        f"{within[0] if within else 'none'}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
