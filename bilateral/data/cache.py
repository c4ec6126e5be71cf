"""An .npz cache for decoded datasets, so that JPEG decoding happens once per source.

Files are written to a temporary name and renamed into place, so a crash or two processes
building the same entry never leave a half-written file under the final name.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bilateral.errors import disk_full, is_disk_full

Arrays = dict[str, np.ndarray]


def load_or_build(path: Path, keys: tuple[str, ...], build: Callable[[], Arrays]) -> Arrays:
    """Return the arrays cached at `path`, or build, cache and return them.

    A cache file that cannot be read, or lacks one of `keys`, is deleted and rebuilt.
    """
    if path.exists():
        cached = _read(path, keys)
        if cached is not None:
            return cached
    arrays = build()
    try:
        write_atomic(path, arrays)
    except OSError as exc:
        problem = disk_full(path, sum(a.nbytes for a in arrays.values())) if is_disk_full(exc) else exc
        warnings.warn(
            f"{path}: could not write the dataset cache ({problem}); the next load will decode the "
            "images again. Fix: make the cache directory (data_dir) writable, with room for it.",
            stacklevel=2,
        )
    return arrays


def _read(path: Path, keys: tuple[str, ...]) -> Arrays | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = set(keys) - set(npz.files)
            if missing:
                raise ValueError(f"missing arrays {sorted(missing)}")
            return {key: npz[key] for key in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(
            f"{path}: the dataset cache file is corrupt ({exc}); deleting it and rebuilding it "
            "from the source.",
            stacklevel=3,
        )
        path.unlink(missing_ok=True)
        return None


def write_atomic(path: Path, arrays: Arrays) -> None:
    """Write an uncompressed .npz (fast to load) via a temporary file and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
