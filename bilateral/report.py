"""Finished runs -> runs.csv (one row per run; fused_runs > 1: trained as one network with others,
its wall time is its share of theirs), summary.csv (one row per model x backbone), report.md.

summary.csv columns: model, backbone, seeds, fine_acc_mean, fine_acc_std, coarse_acc_mean,
coarse_acc_std, params, compute_hours. Standard deviations are over seeds (ddof=1; empty for one
seed). compute_hours is the wall time of the model's runs summed over seeds, including the runs it
depends on (a specialised bilateral net counts its hemispheres, an ensemble its whole pool).
Ensemble pool members other than member 0 (the unilateral baseline itself) get no row of their own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bilateral.kinds import all_kinds
from bilateral.store import SweepStore, write_atomic

REFERENCE = next(kind.name for kind in all_kinds() if kind.reference)  # the paper's model
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
]


def runs_table(records: list[dict]) -> pd.DataFrame:
    """One row per finished run, with total_wall_time_s = its own wall time plus its dependencies'."""
    by_id = {r["run_id"]: r for r in records}

    def total(run_id: str) -> float:
        r = by_id.get(run_id)
        return 0.0 if r is None else r["wall_time_s"] + sum(total(d) for d in r["spec"]["depends_on"])

    rows = [
        {**r, "total_wall_time_s": total(r["run_id"]), "fused_runs": len(r.get("fused_with") or []) or 1}
        for r in records
    ]
    df = pd.DataFrame(rows).reindex(columns=RUN_COLUMNS)
    return df.sort_values(["model", "backbone", "seed", "member"], ignore_index=True)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    rows = runs[runs["member"] == 0].groupby(["model", "backbone"], sort=True)
    summary = rows.agg(
        seeds=("seed", "nunique"),
        fine_acc_mean=("test_acc_fine", "mean"),
        fine_acc_std=("test_acc_fine", "std"),
        coarse_acc_mean=("test_acc_coarse", "mean"),
        coarse_acc_std=("test_acc_coarse", "std"),
        params=("params", "max"),
        compute_hours=("total_wall_time_s", lambda s: s.sum() / 3600),
    )
    return summary.reset_index()


def paired_differences(runs: pd.DataFrame) -> pd.DataFrame:
    """Each baseline minus the reference row on the same seeds, with a paired t-test over seeds."""
    runs = runs[runs["member"] == 0]
    reference = runs[runs["model"] == REFERENCE]
    if reference.empty:
        return pd.DataFrame()
    reference = reference[reference["backbone"] == sorted(reference["backbone"])[0]].set_index("seed")
    out = []
    for (model, backbone), group in runs[runs["model"] != REFERENCE].groupby(["model", "backbone"]):
        paired = group.set_index("seed").join(reference.add_suffix("_ref"), how="inner")
        row = {"model": model, "backbone": backbone, "pairs": len(paired)}
        for head in ("fine", "coarse"):
            diff = (paired[f"test_acc_{head}"] - paired[f"test_acc_{head}_ref"]).dropna()
            row[f"{head}_diff_mean"] = diff.mean() if len(diff) else np.nan
            row[f"{head}_diff_std"] = diff.std() if len(diff) > 1 else np.nan
            row[f"{head}_p"] = _paired_p(diff)
        out.append(row)
    return pd.DataFrame(out)


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


def markdown(
    summary: pd.DataFrame, diffs: pd.DataFrame, sweep: str, damaged: dict[str, str] | None = None
) -> str:
    table = pd.DataFrame(
        {
            "model": summary["model"],
            "backbone": summary["backbone"],
            "seeds": summary["seeds"],
            "fine acc": _pm_column(summary, "fine_acc_mean", "fine_acc_std"),
            "coarse acc": _pm_column(summary, "coarse_acc_mean", "coarse_acc_std"),
            "params": summary["params"].map(lambda p: f"{int(p):,}" if pd.notna(p) else "—"),
            "compute h": summary["compute_hours"].map(lambda h: f"{h:.3f}"),
        }
    )
    text = [
        f"# Sweep `{sweep}`",
        "",
        "Test accuracy, mean ± std over seeds (checkpoints chosen on validation).",
        "",
        table.to_markdown(index=False),
        "",
    ]
    if not diffs.empty:
        d = pd.DataFrame(
            {
                "baseline": diffs["model"] + " / " + diffs["backbone"],
                "pairs": diffs["pairs"],
                "Δ fine": _pm_column(diffs, "fine_diff_mean", "fine_diff_std"),
                "p (fine)": diffs["fine_p"].map(lambda p: "—" if pd.isna(p) else f"{p:.3g}"),
                "Δ coarse": _pm_column(diffs, "coarse_diff_mean", "coarse_diff_std"),
                "p (coarse)": diffs["coarse_p"].map(lambda p: "—" if pd.isna(p) else f"{p:.3g}"),
            }
        )
        text += [
            f"## Each baseline minus {REFERENCE}",
            "",
            "Paired over seeds; p from a two-sided paired t-test (— when fewer than 2 pairs).",
            "",
            d.to_markdown(index=False),
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
    runs = runs_table(records)
    summary = summarize(runs)
    diffs = paired_differences(runs)
    write_atomic(store.root / "runs.csv", runs.to_csv(index=False).encode())
    write_atomic(store.root / "summary.csv", summary.to_csv(index=False).encode())
    write_atomic(store.root / "report.md", markdown(summary, diffs, store.root.name, damaged).encode())
    if copy_summary_to is not None:
        write_atomic(Path(copy_summary_to), summary.to_csv(index=False).encode())
    return damaged
