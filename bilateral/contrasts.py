"""A sweep's declared primary contrasts, computed from its finished runs: the first table of
report.md. Each is a row minus a row, per head, in test-accuracy points (1 point = 0.01).

Arms whose runs all trained with paired data orders (spec.data.pairing == "seed": every arm of a
seed saw the same batches and augmentations) are compared with a paired t-test over seeds; any
other pair (a record without the field trained before pairing existed: "run") with Welch's.
Holm runs over the primary family alone (every contrast and head), for the difference and for
the equivalence test each; the report's other differences are exploratory.
"""

from __future__ import annotations

import logging
import math

import pandas as pd

from bilateral.comparison import Comparison, load_comparison
from bilateral.errors import BilateralError
from bilateral.stats import ALPHA, Difference, difference, holm, image_bootstrap, seeds_and_images, verdict
from bilateral.store import SweepStore

log = logging.getLogger(__name__)
POINTS = 100.0  # accuracy points per unit of accuracy


def declared(config: dict) -> Comparison | None:
    """The sweep's comparison when it declares contrasts; None otherwise, or (with a warning) when
    its file can no longer be read."""
    experiment = config.get("plan", {}).get("experiment")
    if not experiment:
        return None
    try:
        comparison = load_comparison(experiment)
    except BilateralError as exc:
        log.warning("report.md without declared contrasts: %s", exc)
        return None
    return comparison if comparison.contrasts else None


def check_declared(cfg) -> None:
    """Before training: every row a declared contrast names is a row of the sweep (ConfigError)."""
    from bilateral.plan import model_names

    comparison = load_comparison(cfg.plan.experiment)
    comparison.check_contrast_rows(model_names(cfg, comparison))


def arm(runs: pd.DataFrame, name: str, config: dict) -> pd.DataFrame:
    """The member-0 runs of a row, by its name as a comparison names it: a model (on the sweep's
    backbone when the model has several, as `unilateral` does) or `<model>-<backbone>`
    (`unilateral-resnet18`)."""
    runs = runs[runs["member"] == 0]
    rows = runs[runs["model"] == name]
    if rows["backbone"].nunique() > 1:
        plan = config.get("plan", {})
        left, right = plan.get("backbone", "resnet9"), plan.get("right_backbone")
        rows = rows[rows["backbone"].isin([left, f"{left}+{right}"])]
    if rows.empty:
        rows = runs[runs["model"] + "-" + runs["backbone"] == name]
    return rows


def primary(
    runs: pd.DataFrame, comparison: Comparison, config: dict, store: SweepStore | None = None
) -> pd.DataFrame:
    """One row per (contrast, head): the test, seeds, difference and its interval, p, Holm p, the
    minimum detectable effect, TOST p and its Holm p, the image bootstrap's interval (needs the
    runs' predictions.npz: a store), the interval with both noises, and the verdict."""
    margin = comparison.margin
    rows = []
    for contrast in comparison.contrasts:
        a, b = arm(runs, contrast.row, config), arm(runs, contrast.minus, config)
        for head in contrast.heads:
            d = _difference(a, b, head, margin)
            images = _bootstrap(store, a, b, head, d) if store is not None else None
            both = seeds_and_images(d, images) if images is not None else (math.nan, math.nan)
            rows.append(
                {
                    "contrast": contrast.label,
                    "head": head,
                    "test": d.test,
                    "n": d.n,
                    "diff": d.mean,
                    "low": d.low,
                    "high": d.high,
                    "p": d.p,
                    "mde": d.mde,
                    "tost_p": d.tost_p,
                    "image_low": images.low if images else math.nan,
                    "image_high": images.high if images else math.nan,
                    "both_low": both[0],
                    "both_high": both[1],
                    "_d": d,
                }
            )
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(list(table["p"]))
    table["tost_p_holm"] = holm(list(table["tost_p"]))
    table["verdict"] = [
        verdict(d, p, t, margin, " points") if d.n >= 2 else "no test (fewer than 2 seeds an arm)"
        for d, p, t in zip(table["_d"], table["p_holm"], table["tost_p_holm"], strict=True)
    ]
    return table.drop(columns="_d")


def _difference(a: pd.DataFrame, b: pd.DataFrame, head: str, margin: float | None) -> Difference:
    """In points; paired over common seeds when both arms trained with paired data orders."""
    column = f"test_acc_{head}"
    a, b = a.dropna(subset=[column]), b.dropna(subset=[column])
    paired = not a.empty and not b.empty and set(a["pairing"]) | set(b["pairing"]) == {"seed"}
    if paired:
        both = a[["seed", column]].merge(b[["seed", column]], on="seed", suffixes=("", "_b"))
        return difference(both[column] * POINTS, both[f"{column}_b"] * POINTS, paired=True, margin=margin)
    return difference(a[column] * POINTS, b[column] * POINTS, paired=False, margin=margin)


def _bootstrap(store: SweepStore, a: pd.DataFrame, b: pd.DataFrame, head: str, d: Difference):
    """The image bootstrap of the difference in points, on the test images every run of both arms
    was tested on; None when a run's predictions are missing or have no such head."""
    if math.isnan(d.mean):
        return None
    correct = {}
    try:
        for run_id in [*a["run_id"], *b["run_id"]]:
            arrays = store.run(run_id).load_arrays("predictions.npz")
            correct[run_id] = pd.Series(arrays[f"correct_{head}"], index=arrays["test_index"])
    except (BilateralError, KeyError):
        return None
    per_run = pd.DataFrame(correct).dropna().astype(float)  # the images every run saw
    if per_run.empty:
        return None
    per_image = per_run[list(a["run_id"])].mean(axis=1) - per_run[list(b["run_id"])].mean(axis=1)
    return image_bootstrap(per_image.to_numpy() * POINTS)


def markdown(table: pd.DataFrame, comparison: Comparison) -> list[str]:
    """The primary contrasts' section of report.md."""

    def num(v: float, fmt: str = ".2f") -> str:
        return "—" if pd.isna(v) else f"{v:{fmt}}"

    def num3(v: float) -> str:
        return num(v, ".3g")

    def interval(low: float, high: float) -> str:
        return "—" if pd.isna(low) else f"[{low:+.2f}, {high:+.2f}]"

    margin = comparison.margin
    out = pd.DataFrame(
        {
            "contrast": table["contrast"],
            "head": table["head"],
            "test": table["test"],
            "seeds": table["n"],
            "Δ (points)": table["diff"].map(lambda v: num(v, "+.2f")),
            "95% CI": [interval(lo, hi) for lo, hi in zip(table["low"], table["high"], strict=True)],
            "p": table["p"].map(num3),
            "Holm p": table["p_holm"].map(num3),
            "detectable (80%)": table["mde"].map(lambda v: num(v, ".2f")),
            **(
                {f"TOST p (±{margin:g})": table["tost_p_holm"].map(lambda v: num(v, ".3g"))} if margin else {}
            ),
            "95% CI, test images": [
                interval(lo, hi) for lo, hi in zip(table["image_low"], table["image_high"], strict=True)
            ],
            "95% CI, seeds + images": [
                interval(lo, hi) for lo, hi in zip(table["both_low"], table["both_high"], strict=True)
            ],
            "verdict": table["verdict"],
        }
    )
    tests = sorted(set(table["test"]))
    why = {
        "paired t": "paired t over seeds (both arms trained each seed on the same data order and "
        "augmentations)",
        "Welch t": "Welch's t (the arms' runs drew their own data orders, or some were trained before "
        "pairing)",
    }
    equivalence = (
        f" TOST p: two one-sided tests that the difference lies within ±{margin:g} points, Holm-adjusted "
        "likewise."
        if margin
        else " No equivalence margin is declared (contrasts.margin), so no difference can be called "
        "equivalent."
    )
    return [
        f"## Primary contrasts (declared in `{comparison.name}`)",
        "",
        f"Test accuracy in points (1 point = 0.01), row minus row. Test: {'; '.join(why[t] for t in tests)}. "
        f"95% CI of the mean difference over seeds; p two-sided; Holm over these {len(table)} tests alone. "
        f"Detectable (80%): the smallest difference this test finds with 80% power at α = {ALPHA:g}."
        f"{equivalence} The test-image interval resamples the test images (the same images for both arms "
        "and every seed); the last interval adds that noise to the seeds'. Verdict, at α = "
        f"{ALPHA:g} on the Holm p-values: higher / lower (significant), equivalent (TOST), or inconclusive.",
        "",
        out.to_markdown(index=False, disable_numparse=True),
        "",
    ]


def exploratory_note() -> str:
    return (
        "*Exploratory: these differences were not declared as primary contrasts; their p-values are "
        "unadjusted and answer no question on their own.*"
    )
