"""The figures of a sweep's report.md (results/<sweep>/figures/): learning curves (validation
accuracy and training loss, each run's chosen epoch marked), each row's seeds beside its mean and
95% confidence interval, a forest plot of the differences, and accuracy against training FLOPs.
They need matplotlib (the `analysis` extra); without it report.md says so and keeps its tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bilateral.errors import DamagedFileError
from bilateral.store import SweepStore

HEADS = ("fine", "coarse")
TRAIN_LOSS = "train loss"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def t_interval(values: pd.Series, level: float = 0.95) -> tuple[float, float]:
    """(mean, half width) of the t confidence interval over seeds; half width NaN for one seed."""
    values = values.dropna()
    n = len(values)
    if n == 0:
        return np.nan, np.nan
    if n < 2:
        return float(values.mean()), np.nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(values.mean()), float(half)


def curves(store: SweepStore, runs: pd.DataFrame) -> pd.DataFrame:
    """Per epoch of every row's member-0 runs (metrics.jsonl): validation accuracy per head
    (metric "fine", "coarse") and training loss ("train loss"); chosen: the epoch the run was tested
    at (its best on validation, or its last)."""
    rows = []
    for run in runs[runs["member"] == 0].itertuples():
        try:
            metrics = store.run(run.run_id).read_metrics()
        except DamagedFileError:  # a damaged metrics file leaves its run out of the curves, not the report
            continue
        chosen = getattr(run, "tested_epoch", np.nan)
        chosen = run.best_epoch if pd.isna(chosen) else chosen
        label = f"{run.model} / {run.backbone}"
        for m in metrics:
            values = {h: m.get(f"val_acc_{h}") for h in HEADS} | {TRAIN_LOSS: m.get("train_loss")}
            for metric, value in values.items():
                if value is not None:
                    epoch = m["epoch"]
                    rows.append(
                        {
                            "row": label,
                            "seed": run.seed,
                            "metric": metric,
                            "epoch": epoch + 1,
                            "value": value,
                            "chosen": epoch == chosen,
                        }
                    )
    return pd.DataFrame(rows)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def learning_curves(table: pd.DataFrame, path: Path) -> Path:
    """Validation accuracy per head and training loss against epoch: each row's mean over seeds,
    band = min..max, and a cross at each run's chosen epoch (on its own curve)."""
    plt = _plt()
    metrics = [m for m in (*HEADS, TRAIN_LOSS) if m in set(table["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    rows = list(dict.fromkeys(table["row"]))
    cmap = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, row in enumerate(rows):
            mine = table[(table["row"] == row) & (table["metric"] == metric)]
            if mine.empty:
                continue
            per_epoch = mine.groupby("epoch")["value"]
            mean, low, high = per_epoch.mean(), per_epoch.min(), per_epoch.max()
            colour = cmap(i % cmap.N)
            ax.plot(mean.index, mean.values, marker="o", ms=3, color=colour, label=row)
            ax.fill_between(mean.index, low.values, high.values, color=colour, alpha=0.15)
            chosen = mine[mine["chosen"]]
            ax.scatter(chosen["epoch"], chosen["value"], marker="x", s=40, color=colour, zorder=3)
        label = "training loss" if metric == TRAIN_LOSS else f"{metric} head: validation accuracy"
        ax.set(
            title=label, xlabel="epoch", ylabel="loss (both heads)" if metric == TRAIN_LOSS else "accuracy"
        )
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(
        "Learning curves (mean over seeds; band: lowest to highest seed; x: each run's chosen epoch)"
    )
    return _save(fig, path)


def comparison(runs: pd.DataFrame, path: Path) -> Path:
    """Test accuracy per row and head: each seed (grey dots, just below) beside the mean with its
    95% t-interval over seeds, so a reader sees how few points an interval rests on."""
    plt = _plt()
    base = runs[runs["member"] == 0].assign(row=lambda d: d["model"] + " / " + d["backbone"])
    rows = sorted(set(base["row"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.8), sharey=True)
    for ax, head in zip(axes, HEADS, strict=True):
        for y, row in enumerate(rows):
            seeds = base.loc[base["row"] == row, f"test_acc_{head}"].dropna()
            mean, half = t_interval(seeds)
            if np.isnan(mean):
                continue
            ax.scatter(seeds, np.full(len(seeds), y + 0.22), s=12, color="0.45", zorder=2)
            ax.errorbar(mean, y, xerr=None if np.isnan(half) else half, fmt="o", capsize=3, color="tab:blue")
        ax.set(
            title=f"{head} test accuracy",
            xlabel="accuracy (dots: seeds; bar: 95% CI over seeds)",
            yticks=range(len(rows)),
        )
        ax.set_yticklabels(rows, fontsize=7)
        ax.grid(alpha=0.3, axis="x")
    axes[0].invert_yaxis()
    return _save(fig, path)


def forest(differences: pd.DataFrame, margin: float | None, path: Path) -> Path:
    """Differences in points per head with their 95% intervals: primary contrasts (blue, with the
    seeds + images interval as a thin line) above exploratory ones (grey), a zero line, and the
    equivalence band ±margin. differences: label, head, kind (primary / exploratory), diff, low,
    high, and for primary rows both_low, both_high."""
    plt = _plt()
    labels = list(dict.fromkeys(differences["label"]))
    heads = [h for h in HEADS if h in set(differences["head"])]
    size = (5.5 * len(heads), 0.4 * len(labels) + 1.8)
    fig, axes = plt.subplots(1, len(heads), figsize=size, squeeze=False, sharey=True)
    for ax, head in zip(axes[0], heads, strict=True):
        if margin:
            ax.axvspan(-margin, margin, color="tab:green", alpha=0.12, label=f"equivalence ±{margin:g}")
        ax.axvline(0, color="black", lw=0.8)
        for d in differences[differences["head"] == head].itertuples():
            y = labels.index(d.label)
            primary = d.kind == "primary"
            colour = "tab:blue" if primary else "0.5"
            if primary and not pd.isna(getattr(d, "both_low", np.nan)):
                ax.plot([d.both_low, d.both_high], [y, y], color=colour, lw=0.8, alpha=0.6)
            if pd.isna(d.low):
                ax.plot(d.diff, y, "o", color=colour)
            else:
                ax.errorbar(
                    d.diff, y, xerr=[[d.diff - d.low], [d.high - d.diff]], fmt="o", capsize=3, color=colour
                )
        ax.set(title=f"{head} head", xlabel="difference in test accuracy (points)", yticks=range(len(labels)))
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticklabels(labels, fontsize=7)
    axes[0][0].invert_yaxis()
    if margin:
        axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "Differences with 95% CIs (blue: primary, the thin line with test-image noise; grey: the others)"
    )
    return _save(fig, path)


def accuracy_vs_cost(summary: pd.DataFrame, path: Path) -> Path:
    """Mean test accuracy per row against the FLOPs one model of it took to train (dependencies
    included; log scale), or, for records without FLOPs, against compute-hours."""
    plt = _plt()
    flops = summary["train_flops"].notna().any()
    x, xlabel = (
        ("train_flops", "training FLOPs of one model, with its dependencies")
        if flops
        else ("compute_hours", "compute-hours (all seeds, with dependencies)")
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, head in zip(axes, HEADS, strict=True):
        rows = summary.dropna(subset=[f"{head}_acc_mean", x])
        ax.scatter(rows[x], rows[f"{head}_acc_mean"], color="tab:blue")
        for r in rows.itertuples():
            ax.annotate(
                f"{r.model} / {r.backbone}",
                (getattr(r, x), getattr(r, f"{head}_acc_mean")),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set(
            title=f"{head} head", xlabel=xlabel, ylabel="test accuracy", xscale="log" if flops else "linear"
        )
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy against training cost")
    return _save(fig, path)
