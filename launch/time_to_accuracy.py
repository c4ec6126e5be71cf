"""Time to accuracy of two recipes for one hemisphere: the authors' (Adam 1e-4 constant, batch 256,
180 epochs, dropout 0.6) against `small` (SGD-Nesterov one-cycle, label smoothing), same network
width, data, machine, precision (bf16 + channels_last for both, so that the recipe alone differs).

    python launch/time_to_accuracy.py                       # hemisphere-fine, width 1/4, real CIFAR-10
    python launch/time_to_accuracy.py --width 1 --data cifar100:/datasets --device cuda

Each recipe is a sweep of its own (results/<name>-authors/, results/<name>-small/, resumed when
rerun). The target is the validation accuracy the authors' recipe ends at (its best epoch, the
checkpoint it is tested with); for each recipe the table gives the first epoch whose validation
accuracy reaches it and the wall time to that epoch, and their ratio. Where `small` never reaches
it, the table says so and gives the time of each to reach `small`'s final accuracy instead. The
systems gain (bf16, channels_last, on-device data against the plain fp32 pipeline) is measured by
`launch/bench.py train`; a user of the authors' code gains the product of the two.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bilateral.store import SweepStore, write_atomic

RECIPES = {
    "authors": ["--preset", "paper", "train.bf16=true", "train.channels_last=true"],
    "small": ["--preset", "small"],
}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="cifar10-hier4:../shared/data/cifar10-jpg")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--model", default="hemisphere-fine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results")
    p.add_argument("--name", default="time-to-accuracy")
    p.add_argument(
        "overrides", nargs="*", help="key=value for both recipes (e.g. train.epochs=20 to try it short)"
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    curves = {}
    for recipe, preset in RECIPES.items():
        name = f"{args.name}-{recipe}"
        cmd = [sys.executable, str(Path(__file__).with_name("sweep.py")), *preset, "--data", args.data]
        cmd += ["--models", args.model, "--seeds", str(args.seed), "--device", args.device]
        cmd += ["--out", str(out), "--name", name, f"model.width={args.width}", *args.overrides]
        print(f"time to accuracy: {recipe} -> {out / name}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"error: the {recipe} sweep failed; rerun this command to resume it", file=sys.stderr)
            return 1
        curves[recipe] = curve(out / name)
    text = markdown(curves, args)
    folder = out / args.name
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "time_to_accuracy.md", text.encode())
    print(text)
    return 0


def curve(sweep: Path) -> list[tuple[int, float, float]]:
    """(epoch, validation score, wall seconds to the end of that epoch) of the sweep's one run. The
    per-epoch training time is images / images_per_s; evaluation and checkpoints are spread over the
    epochs in proportion, so the last point is the run's recorded wall time."""
    records, _ = SweepStore(sweep).read_records()
    (record,) = [r for r in records if r["member"] == 0]
    rows = SweepStore(sweep).run(record["run_id"]).read_metrics()
    per_epoch = record["train_images"] / len(rows)
    train = [per_epoch / row["images_per_s"] for row in rows]
    scale = record["wall_time_s"] / sum(train)
    points, elapsed = [], 0.0
    for row, seconds in zip(rows, train, strict=True):
        elapsed += seconds * scale
        if "val_score" in row:
            points.append((row["epoch"] + 1, row["val_score"], elapsed))
    return points


def reach(points: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """(epochs, seconds) to the first epoch at or above target; None if never."""
    return next(((e, s) for e, score, s in points if score >= target), None)


def markdown(curves: dict[str, list[tuple[int, float, float]]], args: argparse.Namespace) -> str:
    final = {recipe: max(score for _, score, _ in points) for recipe, points in curves.items()}
    lines = [
        f"Time to accuracy: {args.model}, width {args.width:g}, {args.data}, seed {args.seed}",
        "",
        "| recipe | epochs run | best validation accuracy | wall time |",
        "|---|---|---|---|",
    ]
    for recipe, points in curves.items():
        lines.append(f"| {recipe} | {points[-1][0]} | {final[recipe]:.4f} | {points[-1][2] / 60:.1f} min |")
    target = final["authors"]
    label = "the authors' recipe's best"
    if reach(curves["small"], target) is None:
        target, label = final["small"], "small's best (small never reaches the authors' best)"
    lines += [
        "",
        f"To {label}, validation accuracy {target:.4f}:",
        "",
        "| recipe | epochs | wall time |",
        "|---|---|---|",
    ]
    reached = {recipe: reach(points, target) for recipe, points in curves.items()}
    for recipe, hit in reached.items():
        lines.append(
            f"| {recipe} | {hit[0] if hit else 'never'} | {f'{hit[1] / 60:.1f} min' if hit else '-'} |"
        )
    if all(reached.values()):
        epochs = reached["authors"][0] / reached["small"][0]
        seconds = reached["authors"][1] / reached["small"][1]
        lines += [
            "",
            f"The authors' recipe needs {epochs:.2f}x the epochs and {seconds:.2f}x the wall time of small "
            "to reach that accuracy.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
