"""Progress that reads well wherever it goes: live tqdm bars on a terminal; piped or written to a
file, no bars (they would fill the log with carriage returns and cursor moves) and the log lines
carry the progress instead: runs done / total, and each epoch's line with its images/s."""

from __future__ import annotations

import sys

from tqdm import tqdm


def interactive() -> bool:
    """True when stderr is a terminal, where a bar can redraw itself in place."""
    return sys.stderr.isatty()


def bar(**kwargs) -> tqdm:
    """A tqdm bar on a terminal; a disabled one (no output at all) anywhere else."""
    return tqdm(disable=not interactive(), dynamic_ncols=True, **kwargs)
