"""The figures of a sweep's report.md (results/<sweep>/figures/): learning curves, the comparison
with 95% confidence intervals over seeds, and accuracy against compute. They need matplotlib (the
`analysis` extra); without it report.md says so and keeps its tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bilateral.errors import DamagedFileError
from bilateral.store import SweepStore

HEADS = ("fine", "coarse")


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
    """Validation accuracy per head and epoch of every row's member-0 runs (metrics.jsonl)."""
    rows = []
    for run in runs[runs["member"] == 0].itertuples():
        try:
            metrics = store.run(run.run_id).read_metrics()
        except DamagedFileError:  # a damaged metrics file leaves its run out of the curves, not the report
            continue
        for m in metrics:
            for head in HEADS:
                if f"val_acc_{head}" in m:
                    label = f"{run.model} / {run.backbone}"
                    rows.append(
                        {
                            "row": label,
                            "seed": run.seed,
                            "head": head,
                            "epoch": m["epoch"] + 1,
                            "acc": m[f"val_acc_{head}"],
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
    """Validation accuracy against epoch per head: each row's mean over seeds, band = min..max."""
    plt = _plt()
    heads = [h for h in HEADS if h in set(table["head"])]
    fig, axes = plt.subplots(1, len(heads), figsize=(6 * len(heads), 4.2), squeeze=False)
    rows = list(dict.fromkeys(table["row"]))
    cmap = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    for ax, head in zip(axes[0], heads, strict=True):
        for i, row in enumerate(rows):
            per_epoch = table[(table["row"] == row) & (table["head"] == head)].groupby("epoch")["acc"]
            if per_epoch.ngroups == 0:
                continue
            mean, low, high = per_epoch.mean(), per_epoch.min(), per_epoch.max()
            colour = cmap(i % cmap.N)
            ax.plot(mean.index, mean.values, marker="o", ms=3, color=colour, label=row)
            ax.fill_between(mean.index, low.values, high.values, color=colour, alpha=0.15)
        ax.set(title=f"{head} head", xlabel="epoch", ylabel="validation accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("Learning curves (mean over seeds; band: lowest to highest seed)")
    return _save(fig, path)


def comparison(runs: pd.DataFrame, path: Path) -> Path:
    """Test accuracy per row and head with its 95% t-interval over seeds."""
    plt = _plt()
    base = runs[runs["member"] == 0].assign(row=lambda d: d["model"] + " / " + d["backbone"])
    rows = sorted(set(base["row"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.4 * len(rows) + 1.8), sharey=True)
    for ax, head in zip(axes, HEADS, strict=True):
        for y, row in enumerate(rows):
            mean, half = t_interval(base.loc[base["row"] == row, f"test_acc_{head}"])
            if np.isnan(mean):
                continue
            ax.errorbar(mean, y, xerr=None if np.isnan(half) else half, fmt="o", capsize=3, color="tab:blue")
        ax.set(title=f"{head} test accuracy", xlabel="accuracy (95% CI over seeds)", yticks=range(len(rows)))
        ax.set_yticklabels(rows, fontsize=7)
        ax.grid(alpha=0.3, axis="x")
    axes[0].invert_yaxis()
    return _save(fig, path)


def accuracy_vs_compute(summary: pd.DataFrame, path: Path) -> Path:
    """Mean test accuracy per row against the compute-hours its runs took (dependencies included)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, head in zip(axes, HEADS, strict=True):
        rows = summary.dropna(subset=[f"{head}_acc_mean"])
        ax.scatter(rows["compute_hours"], rows[f"{head}_acc_mean"], color="tab:blue")
        for r in rows.itertuples():
            ax.annotate(
                f"{r.model} / {r.backbone}",
                (r.compute_hours, getattr(r, f"{head}_acc_mean")),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set(
            title=f"{head} head",
            xlabel="compute-hours (all seeds, with dependencies)",
            ylabel="test accuracy",
        )
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy against compute")
    return _save(fig, path)
