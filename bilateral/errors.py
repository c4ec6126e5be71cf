"""Errors a user can act on: each message names the problem and the fix."""

import errno
import shutil
import traceback
from pathlib import Path


class BilateralError(Exception):
    """Base class: the launchers print these without a traceback and exit non-zero."""


class ConfigError(BilateralError):
    """A config key, preset, model kind or seed list that does not exist or does not parse."""


class DataError(BilateralError):
    """A dataset that is missing, corrupt, incomplete or inconsistent."""


class CheckpointError(BilateralError):
    """A checkpoint that does not match the model it is loaded into, or cannot be read."""


class DamagedFileError(BilateralError):
    """A run's record, spec, metrics or predictions file that cannot be read: a problem of that run
    alone, which sweeps, reports and analyses name and then go on without."""


class DiskFullError(BilateralError):
    """No space left to write a file; what was written before is intact."""


def describe_failure(exc: BaseException) -> str:
    """A user error is its message; anything else keeps its traceback for the run's error.txt."""
    if isinstance(exc, BilateralError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception(exc))


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: Path, needed: int) -> DiskFullError:
    """The error for a write of `needed` bytes to `path` that found no space."""
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    return DiskFullError(
        f"disk full: writing {path} needs {needed:,} bytes and {free:,} are free there. Fix: free space "
        f"on that disk (or point --out / data_dir at another), then rerun the same command: what was "
        "written before is intact, and finished runs and checkpoints are kept"
    )
