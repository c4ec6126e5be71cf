"""Numbers on the command line, checked where they are parsed: argparse types for the entry points
(launch/, ray_jobs/, slurm/) with the same ranges (bilateral.config.Range) as the config keys."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from bilateral.config import Range


def ranged(kind: type, low: float | None = None, high: float | None = None, **open_ends: bool) -> Callable:
    """An argparse type: text -> kind, refused (exit 2, the flag named) outside Range(low, high)."""
    allowed = Range(low, high, **open_ends)

    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'}: give one {allowed}"
            ) from None
        if not math.isfinite(value) or value not in allowed:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a value {allowed}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert
