"""What a tuning says about itself: <tuning>/report.md (the search space, the budget per row, each
row's choice against its own settings) and convergence.png (validation score against trial, per row)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bilateral.store import write_atomic
from bilateral.tuning.space import Budget, SearchSpace


def write(
    root: Path, trials: pd.DataFrame, choices: dict[str, dict], space: SearchSpace, budget: Budget, about: str
) -> Path:
    figure = convergence_figure(trials, choices, root / "convergence.png")
    lines = ["# Tuning each row", "", about, "", "## Search space", "", *space.describe(), ""]
    lines += ["## Budget", "", f"Every row: {budget.describe()}.", ""]
    lines += [
        "| row | trials | epochs trained (all trials) | stopped early | errors | chosen trial "
        "| chosen settings | validation, chosen | validation, own settings (trial 1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, choice in choices.items():
        rows = trials[trials["row"] == key]
        chosen = rows[rows["trial"] == choice["trial"]].iloc[0]
        first = rows[rows["trial"] == 1]
        own = (
            f"{first['val_score'].iloc[0]:.4f}"
            if len(first) and pd.notna(first["val_score"].iloc[0])
            else "-"
        )
        settings = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in choice["settings"].items()
        )
        errors = int((rows["error"].fillna("") != "").sum())
        stopped, trained = int(rows["stopped_early"].sum()), int(rows["epochs_trained"].sum())
        lines.append(
            f"| {key} | {len(rows)} | {trained} | {stopped} | {errors} | {choice['trial']} | {settings} "
            f"| {chosen['val_score']:.4f} | {own} |"
        )
    lines += [
        "",
        "Validation score: mean validation accuracy over the row's heads at the run's best epoch (the "
        "checkpoint a sweep keeps), averaged over the tuning seeds. The test split was never evaluated.",
        "Trial 1 trains the row's own (the preset's) settings where they lie in the space.",
        "",
        f"![validation score against trial]({figure.name})",
        "",
        "Each trial's score (filled: trained all its epochs; open: stopped early by ASHA, at its last epoch) "
        "and the best score so far among trials that trained all their epochs.",
    ]
    path = root / "report.md"
    write_atomic(path, ("\n".join(lines) + "\n").encode())
    return path


def convergence_figure(trials: pd.DataFrame, choices: dict[str, dict], path: Path) -> Path:
    """One panel per row: each trial's validation score by trial number, and the running best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(choices)
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        t = trials[trials["row"] == key].sort_values("trial")
        full = t[~t["stopped_early"].astype(bool)]
        early = t[t["stopped_early"].astype(bool)]
        ax.plot(full["trial"], full["val_score"], "o", color="C0", label="all epochs")
        ax.plot(early["trial"], early["val_score_last"], "o", mfc="none", color="C0", label="stopped early")
        best = full.set_index("trial")["val_score"].reindex(t["trial"]).cummax().ffill()
        ax.step(best.index, best.values, where="post", color="C1", label="best so far")
        chosen = t[t["trial"] == choices[key]["trial"]]
        ax.plot(chosen["trial"], chosen["val_score"], "*", color="C3", markersize=12, label="chosen")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("trial")
        ax.set_ylabel("validation score")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
