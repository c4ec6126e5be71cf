"""The authors' published figures, and the check that a sweep of their protocol lands near them.

A CIFAR-100 ResNet-9 sweep under `paper` or `authors` whose hemispheres fall outside these bands
differs from the authors' setup somewhere (data, augmentation, a changed setting, a bug); saying so
in report.md tells the user at once, before anyone reads the bilateral rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SOURCE = "the authors' artefacts for Rajagopalan et al. (arXiv 2209.06862), CIFAR-100, ResNet-9, 5 seeds"


@dataclass(frozen=True)
class Band:
    model: str
    head: str
    low: float
    high: float


BANDS = (Band("hemisphere-fine", "fine", 0.66, 0.69), Band("hemisphere-coarse", "coarse", 0.73, 0.75))
CHECKED_PRESETS = ("paper", "authors")


def applies(config: dict) -> bool:
    """The bands are the authors' setting: CIFAR-100, ResNet-9 hemispheres, their protocol."""
    plan, data = config.get("plan", {}), config.get("data", {})
    return (
        config.get("preset") in CHECKED_PRESETS
        and data.get("source") == "cifar100"
        and plan.get("backbone", "resnet9") == "resnet9"
        and plan.get("right_backbone") in (None, "resnet9")
    )


def outside_bands(summary: pd.DataFrame) -> list[str]:
    """One line per hemisphere row whose mean test accuracy lies outside the authors' band."""
    lines = []
    for band in BANDS:
        rows = summary[(summary["model"] == band.model) & (summary["backbone"] == "resnet9")]
        for mean in rows[f"{band.head}_acc_mean"].dropna():
            if not band.low <= mean <= band.high:
                lines.append(
                    f"{band.model} {band.head} accuracy {mean:.4f} is outside the authors' "
                    f"{band.low:.2f}-{band.high:.2f}"
                )
    return lines


# The authors' figures a reader compares a CIFAR-100 ResNet-9 sweep with, whatever its protocol:
# (row, head) -> what their artefacts give.
REFERENCE = {
    ("hemisphere-fine", "fine"): "0.66-0.69",
    ("hemisphere-coarse", "coarse"): "0.73-0.75",
    ("bilateral-specialised", "fine"): "about 0.72",
    ("bilateral-specialised", "coarse"): "about 0.82",
}


def reference_applies(config: dict) -> bool:
    """CIFAR-100 with ResNet-9 hemispheres: the data and network their figures are of."""
    plan, data = config.get("plan", {}), config.get("data", {})
    return (
        data.get("source", "").split(":")[0] == "cifar100"
        and plan.get("backbone", "resnet9") == "resnet9"
        and plan.get("right_backbone") in (None, "resnet9")
    )


def reference_table(summary: pd.DataFrame) -> str:
    """The sweep's mean test accuracies beside the authors' figures, with their source."""
    rows = []
    for (model, head), theirs in REFERENCE.items():
        mine = summary[(summary["model"] == model) & (summary["backbone"] == "resnet9")][f"{head}_acc_mean"]
        rows.append(
            {
                "row": model,
                "head": head,
                "this sweep": "—" if mine.dropna().empty else f"{mine.dropna().iloc[0]:.4f}",
                "the authors'": theirs,
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False) + f"\n\nSource: {SOURCE}."
