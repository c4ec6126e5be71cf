"""Every figure of the evaluation (matplotlib, headless): each function takes a part's table, writes
one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bilateral.analysis.figures import _save, plt


def _models(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["model"]))


def _legend(fig, axes) -> None:
    """One legend for every panel (a model with one head appears in one panel only)."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(
        list(entries.values()), list(entries), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5)
    )


def _colours(names: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _per_head(table: pd.DataFrame, path: Path, title: str, draw, **labels) -> Path:
    """One panel per head, every model's curve drawn by draw(ax, head rows, model, colour), one legend."""
    heads = [h for h in ("fine", "coarse") if h in set(table["head"])]
    colours = _colours(_models(table))
    fig, axes = plt.subplots(1, len(heads), figsize=(6 * len(heads), 4.2), squeeze=False)
    for ax, head in zip(axes[0], heads, strict=True):
        rows = table[table["head"] == head]
        for model in _models(rows):
            draw(ax, rows[rows["model"] == model], head, model, colours[model])
        ax.set(title=f"{head} head", **labels)
        ax.grid(alpha=0.3)
    _legend(fig, axes[0])
    fig.suptitle(title)
    return _save(fig, path)


def robustness_curves(table: pd.DataFrame, path: Path) -> Path:
    """Accuracy against eps per model, one panel per head: PGD solid, FGSM dashed, on the head itself."""

    def draw(ax, own: pd.DataFrame, head: str, model: str, colour) -> None:
        clean = own[own["attack"] == "none"]["acc"].mean()
        for attack, style in (("pgd", "-"), ("fgsm", "--")):
            curve = own[(own["attack"] == attack) & (own["target"] == head)].groupby("eps")["acc"].mean()
            label = model if attack == "pgd" else None
            ax.plot(
                [0, *curve.index], [clean, *curve.values], style, marker="o", ms=3, color=colour, label=label
            )

    title = "Adversarial robustness (solid PGD, dashed FGSM)"
    return _per_head(table, path, title, draw, xlabel="eps (x 1/255)", ylabel="test accuracy", ylim=(0, 1))


def corruption_curves(table: pd.DataFrame, path: Path) -> Path:
    """Relative accuracy against severity per model, one panel per head."""

    def draw(ax, own: pd.DataFrame, head: str, model: str, colour) -> None:
        curve = own.groupby("severity")["relative"].mean()
        ax.plot([0, *curve.index], [1.0, *curve.values], marker="o", ms=3, color=colour, label=model)

    title = "Common corruptions (mean over 15 corruptions)"
    labels = dict(xlabel="severity (0 = clean)", ylabel="accuracy / clean accuracy")
    return _per_head(table, path, title, draw, **labels)


def detection_bars(table: pd.DataFrame, path: Path) -> Path:
    """AUROC per model and score, one panel per task."""
    tasks = list(dict.fromkeys(table["task"]))
    scores = list(dict.fromkeys(table["score"]))
    models = _models(table)
    colours = _colours(scores)
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(5.5 * len(tasks), 0.45 * len(models) + 1.8), squeeze=False
    )
    width = 0.8 / len(scores)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = table[table["task"] == task].groupby(["model", "score"])["auroc"].mean()
        for j, score in enumerate(scores):
            values = [rows.get((m, score), np.nan) for m in models]
            ax.barh(
                np.arange(len(models)) + j * width, values, height=width, color=colours[score], label=score
            )
        ax.axvline(0.5, color="k", lw=0.8, ls=":")
        ax.set(title=task, xlabel="AUROC", xlim=(0, 1), yticks=np.arange(len(models)) + 0.4 - width / 2)
        ax.set_yticklabels(models, fontsize=7)
        ax.invert_yaxis()
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Detecting errors, attacks and corruptions (dotted: chance)")
    return _save(fig, path)


def transfer_curves(table: pd.DataFrame, path: Path) -> Path:
    """Held-out class accuracy against shots, one line per (model, representation)."""
    ncm = table[table["method"] == "nearest class mean"]
    keys = list(dict.fromkeys(zip(ncm["model"], ncm["representation"], strict=True)))
    colours = _colours([f"{m}: {r}" for m, r in keys])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, rep in keys:
        curve = ncm[(ncm["model"] == model) & (ncm["representation"] == rep)].groupby("shots")["acc"].mean()
        label = f"{model}: {rep}"
        ax.plot(curve.index, curve.values, marker="o", ms=3, color=colours[label], label=label)
    ax.set(
        title="Transfer to held-out classes (nearest class mean)",
        xlabel="shots per class",
        ylabel="accuracy on held-out test images",
        xticks=sorted(set(ncm["shots"])),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, path)
