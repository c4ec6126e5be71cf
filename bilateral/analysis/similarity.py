"""Cosine similarity of pairs of test images with the same fine label, in four representations:

  left       the left hemisphere run's penultimate features
  right      the right hemisphere run's penultimate features
  concat     the plain concatenation [left, right] of those independently trained hemispheres
  bilateral  the unspecialised bilateral network's concatenated features (trained end to end)

A specialised bilateral net reads its frozen hemispheres, so its features *are* `concat` (checked
numerically; they differ only with model.frozen_bn_update=true, and are then added as a fifth
representation). That is why `bilateral` is the unspecialised net when the sweep has one; without
it, `bilateral` falls back to the specialised net and equals `concat`.

Pairs are grouped by correctness scenario: a pair belongs to a scenario when both images are in it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bilateral.analysis import figures
from bilateral.analysis.context import LEFT, RIGHT, SPECIALISED, UNSPECIALISED, Check, SweepContext
from bilateral.analysis.report import Section, pm
from bilateral.analysis.scenarios import SCENARIOS, correctness_table, scenario_name

ALL = "all same-class pairs"


def normalise_rows(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero, so its similarities are 0)."""
    f = np.asarray(features, dtype=np.float64)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return np.divide(f, norm, out=np.zeros_like(f), where=norm > 0)


def same_class_pairs(
    features: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray | None = None
) -> pd.DataFrame:
    """Every pair i < j of images with the same label: columns i, j, label, group_i, group_j and the
    cosine similarity of the pair in each representation of `features` (name -> (N, D) array)."""
    groups = np.zeros(len(labels), dtype=object) if groups is None else np.asarray(groups, dtype=object)
    unit = {name: normalise_rows(f) for name, f in features.items()}
    chunks = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        a, b = np.triu_indices(len(idx), k=1)
        if not len(a):
            continue
        chunk = {
            "i": idx[a],
            "j": idx[b],
            "label": label,
            "group_i": groups[idx[a]],
            "group_j": groups[idx[b]],
        }
        for name, u in unit.items():
            chunk[name] = (u[idx] @ u[idx].T)[a, b].astype(np.float32)
        chunks.append(pd.DataFrame(chunk))
    columns = ["i", "j", "label", "group_i", "group_j", *features]
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=columns)


def summarize(pairs: pd.DataFrame, reps: list[str], scenarios: list[str]) -> pd.DataFrame:
    """Per scenario (pairs with both images in it) and over all same-class pairs: number of pairs,
    mean, std and median similarity per representation, and the left-right correlation."""
    rows = []
    for scenario in [ALL, *scenarios]:
        if scenario == ALL:
            sel = pairs
        else:
            sel = pairs[(pairs.group_i == scenario) & (pairs.group_j == scenario)]
        row = {"scenario": scenario, "pairs": len(sel)}
        for rep in reps:
            v = sel[rep].to_numpy(np.float64)
            row[f"{rep}_mean"] = v.mean() if len(v) else np.nan
            row[f"{rep}_std"] = v.std() if len(v) else np.nan
            row[f"{rep}_median"] = np.median(v) if len(v) else np.nan
        ok = len(sel) > 2 and sel["left"].std() > 0 and sel["right"].std() > 0
        row["corr_left_right"] = float(np.corrcoef(sel["left"], sel["right"])[0, 1]) if ok else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def seed_features(ctx: SweepContext, seed: int) -> tuple[dict[str, np.ndarray], str]:
    """The representations of one seed, and which run `bilateral` came from."""
    runs = ctx.seeds[seed]
    left = ctx.features(runs[LEFT])["all"]
    right = ctx.features(runs[RIGHT])["all"]
    reps = {"left": left, "right": right, "concat": np.concatenate([left, right], axis=1)}
    source = ""
    if SPECIALISED in runs:
        spec = ctx.features(runs[SPECIALISED])["all"]
        diff = float(np.abs(spec - reps["concat"]).max()) if spec.shape == reps["concat"].shape else np.inf
        scale = float(np.abs(reps["concat"]).max()) or 1.0
        same = diff <= 1e-4 * scale
        ctx.checks.append(
            Check(f"seed {seed}: max |{SPECIALISED} features - concat| (relative)", diff / scale, True)
        )
        if not same:
            reps[SPECIALISED] = spec
    if UNSPECIALISED in runs:
        reps["bilateral"], source = ctx.features(runs[UNSPECIALISED])["all"], runs[UNSPECIALISED].run_id
    elif SPECIALISED in runs:
        reps["bilateral"], source = ctx.features(runs[SPECIALISED])["all"], runs[SPECIALISED].run_id
    for row in ctx.bilateral_rows:  # other bilateral rows (callosal nets): their [left, right] streams
        if row not in (SPECIALISED, UNSPECIALISED) and row in runs:
            reps[row] = ctx.features(runs[row])["all"]
    return reps, source


def run(ctx: SweepContext, out: Path, plot_points: int = 3000) -> Section:
    seeds = ctx.require("feature similarity", LEFT, RIGHT)
    section = Section("3. Feature similarity")
    summaries, sources, figs = [], {}, []
    for seed in seeds:
        reps, source = seed_features(ctx, seed)
        sources[seed] = source
        bil = ctx.bilateral_kind(seed, prefer=SPECIALISED)
        runs = ctx.seeds[seed]
        if bil is not None:
            table = correctness_table(*(ctx.predictions(runs[k].run_id) for k in (LEFT, RIGHT, bil)))
            groups, scenarios = table["scenario"].to_numpy(), SCENARIOS
        else:
            p = [
                ctx.predictions(runs[LEFT].run_id)["correct_fine"],
                ctx.predictions(runs[RIGHT].run_id)["correct_coarse"],
            ]
            groups = np.array(
                [scenario_name((bool(a), bool(b)), ("L", "R")) for a, b in zip(*p, strict=True)]
            )
            scenarios = [
                scenario_name(f, ("L", "R"))
                for f in ((True, True), (True, False), (False, True), (False, False))
            ]
        labels = ctx.predictions(runs[LEFT].run_id)["label_fine"]
        pairs = same_class_pairs(reps, labels, groups)
        s = summarize(pairs, list(reps), scenarios)
        s.insert(0, "seed", seed)
        summaries.append(s)
        colour = "bilateral" if "bilateral" in reps else "concat"
        figs.append(
            figures.similarity_joint(
                pairs,
                scenarios,
                colour,
                f"Same-fine-label pairs, seed {seed}: cosine similarity per scenario "
                f"(colour = {colour}{' = ' + source if source else ''})",
                out / "figures" / f"similarity_joint_seed{seed}.png",
                max_points=plot_points,
                seed=seed,
            )
        )
    summary = pd.concat(summaries, ignore_index=True)
    summary.to_csv(out / "similarity_summary.csv", index=False)
    reps = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    agg = summary.groupby("scenario", sort=False).agg(
        seeds=("seed", "nunique"),
        pairs=("pairs", "mean"),
        **{f"{r}_mean": (f"{r}_mean", "mean") for r in reps},
        **{f"{r}_std_over_seeds": (f"{r}_mean", "std") for r in reps},
        corr_left_right=("corr_left_right", "mean"),
    )
    agg = agg.reset_index()
    agg.to_csv(out / "similarity_summary_mean.csv", index=False)
    section.add(
        "Cosine similarity of every pair of test images with the same fine label. Representations: "
        f"**left** = {LEFT} features, **right** = {RIGHT} features, **concat** = "
        "their plain concatenation (independently trained hemispheres), **bilateral** = "
        + ", ".join(f"seed {s}: `{src}`" for s, src in sources.items() if src)
        + f". The {UNSPECIALISED} net is used when there is one because a specialised net's "
        "features are exactly `concat` (its hemispheres are the frozen hemisphere runs; see the checks "
        "below). Pairs are grouped by scenario when both images are in it."
        + (
            " The labels are independent here (no hierarchy): a same-fine-label pair shares its "
            "local class only, so `right` (trained on the other label) has no reason to group it."
            if ctx.independent_labels
            else ""
        ),
        "",
        "Mean similarity (mean ± std over seeds of each seed's mean over pairs), and the mean "
        "left-right correlation over pairs:",
        "",
    )
    table = pd.DataFrame({"scenario": agg["scenario"], "pairs/seed": agg["pairs"].map(lambda v: f"{v:,.1f}")})
    for r in reps:
        table[r] = [pm(m, s) for m, s in zip(agg[f"{r}_mean"], agg[f"{r}_std_over_seeds"], strict=True)]
    table["corr(left, right)"] = agg["corr_left_right"].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}")
    section.table(table, numparse=False)
    path = figures.similarity_bars(agg, reps, out / "figures" / "similarity_by_scenario.png")
    section.figure(path, "Mean same-class cosine similarity per scenario and representation")
    section.figure(figs[0], f"Joint plot per scenario, seed {seeds[0]} (as the paper's figure 10)")
    section.files += figs[1:]
    if len(figs) > 1:
        section.add("Other seeds: " + ", ".join(f"`figures/{p.name}`" for p in figs[1:]) + ".", "")
    section.add("Files: `similarity_summary.csv` (per seed), `similarity_summary_mean.csv`.")
    return section
