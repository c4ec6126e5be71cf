"""Paths the suite will write, checked before anything is made or trained: a directory that is a
file, or lies below one, fails at once with its name and the fix, not in a traceback later."""

from __future__ import annotations

import os
from pathlib import Path

from bilateral.errors import ConfigError


def check_dir(path: str | Path, what: str, fix: str) -> None:
    """path will be a directory this process writes in (made when missing)."""
    path = Path(path).absolute()
    for existing in (path, *path.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            where = "it is a file" if existing == path else f"{existing} is a file"
            raise ConfigError(f"{what} {path} cannot be a directory: {where}. Fix: {fix}")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{what} {path} cannot be written: {existing} is not writable here. Fix: {fix}")
        return


def check_file(path: str | Path, what: str, fix: str) -> None:
    """path will be a file this process writes (its folder made when missing)."""
    path = Path(path).absolute()
    if path.is_dir():
        raise ConfigError(f"{what} {path} cannot be written: it is a directory. Fix: {fix}")
    check_dir(path.parent, what, fix)
