"""Correctness scenarios: for each test image, right or wrong for the left hemisphere (fine), the right
hemisphere (coarse), the bilateral fine head and the bilateral coarse head: 2^4 = 16 scenarios.

Only the runs' saved predictions are read (predictions.npz), so this part needs no model or data.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from bilateral.analysis import figures
from bilateral.analysis.context import LEFT, RIGHT, SPECIALISED, SweepContext
from bilateral.analysis.report import Section, pm
from bilateral.errors import BilateralError

JUDGES = (
    "L",
    "R",
    "Bf",
    "Bc",
)  # left hemisphere, right hemisphere, bilateral fine head, bilateral coarse head
JUDGE_NAMES = {
    "L": "left hemisphere (fine)",
    "R": "right hemisphere (coarse)",
    "Bf": "bilateral fine head",
    "Bc": "bilateral coarse head",
}
# All right first; L and R vary slowest, so the 16 fill a 4x4 grid (rows: hemispheres, columns: heads).
FLAGS = list(itertools.product((True, False), repeat=4))


def scenario_name(flags: tuple[bool, ...], judges: tuple[str, ...] = JUDGES) -> str:
    """E.g. 'L- R- Bf+ Bc+': both hemispheres wrong, both bilateral heads right."""
    return " ".join(f"{j}{'+' if ok else '-'}" for j, ok in zip(judges, flags, strict=True))


SCENARIOS = [scenario_name(f) for f in FLAGS]

# name -> (description, function of the four boolean columns)
COMPLEMENTARITY = {
    "left wrong, bilateral fine right": lambda t: ~t.L & t.Bf,
    "left right, bilateral fine wrong": lambda t: t.L & ~t.Bf,
    "right wrong, bilateral coarse right": lambda t: ~t.R & t.Bc,
    "right right, bilateral coarse wrong": lambda t: t.R & ~t.Bc,
    "both hemispheres wrong, both heads right": lambda t: ~t.L & ~t.R & t.Bf & t.Bc,
    "both hemispheres right, both heads wrong": lambda t: t.L & t.R & ~t.Bf & ~t.Bc,
    "both hemispheres wrong, a head right": lambda t: ~t.L & ~t.R & (t.Bf | t.Bc),
    "a hemisphere right, both heads wrong": lambda t: (t.L | t.R) & ~t.Bf & ~t.Bc,
}


def correctness_table(
    left: dict[str, np.ndarray], right: dict[str, np.ndarray], bilateral: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One row per test image from three predictions.npz dicts of the same seed: test_index, labels,
    the four correctness flags L, R, Bf, Bc and the scenario name."""
    index = left["test_index"]
    for name, p in (("right hemisphere", right), ("bilateral", bilateral)):
        if not np.array_equal(p["test_index"], index):
            raise BilateralError(f"the {name} run was tested on other images than the left hemisphere")
    table = pd.DataFrame(
        {
            "test_index": index,
            "label_fine": left["label_fine"],
            "label_coarse": left["label_coarse"],
            "L": left["correct_fine"].astype(bool),
            "R": right["correct_coarse"].astype(bool),
            "Bf": bilateral["correct_fine"].astype(bool),
            "Bc": bilateral["correct_coarse"].astype(bool),
        }
    )
    table["scenario"] = [scenario_name(tuple(f)) for f in table[list(JUDGES)].to_numpy()]
    return table


def scenario_counts(table: pd.DataFrame) -> pd.Series:
    """Images per scenario, all 16 in SCENARIOS order (zeros included); sums to len(table)."""
    return table["scenario"].value_counts().reindex(SCENARIOS, fill_value=0).astype(int)


def complementarity(table: pd.DataFrame) -> pd.Series:
    return pd.Series({name: int(f(table).sum()) for name, f in COMPLEMENTARITY.items()})


def seed_tables(ctx: SweepContext, kind: str) -> dict[int, pd.DataFrame]:
    """Correctness tables of every seed that has both hemispheres and a finished `kind` run."""
    return {
        seed: correctness_table(
            ctx.predictions(ctx.run(seed, LEFT).run_id),
            ctx.predictions(ctx.run(seed, RIGHT).run_id),
            ctx.predictions(ctx.run(seed, kind).run_id),
        )
        for seed in ctx.seeds_with(LEFT, RIGHT, kind)
    }


def _mean_std(df: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    cols = [f"seed_{s}" for s in seeds]
    df["mean"] = df[cols].mean(axis=1)
    df["std"] = df[cols].std(axis=1, ddof=1) if len(cols) > 1 else np.nan
    return df


def run(ctx: SweepContext, out: Path) -> Section:
    kinds = [k for k in ctx.bilateral_rows if ctx.seeds_with(LEFT, RIGHT, k)]
    if not kinds:
        ctx.require("scenarios", LEFT, RIGHT, SPECIALISED)  # raises, naming what to train
    section = Section("1. Correctness scenarios")
    section.add(
        f"Each test image is right (+) or wrong (-) for the **L**eft hemisphere ({LEFT} run, fine "
        f"label), the **R**ight hemisphere ({RIGHT} run, coarse label), and the bilateral "
        "network's fine (**Bf**) and coarse (**Bc**) heads: 16 scenarios. Counts per seed on the runs' "
        "own test subset; mean ± std over seeds (sample std).",
        "",
    )
    per_image, counts, comp = [], [], []
    for kind in kinds:
        tables = seed_tables(ctx, kind)
        seeds = sorted(tables)
        for seed, t in tables.items():
            per_image.append(t.assign(bilateral=kind, seed=seed))
        c = pd.DataFrame({f"seed_{s}": scenario_counts(t) for s, t in tables.items()})
        c = _mean_std(c.rename_axis("scenario").reset_index(), seeds)
        c.insert(0, "bilateral", kind)
        counts.append(c)
        m = pd.DataFrame({f"seed_{s}": complementarity(t) for s, t in tables.items()})
        m = _mean_std(m.rename_axis("event").reset_index(), seeds)
        m.insert(0, "bilateral", kind)
        m["test_images"] = [np.mean([len(t) for t in tables.values()])] * len(m)
        comp.append(m)
        sizes = {s: len(t) for s, t in tables.items()}
        section.add(f"- **{kind}**: seeds {seeds}, test images per seed {sizes}.")
    section.add("")
    per_image_df = pd.concat(per_image, ignore_index=True)
    counts_df = pd.concat(counts, ignore_index=True)
    comp_df = pd.concat(comp, ignore_index=True)
    per_image_df.to_csv(out / "scenarios_per_image.csv", index=False)
    counts_df.to_csv(out / "scenario_counts.csv", index=False)
    comp_df.to_csv(out / "complementarity.csv", index=False)

    wide = pd.DataFrame({"scenario": SCENARIOS})
    for kind in kinds:
        c = counts_df[counts_df.bilateral == kind]
        wide[kind] = [pm(m, s, 1) for m, s in zip(c["mean"], c["std"], strict=True)]
    section.add("Images per scenario (mean ± std over seeds):", "")
    section.table(wide)
    cw = pd.DataFrame({"event": list(COMPLEMENTARITY)})
    for kind in kinds:
        c = comp_df[comp_df.bilateral == kind]
        cw[kind] = [pm(m, s, 1) for m, s in zip(c["mean"], c["std"], strict=True)]
    section.add(
        "Complementarity: where the bilateral heads fix or lose the hemispheres' answers "
        "(left/right = the hemisphere; fine/coarse = the bilateral head on the same label):",
        "",
    )
    section.table(cw)
    path = figures.scenario_bars(counts_df, comp_df, out / "figures" / "scenarios.png")
    section.figure(path, "Scenario counts and complementarity, mean ± std over seeds (dots: seeds)")
    section.add(
        "Files: `scenarios_per_image.csv` (one row per seed x bilateral run x test image), "
        "`scenario_counts.csv`, `complementarity.csv`."
    )
    return section
