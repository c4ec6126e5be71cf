"""Finished runs -> runs.csv (one row per run; fused_runs > 1: trained as one network with others,
its wall time is its share of theirs), summary.csv (one row per model x backbone), report.md.

summary.csv columns: model, backbone, seeds, fine_acc_mean, fine_acc_std, coarse_acc_mean,
coarse_acc_std, params, train_flops, inference_flops, compute_hours. Standard deviations are over
seeds (ddof from report.std_ddof, 1 by default; empty for one seed). train_flops is what one model
of the row cost to train (mean over seeds), including the runs it depends on, as compute_hours;
inference_flops what it costs per test image (bilateral.cost: counted on the network; frozen parts
cost their forward only). compute_hours is the wall time of the model's runs summed over seeds,
including the runs it depends on (a specialised bilateral net counts its hemispheres, an ensemble
its whole pool).
Ensemble pool members other than member 0 (the unilateral baseline itself) get no row of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bilateral import contrasts, fidelity, report_figures
from bilateral.contrasts import POINTS
from bilateral.cost import run_cost
from bilateral.data.sources import class_counts
from bilateral.kinds import all_kinds
from bilateral.plan import RunSpec
from bilateral.report_figures import t_interval
from bilateral.stats import holm
from bilateral.store import SweepStore, write_atomic

log = logging.getLogger(__name__)
MIN_PAIRS = 3  # fewer paired seeds: the report says its tests mean nothing


def reference_model() -> str:
    """The paper's model, the row every other is compared with (read from the kinds' registry when
    needed, not at import, so that plug-in kinds loaded later count)."""
    return next(kind.name for kind in all_kinds() if kind.reference)


RUN_COLUMNS = [
    "run_id",
    "model",
    "backbone",
    "seed",
    "member",
    "test_acc_fine",
    "test_acc_coarse",
    "test_acc_coarse_from_fine",
    "test_loss_fine",
    "test_loss_coarse",
    "val_score",
    "best_epoch",
    "epochs",
    "params",
    "trainable_params",
    "wall_time_s",
    "total_wall_time_s",
    "train_images_per_s",
    "device",
    "fused_runs",
    "base_model",
    "settings",
    "tested_checkpoint",
    "tested_epoch",
    "train_images",
    "train_flops",
    "total_train_flops",
    "inference_flops",
    "pairing",
]


def runs_table(records: list[dict]) -> pd.DataFrame:
    """One row per finished run, with total_wall_time_s = its own wall time plus its dependencies',
    its FLOPs (train_flops: its own training; total_train_flops: with its dependencies')."""
    by_id = {r["run_id"]: r for r in records}
    costs = {r["run_id"]: _flops(r) for r in records}

    def total(run_id: str, own: Callable[[dict], float]) -> float:
        r = by_id.get(run_id)
        return 0.0 if r is None else own(r) + sum(total(d, own) for d in r["spec"]["depends_on"])

    rows = [
        {
            "base_model": r["model"],  # records of older versions: no variants
            "settings": "",
            "tested_checkpoint": "best",
            **r,
            "total_wall_time_s": total(r["run_id"], lambda rec: rec["wall_time_s"]),
            "train_flops": costs[r["run_id"]][0],
            "total_train_flops": total(r["run_id"], lambda rec: costs[rec["run_id"]][0]),
            "inference_flops": costs[r["run_id"]][1],
            "fused_runs": len(r.get("fused_with") or []) or 1,
            "pairing": r.get("pairing") or r["spec"].get("data", {}).get("pairing", "run"),  # before: "run"
        }
        for r in records
    ]
    df = pd.DataFrame(rows).reindex(columns=RUN_COLUMNS)
    return df.sort_values(["model", "backbone", "seed", "member"], ignore_index=True)


def _flops(record: dict) -> tuple[float, float]:
    """(training FLOPs of the run itself, inference FLOPs per image) from its spec and the images it
    trained on; NaN where the record does not say (older records, data without known class counts)."""
    spec, classes = record["spec"], None
    if "kind" in spec and "image_size" in record:
        classes = class_counts(spec["data"]["source"])
    if classes is None:
        return np.nan, np.nan
    # the cost depends on the network, not on the seed: one count per row
    identity = {**spec, "seed": 0, "member": 0, "depends_on": []}
    cost = run_cost(RunSpec.from_dict(identity), *classes, record["image_size"])
    return float(cost.training_flops(record.get("train_images", 0))), float(cost.inference_flops)


def summarize(runs: pd.DataFrame, ddof: int = 1) -> pd.DataFrame:
    rows = runs[runs["member"] == 0].groupby(["model", "backbone"], sort=True)
    summary = rows.agg(
        seeds=("seed", "nunique"),
        fine_acc_mean=("test_acc_fine", "mean"),
        fine_acc_std=("test_acc_fine", lambda s: _std(s, ddof)),
        coarse_acc_mean=("test_acc_coarse", "mean"),
        coarse_acc_std=("test_acc_coarse", lambda s: _std(s, ddof)),
        params=("params", "max"),
        train_flops=("total_train_flops", "mean"),
        inference_flops=("inference_flops", "max"),
        compute_hours=("total_wall_time_s", lambda s: s.sum() / 3600),
    )
    return summary.reset_index()


def _std(values: pd.Series, ddof: int) -> float:
    values = values.dropna()
    return float(values.std(ddof=ddof)) if len(values) > 1 else np.nan


def paired_differences(runs: pd.DataFrame, ddof: int = 1) -> pd.DataFrame:
    """Each baseline minus the reference row on the same seeds, with a paired t-test over seeds."""
    runs = runs[runs["member"] == 0]
    name = reference_model()
    reference = runs[runs["model"] == name]
    if reference.empty:
        return pd.DataFrame()
    reference = reference[reference["backbone"] == sorted(reference["backbone"])[0]].set_index("seed")
    out = []
    for (model, backbone), group in runs[runs["model"] != name].groupby(["model", "backbone"]):
        out.append({"model": model, "backbone": backbone, **_paired(group, reference, ddof)})
    return pd.DataFrame(out)


def setting_effects(runs: pd.DataFrame, ddof: int = 1) -> pd.DataFrame:
    """Each row trained under settings of its own (a comparison row's `settings`, or a run such a
    row depends on) minus the row it varies, on the same backbone and seeds: what each setting does."""
    runs = runs[runs["member"] == 0]
    out = []
    for (model, backbone), group in runs[runs["settings"].fillna("") != ""].groupby(["model", "backbone"]):
        base_model = group["base_model"].iloc[0]
        base = runs[(runs["model"] == base_model) & (runs["backbone"] == backbone)]
        if base.empty:
            continue
        effect = {
            "model": model,
            "of": base_model,
            "backbone": backbone,
            "settings": group["settings"].iloc[0],
        }
        out.append({**effect, **_paired(group, base.set_index("seed"), ddof)})
    return pd.DataFrame(out)


def _paired(group: pd.DataFrame, reference: pd.DataFrame, ddof: int) -> dict:
    """{pairs, <head>_diff_mean, <head>_diff_std, <head>_ci (95% half width), <head>_p}: group minus
    reference, seed by seed."""
    paired = group.set_index("seed").join(reference.add_suffix("_ref"), how="inner")
    row: dict = {"pairs": len(paired)}
    for head in ("fine", "coarse"):
        diff = (paired[f"test_acc_{head}"] - paired[f"test_acc_{head}_ref"]).dropna()
        row[f"{head}_diff_mean"] = diff.mean() if len(diff) else np.nan
        row[f"{head}_diff_std"] = _std(diff, ddof)
        row[f"{head}_ci"] = t_interval(diff)[1]
        row[f"{head}_p"] = _paired_p(diff)
    return row


def with_holm(diffs: pd.DataFrame) -> pd.DataFrame:
    """<head>_p_holm: every p-value of the table (both heads, every row) adjusted as one family."""
    if diffs.empty:
        return diffs
    flat = holm([*diffs["fine_p"], *diffs["coarse_p"]])
    n = len(diffs)
    return diffs.assign(fine_p_holm=flat[:n], coarse_p_holm=flat[n:])


def too_few_seeds(pairs: int) -> str | None:
    """What a reader should be told when the seeds are too few for a test to mean anything."""
    if pairs >= MIN_PAIRS:
        return None
    return (
        f"**Too few seeds for these tests to mean anything**: {pairs} paired seed(s) give a t-test "
        f"{max(pairs - 1, 0)} degree(s) of freedom, so its p-values and intervals say almost nothing. "
        f"Run at least {MIN_PAIRS} seeds (5 for the paper's protocol: `--seeds 0-4`)."
    )


REAL_COMPARISON = "python launch/sweep.py --preset paper --cluster slurm"  # CIFAR-100, width 1, 5 seeds
CPU_COMPARISON = (  # the smallest real comparison: 2 CPU cores, about 10 epochs
    "python launch/sweep.py --preset small --experiment core --data cifar10-hier4:../shared/data/cifar10-jpg"
)
# Below any of these a sweep checks the machinery and answers nothing (the `small` preset is the
# smallest real comparison: width 1/4, CIFAR-10's 45,000 training images, 10 epochs).
MIN_WIDTH = 0.25
MIN_TRAIN_IMAGES = 40_000  # per epoch
MIN_EPOCHS = 10


def scale_shortfalls(config: dict, runs: pd.DataFrame | None = None) -> list[str]:
    """What in the scale that was run falls short of a real comparison: width, training images per
    epoch (counted by the runs where their records say, else the config's subset), epochs, synthetic
    data. [] when nothing does, whatever the preset is called."""
    data, train, model = config.get("data", {}), config.get("train", {}), config.get("model", {})
    short = []
    width = model.get("width", 1.0)
    if width < MIN_WIDTH:
        short.append(f"width {width:g} of the paper's (a real comparison: {MIN_WIDTH:g} or more)")
    images = _images_per_epoch(runs) or data.get("train_subset")
    if images and images < MIN_TRAIN_IMAGES:
        short.append(f"{images:,} training images an epoch ({MIN_TRAIN_IMAGES:,} or more)")
    epochs = train.get("epochs")
    if epochs is not None and epochs < MIN_EPOCHS:
        short.append(f"{epochs} epochs ({MIN_EPOCHS} or more)")
    if data.get("source", "").split(":")[0] == "synthetic":
        short.append("synthetic images (real ones: CIFAR-10 or CIFAR-100)")
    return short


def _images_per_epoch(runs: pd.DataFrame | None) -> int | None:
    """The most images any run trained on per epoch, from its record (train_images / epochs)."""
    if runs is None or "train_images" not in runs:
        return None
    per_epoch = (runs["train_images"] / runs["epochs"]).dropna()
    per_epoch = per_epoch[per_epoch > 0]
    return int(per_epoch.max()) if len(per_epoch) else None


def toy_scale_banner(config: dict, runs: pd.DataFrame | None = None) -> str | None:
    """What a reader of a toy-scale sweep's table must be told first: its numbers check the
    machinery, they are not findings (None for a sweep at the scale of a real comparison)."""
    short = scale_shortfalls(config, runs)
    if not short:
        return None
    return (
        "> **A machinery check at toy scale, not a result.** This sweep ran below the scale of a real "
        f"comparison: {'; '.join(short)}. Its accuracies and p-values show that the pipeline runs and "
        "say nothing about hemispheric specialisation. For a real comparison on 2 CPU cores: "
        f"`{CPU_COMPARISON}`; on GPUs (CIFAR-100, full width, 5 seeds, 180 epochs): `{REAL_COMPARISON}` "
        "(or `--cluster ray`, or `--preset fast` for a 40-epoch protocol)."
    )


def _paired_p(diff: pd.Series) -> float:
    if len(diff) < 2 or np.allclose(diff, diff.iloc[0]):
        return np.nan
    return float(stats.ttest_1samp(diff, 0.0).pvalue)  # = ttest_rel on the pairs


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f} ± {std:.4f}"


def _pm_column(df: pd.DataFrame, mean: str, std: str) -> list[str]:
    return [_pm(m, s) for m, s in zip(df[mean], df[std], strict=True)]


def _diff_table(diffs: pd.DataFrame, label: dict[str, pd.Series], adjusted: bool = True) -> str:
    """adjusted: Holm over this table; False: exploratory, unadjusted p-values only."""
    diffs = with_holm(diffs)

    def p(column: str) -> pd.Series:
        return diffs[column].map(lambda v: "—" if pd.isna(v) else f"{v:.3g}")

    def ci(head: str) -> list[str]:
        return [
            "—" if pd.isna(h) else f"[{m - h:+.4f}, {m + h:+.4f}]"
            for m, h in zip(diffs[f"{head}_diff_mean"], diffs[f"{head}_ci"], strict=True)
        ]

    table = pd.DataFrame(
        {
            **label,
            "pairs": diffs["pairs"],
            "Δ fine": _pm_column(diffs, "fine_diff_mean", "fine_diff_std"),
            "95% CI (fine)": ci("fine"),
            "p (fine)": p("fine_p"),
            "Holm p (fine)": p("fine_p_holm"),
            "Δ coarse": _pm_column(diffs, "coarse_diff_mean", "coarse_diff_std"),
            "95% CI (coarse)": ci("coarse"),
            "p (coarse)": p("coarse_p"),
            "Holm p (coarse)": p("coarse_p_holm"),
        }
    )
    if not adjusted:
        table = table.drop(columns=["Holm p (fine)", "Holm p (coarse)"])
    return table.to_markdown(index=False)


def markdown(
    runs: pd.DataFrame,
    sweep: str,
    damaged: dict[str, str] | None = None,
    config: dict | None = None,
    figures: list[tuple[str, str]] | None = None,
    store: SweepStore | None = None,
    primary: pd.DataFrame | None = None,
) -> str:
    """report.md: the declared primary contrasts (if any), the summary, each baseline against the
    reference, each row's own settings against the row it varies, and, for the authors' setting, how
    the hemispheres compare with their figures. config is the sweep's (sweep.json): its
    report.std_ddof, its comparison and what the fidelity check needs. figures: (path relative to the
    sweep, caption) of each figure to embed. store: where the runs' predictions are, for the image
    bootstrap of the primary contrasts (without it, that interval is left out). primary: their
    table when already computed (write_report computes it once for the table and the forest plot)."""
    config = config or {}
    comparison = contrasts.declared(config)
    ddof = config.get("report", {}).get("std_ddof", 1)
    summary, diffs, effects = (
        summarize(runs, ddof),
        paired_differences(runs, ddof),
        setting_effects(runs, ddof),
    )
    table = pd.DataFrame(
        {
            "model": summary["model"],
            "backbone": summary["backbone"],
            "seeds": summary["seeds"],
            "fine acc": _pm_column(summary, "fine_acc_mean", "fine_acc_std"),
            "coarse acc": _pm_column(summary, "coarse_acc_mean", "coarse_acc_std"),
            "params": summary["params"].map(lambda p: f"{int(p):,}" if pd.notna(p) else "—"),
            "train PFLOPs": summary["train_flops"].map(lambda f: f"{f / 1e15:.3g}" if pd.notna(f) else "—"),
            "MFLOPs / image": summary["inference_flops"].map(
                lambda f: f"{f / 1e6:.1f}" if pd.notna(f) else "—"
            ),
            "compute h": summary["compute_hours"].map(lambda h: f"{h:.3f}"),
        }
    )
    last = sorted(set(runs.loc[runs["tested_checkpoint"] == "last", "model"]))
    tested = f"; tested at the last epoch: {', '.join(last)}" if last else ""
    text = [
        f"# Sweep `{sweep}`",
        "",
        *([banner, ""] if (banner := toy_scale_banner(config, runs)) else []),
        *(
            contrasts.markdown(
                primary if primary is not None else contrasts.primary(runs, comparison, config, store),
                comparison,
            )
            if comparison
            else []
        ),
        f"Test accuracy, mean ± std over seeds (ddof={ddof}; checkpoints chosen on validation{tested}).",
        "",
        table.to_markdown(index=False),
        "",
    ]
    tuned = config.get("tuned") or {}
    if tuned.get("rows"):  # bilateral/tuning: each row's settings chosen on validation, same budget
        text += [
            f"Rows trained with the settings tuned for them ({tuned['source']}; the search space, budget "
            f"and choices are in report.md beside it): {', '.join(tuned['rows'])}.",
            "",
        ]
    if figures is not None:
        text += [f"![{caption}]({path})\n\n*{caption}*\n" for path, caption in figures] or [
            "(No figures: they need matplotlib, `pip install -e '.[analysis]'`; then rerun "
            "`python launch/aggregate.py` on this sweep.)",
            "",
        ]
    paired = (
        "Paired over seeds: mean ± std of the differences, their 95% t-interval, p from a two-sided "
        "paired t-test (— when fewer than 2 pairs)"
        + (
            f". {contrasts.exploratory_note()}"
            if comparison
            else " and Holm-corrected over every test of the table."
        )
    )
    lead = "Exploratory: e" if comparison else "E"
    pairs = [int(t["pairs"].max()) for t in (diffs, effects) if not t.empty]
    warning = too_few_seeds(max(pairs)) if pairs else None
    if warning:
        text += [warning, ""]
    if not diffs.empty:
        label = {"baseline": diffs["model"] + " / " + diffs["backbone"]}
        text += [
            f"## {lead}ach baseline minus {reference_model()}",
            "",
            paired,
            "",
            _diff_table(diffs, label, adjusted=comparison is None),
            "",
        ]
    if not effects.empty:
        label = {"row": effects["model"], "minus": effects["of"] + " / " + effects["backbone"]}
        text += [
            f"## {lead}ach row's own settings: the row minus the row it varies",
            "",
            f"{paired} Settings per row: "
            + "; ".join(f"{m}: {st}" for m, st in zip(effects["model"], effects["settings"], strict=True)),
            "",
            _diff_table(effects, label, adjusted=comparison is None),
            "",
        ]
    if fidelity.reference_applies(config):
        text += ["## Beside the authors' figures", "", fidelity.reference_table(summary), ""]
    if fidelity.applies(config):
        outside = fidelity.outside_bands(summary)
        verdict = [f"- {line}" for line in outside] or ["- both hemispheres lie within the authors' bands"]
        bands = ", ".join(f"{b.model} {b.head} {b.low:.2f}-{b.high:.2f}" for b in fidelity.BANDS)
        text += [
            "## Against the authors' figures",
            "",
            f"Bands: {bands} (from {fidelity.SOURCE}).",
            "",
            *verdict,
            "",
        ]
    if damaged:
        text += ["## Left out: damaged records", "", *[f"- {run}: {why}" for run, why in damaged.items()], ""]
    return "\n".join(text)


def write_report(sweep_root: str | Path, copy_summary_to: str | Path | None = None) -> dict[str, str]:
    """Write runs.csv, summary.csv and report.md into the sweep directory from every readable
    record; return {run_id: what is wrong} of the runs left out because their record is damaged."""
    store = SweepStore(sweep_root)
    records, damaged = store.read_records()
    if not records:
        problem = f"; damaged: {' '.join(damaged.values())}" if damaged else ""
        raise FileNotFoundError(f"no finished runs under {store.root / 'runs'}: run the sweep first{problem}")
    config = store.read_config()  # validated when the sweep began
    runs = runs_table(records)
    ddof = config.get("report", {}).get("std_ddof", 1)
    summary = summarize(runs, ddof)
    write_atomic(store.root / "runs.csv", runs.to_csv(index=False).encode())
    write_atomic(store.root / "summary.csv", summary.to_csv(index=False).encode())
    comparison = contrasts.declared(config)
    primary = contrasts.primary(runs, comparison, config, store) if comparison else None
    differences = _forest_rows(primary, paired_differences(runs, ddof), setting_effects(runs, ddof))
    figures = _figures(store, runs, summary, differences, comparison.margin if comparison else None)
    report = markdown(runs, store.root.name, damaged, config, figures, store, primary)
    write_atomic(store.root / "report.md", report.encode())
    if copy_summary_to is not None:
        write_atomic(Path(copy_summary_to), summary.to_csv(index=False).encode())
    if fidelity.applies(config):
        for line in fidelity.outside_bands(summary):
            log.warning("%s: %s (see report.md)", store.root.name, line)
    return damaged


def _forest_rows(primary: pd.DataFrame | None, diffs: pd.DataFrame, effects: pd.DataFrame) -> pd.DataFrame:
    """The forest plot's rows, in points: the primary contrasts, then every other difference of the
    report (each baseline minus the reference, each row's settings minus the row it varies)."""
    rows = []
    if primary is not None:
        rows += [
            {
                "label": r.contrast,
                "head": r.head,
                "kind": "primary",
                "diff": r.diff,
                "low": r.low,
                "high": r.high,
            }
            | {"both_low": r.both_low, "both_high": r.both_high}
            for r in primary.itertuples()
        ]
    reference = reference_model()
    for table, label in (
        (diffs, lambda d: f"{d.model} / {d.backbone} − {reference}"),
        (effects, lambda d: f"{d.model} − {d.of}"),
    ):
        for d in table.itertuples():
            for head in ("fine", "coarse"):
                mean, half = getattr(d, f"{head}_diff_mean") * POINTS, getattr(d, f"{head}_ci") * POINTS
                if not pd.isna(mean):
                    rows.append(
                        {"label": label(d), "head": head, "kind": "other", "diff": mean}
                        | {"low": mean - half, "high": mean + half}
                    )
    return pd.DataFrame(rows)


def _figures(
    store: SweepStore,
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    differences: pd.DataFrame,
    margin: float | None,
) -> list[tuple[str, str]]:
    """Draw the report's figures into <sweep>/figures; [] (and a warning) without matplotlib."""
    if not report_figures.available():
        log.warning(
            "%s: no figures in report.md: they need matplotlib (pip install -e '.[analysis]')", store.root
        )
        return []
    out = store.root / "figures"
    drawn = []
    if not differences.empty:
        drawn.append(
            (
                report_figures.forest(differences, margin, out / "forest.png"),
                "Differences in test accuracy (points) with 95% CIs: primary contrasts first, then the "
                "exploratory ones; the band is the equivalence margin",
            )
        )
    curves = report_figures.curves(store, runs)
    if not curves.empty:
        path = report_figures.learning_curves(curves, out / "learning_curves.png")
        drawn.append(
            (path, "Validation accuracy per head and training loss against epoch; x: each run's chosen epoch")
        )
    drawn.append(
        (
            report_figures.comparison(runs, out / "comparison.png"),
            "Test accuracy per row: each seed (dots) and the mean with its 95% CI over seeds",
        )
    )
    drawn.append(
        (
            report_figures.accuracy_vs_cost(summary, out / "accuracy_vs_cost.png"),
            "Accuracy against training FLOPs (one model, with what it depends on)",
        )
    )
    return [(str(path.relative_to(store.root)), caption) for path, caption in drawn]
