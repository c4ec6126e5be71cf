"""Markdown for analysis/report.md and evaluation/report.md: each part returns a Section;
write_report joins them. A part that compares a quantity between rows or hemispheres records the
comparison (Section.compare_seeds: paired over seeds, with a 95% interval and a t-test, from
bilateral.stats); write_report lists every such test under one Holm adjustment per report and warns
when the seeds are too few."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bilateral.stats import difference, holm
from bilateral.store import write_atomic

MIN_SEEDS = 3  # fewer paired seeds: the report says its tests mean nothing


@dataclass
class Section:
    """One part's contribution to the report: a heading, markdown text, and the files it wrote."""

    title: str
    body: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    tests: list[pd.DataFrame] = field(default_factory=list)  # seed_tests() tables, Holm in write_report

    def compare_seeds(
        self, table: pd.DataFrame, value: str, within: list[str], compare: str, reference: str | None = None
    ) -> None:
        """Record, for each group of `within`, every level of `compare` minus `reference` (default:
        the first level) on `value`, paired over seeds."""
        tests = seed_tests(table, value, within, compare, reference)
        if not tests.empty:
            self.tests.append(tests.assign(quantity=value))

    def add(self, *lines: str) -> None:
        self.body.extend(lines)

    def table(self, df: pd.DataFrame, floatfmt: str = ".4f", numparse: bool = True) -> None:
        """numparse=False keeps pre-formatted string cells as they are."""
        self.body += [df.to_markdown(index=False, floatfmt=floatfmt, disable_numparse=not numparse), ""]

    def figure(self, path: Path, caption: str) -> None:
        """Embed a PNG that sits in the analysis directory (or below it) by its relative path."""
        self.body += [f"![{caption}]({path.parent.name}/{path.name})", "", f"*{caption}*", ""]
        self.files.append(path)


def pm(mean: float, std: float, digits: int = 3) -> str:
    """'mean ± std', or just the mean when std is undefined (one seed)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def seed_tests(
    table: pd.DataFrame, value: str, within: list[str], compare: str, reference: str | None = None
) -> pd.DataFrame:
    """One row per group of `within` and level of `compare` other than the reference: where (the
    group), comparison ("level − reference"), seeds, diff, low, high (95% t-interval) and p (paired
    t over the seeds both have; NaN with fewer than 2 or no spread)."""
    rows = []
    groups = table.groupby(within, sort=False) if within else [((), table)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        levels = list(dict.fromkeys(group[compare]))
        ref = reference if reference in levels else levels[0]
        base = group[group[compare] == ref].groupby("seed")[value].mean()
        for level in levels:
            if level == ref:
                continue
            other = group[group[compare] == level].groupby("seed")[value].mean()
            both = pd.concat([other, base], axis=1, join="inner").dropna()
            if both.empty:
                continue
            d = difference(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy(), paired=True)
            rows.append(
                {
                    "where": ", ".join(f"{c}={v}" for c, v in zip(within, key, strict=True)),
                    "comparison": f"{level} − {ref}",
                    "seeds": d.n,
                    "diff": d.mean,
                    "low": d.low,
                    "high": d.high,
                    "p": d.p,
                }
            )
    return pd.DataFrame(rows)


def tests_section(sections: list[Section]) -> list[str]:
    """Every comparison the parts recorded: difference, 95% interval, p, and Holm over all of them
    (one family per report); a bold line when fewer than MIN_SEEDS seeds pair up."""
    tables = [t.assign(part=s.title) for s in sections for t in s.tests]
    if not tables:
        return []
    tests = pd.concat(tables, ignore_index=True)
    tests["holm"] = holm([float(p) for p in tests["p"]])
    shown = pd.DataFrame(
        {
            "part": tests["part"],
            "quantity": tests["quantity"],
            "where": tests["where"],
            "comparison": tests["comparison"],
            "seeds": tests["seeds"],
            "Δ (95% CI)": [
                "—"
                if pd.isna(d)
                else f"{d:+.4f}"
                if pd.isna(lo) or lo == hi
                else f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                for d, lo, hi in zip(tests["diff"], tests["low"], tests["high"], strict=True)
            ],
            "p": tests["p"].map(lambda v: "—" if pd.isna(v) else f"{v:.3g}"),
            "Holm p": tests["holm"].map(lambda v: "—" if pd.isna(v) else f"{v:.3g}"),
        }
    )
    fewest = int(tests["seeds"].min())
    warning = (
        [
            f"**Too few seeds for these tests to mean anything**: as few as {fewest} paired seed(s) give "
            f"a t-test {max(fewest - 1, 0)} degree(s) of freedom. Run at least {MIN_SEEDS} seeds.",
            "",
        ]
        if fewest < MIN_SEEDS
        else []
    )
    return [
        "## Tests across seeds",
        "",
        "Each comparison the parts above make, paired over the seeds both sides have: the mean "
        "difference with its 95% t-interval, p from a two-sided paired t-test (— with fewer than 2 "
        f"seeds or no spread), and Holm over all {len(tests)} tests of this report.",
        "",
        *warning,
        shown.to_markdown(index=False, disable_numparse=True),
        "",
    ]


def write_report(
    out: Path,
    sweep: str,
    sections: list[Section],
    errors: dict[str, str],
    preamble: list[str],
    title: str = "Analysis",
) -> Path:
    lines = [f"# {title} of sweep `{sweep}`", "", *preamble, ""]
    if errors:
        lines += ["## Parts that could not run", ""]
        lines += [f"- **{part}**: {msg}" for part, msg in errors.items()]
        lines.append("")
    for section in sections:
        lines += [f"## {section.title}", "", *section.body, ""]
    lines += tests_section(sections)
    path = out / "report.md"
    write_atomic(path, "\n".join(lines).encode())
    return path
