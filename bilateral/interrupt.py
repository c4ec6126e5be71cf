"""Stopping a sweep on SIGTERM or Ctrl-C: at once, mid-epoch, but never between the files of one
checkpoint (best.pt, metrics.jsonl, last.pt must agree), so a rerun resumes from the last one.

The front door installs the handlers; the library only marks the few places a stop must wait for.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(BaseException):
    """A stop asked for by a signal. A BaseException, like KeyboardInterrupt: no `except Exception`
    that keeps a failed run from ending the sweep may swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by that signal


_shield = {"depth": 0, "pending": None}


def _raise(signum: int, frame) -> None:
    if _shield["depth"]:
        _shield["pending"] = signum  # raised as the shielded block ends
        return
    raise Interrupted(signum)


def install() -> None:
    """SIGTERM (kill, Slurm's time limit, preemption) and SIGINT (Ctrl-C) raise Interrupted in the
    main thread, where the sweep's driver runs."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise)


@contextmanager
def shielded() -> Iterator[None]:
    """A block a signal must not cut in two (a checkpoint's files): a stop asked for inside it is
    raised when it ends."""
    _shield["depth"] += 1
    try:
        yield
    finally:
        _shield["depth"] -= 1
        pending = _shield["pending"]
        if not _shield["depth"] and pending is not None:
            _shield["pending"] = None
            raise Interrupted(pending)
