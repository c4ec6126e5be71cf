"""Running the parts of a report on a finished sweep (the analysis, the evaluation): each part
returns a Section; a part that cannot run, or fails, is recorded and the others still run."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bilateral.analysis.report import Section
from bilateral.errors import BilateralError

log = logging.getLogger(__name__)


@dataclass
class PartsResult:
    out: Path  # <sweep>/analysis or <sweep>/evaluation
    report: Path  # its report.md
    done: list[str] = field(default_factory=list)  # parts that ran
    errors: dict[str, str] = field(default_factory=dict)  # part -> why it could not run
    damaged: dict[str, str] = field(default_factory=dict)  # run -> what is wrong with its record
    seconds: dict[str, float] = field(default_factory=dict)

    def problems(self, what: str) -> list[str]:
        """One line per part that could not run and per run left out, for stderr."""
        return [
            *(f"{part} could not run: {error}" for part, error in self.errors.items()),
            *(f"{run_id} left out of the {what}: {why}" for run_id, why in self.damaged.items()),
        ]

    def exit_status(self) -> int:
        """0 when every part ran on every run, 1 when some part could not or a record is damaged,
        2 when no part could."""
        if not self.done:
            return 2
        return 1 if self.errors or self.damaged else 0


def run_parts(
    parts: Sequence[str], runners: dict[str, Callable[[], Section]], result: PartsResult, what: str
) -> list[Section]:
    """Run each part in turn; fill result.done, .errors and .seconds; return the parts' sections."""
    sections = []
    for part in parts:
        tic = time.perf_counter()
        try:
            sections.append(runners[part]())
            result.done.append(part)
        except BilateralError as exc:
            result.errors[part] = str(exc)
            log.error("%s part %s could not run: %s", what, part, exc)
        except Exception as exc:  # a bug in one part must not lose the others
            result.errors[part] = f"{type(exc).__name__}: {exc} (traceback in {result.out.name}/errors.log)"
            with open(result.out / "errors.log", "a") as f:
                f.write(f"--- {part}\n{traceback.format_exc()}\n")
            log.exception("%s part %s failed", what, part)
        result.seconds[part] = time.perf_counter() - tic
        log.info("%s part %s: %.0f s", what, part, result.seconds[part])
    return sections
