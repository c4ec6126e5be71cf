"""Markdown for analysis/report.md: each part returns a Section; write_report joins them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bilateral.store import write_atomic


@dataclass
class Section:
    """One part's contribution to the report: a heading, markdown text, and the files it wrote."""

    title: str
    body: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

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
    path = out / "report.md"
    write_atomic(path, "\n".join(lines).encode())
    return path
