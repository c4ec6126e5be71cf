"""Where a sweep lives on disk: results/<sweep>/runs/<run_id>/{spec.json, metrics.jsonl, record.json, ...}.

Every file that marks progress is written atomically (temp file + rename), so a run killed at
any instant leaves either the old file or the new one. A run is finished when record.json exists.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bilateral.errors import CheckpointError, DamagedFileError, disk_full, is_disk_full
from bilateral.plan import RunSpec


def write_atomic(path: Path, data: bytes) -> None:
    """Replace path with data, or leave it as it was: a full disk raises DiskFullError and keeps
    the old file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(path, len(data)) from None
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


class RunStore:
    """One run's directory."""

    def __init__(self, root: Path):
        self.root = root

    @property
    def run_id(self) -> str:
        return self.root.name

    def path(self, name: str) -> Path:
        return self.root / name

    def is_finished(self) -> bool:
        return self.path("record.json").is_file()

    def read_record(self) -> dict:
        return _read_json(
            self.path("record.json"),
            f"delete it and rerun the sweep: the run resumes from its last checkpoint in {self.root}"
            " and writes its record again",
            dict,
        )

    def read_spec(self) -> dict:
        return _read_json(
            self.path("spec.json"), "rerun the sweep command: it writes every run's spec.json again", dict
        )

    def write_record(self, record: dict) -> None:
        write_json(self.path("record.json"), record)
        self.path("error.txt").unlink(missing_ok=True)

    def write_spec(self, spec: RunSpec) -> None:
        write_json(self.path("spec.json"), spec.to_dict())

    def write_error(self, text: str) -> None:
        write_atomic(self.path("error.txt"), text.encode())

    def retire_error(self) -> None:
        """Before a run is submitted again: its error.txt becomes error.previous.txt, so an error.txt
        found afterwards is this attempt's (a file's time on shared storage is another machine's clock)."""
        if self.path("error.txt").is_file():
            self.path("error.txt").replace(self.path("error.previous.txt"))

    def write_metrics(self, rows: list[dict]) -> None:
        """The whole per-epoch log, rewritten each epoch (it is small) so a resume can truncate it."""
        write_atomic(self.path("metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in rows).encode())

    def read_metrics(self) -> list[dict]:
        path = self.path("metrics.jsonl")
        if not path.is_file():
            return []
        try:
            rows = [json.loads(line) for line in path.read_text().splitlines()]
        except (ValueError, UnicodeDecodeError) as exc:
            raise DamagedFileError(
                f"{path} is damaged ({type(exc).__name__}: {exc}). Fix: delete the run's folder {self.root} "
                "to train this run again"
            ) from None
        return rows

    def save_checkpoint(self, name: str, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(self.path(f"checkpoints/{name}.pt"), buffer.getvalue())

    def has_checkpoint(self, name: str) -> bool:
        return self.path(f"checkpoints/{name}.pt").is_file()

    def load_checkpoint(self, name: str, mmap: bool = False) -> dict:
        """mmap: read tensors lazily, only when touched (to read a few numbers of a big file)."""
        path = self.path(f"checkpoints/{name}.pt")
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}). Fix: restore it, or "
                f"delete the run's folder {self.root} to train this run again"
            ) from None

    def checkpoint_epoch(self, name: str) -> int:
        """The epoch a checkpoint was saved after; -1 when there is none. Memory-mapped: only the
        few bytes of that number are read, so grouping many runs by progress stays cheap."""
        return int(self.load_checkpoint(name, mmap=True)["epoch"]) if self.has_checkpoint(name) else -1

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_atomic(self.path(name), buffer.getvalue())

    def load_arrays(self, name: str) -> dict[str, np.ndarray]:
        path = self.path(name)
        try:
            with np.load(path) as f:
                return dict(f)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DamagedFileError(
                f"{path} is damaged ({type(exc).__name__}: {exc}). Fix: delete it and "
                f"{self.path('record.json')}, then rerun the sweep: the run evaluates its best checkpoint "
                "again and rewrites both"
            ) from None


class SweepStore:
    """results/<sweep>/: the plan, the runs, and the summary written by bilateral.report."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run(self, run_id: str) -> RunStore:
        return RunStore(self.root / "runs" / run_id)

    def write_plan(self, config: dict, specs: list[RunSpec]) -> None:
        write_json(self.root / "sweep.json", {"config": config, "runs": [s.run_id for s in specs]})
        for spec in specs:
            self.run(spec.run_id).write_spec(spec)

    def read_config(self) -> dict:
        """The config the sweep last ran with (sweep.json); {} before it ran."""
        path = self.root / "sweep.json"
        if not path.is_file():
            return {}
        return _read_json(path, "run the sweep again to rewrite it", dict).get("config", {})

    def read_records(self) -> tuple[list[dict], dict[str, str]]:
        """(records of every finished run in run-id order, {run_id: what is wrong} of those whose
        record.json is damaged): one damaged record must not hide the others."""
        records, damaged = [], {}
        for path in sorted((self.root / "runs").glob("*/record.json")):
            try:
                records.append(RunStore(path.parent).read_record())
            except DamagedFileError as exc:
                damaged[path.parent.name] = str(exc)
        return records, damaged


def _read_json(path: Path, fix: str, kind: type) -> Any:
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedFileError(f"{path} is damaged ({type(exc).__name__}: {exc}). Fix: {fix}") from None
    if not isinstance(value, kind):
        raise DamagedFileError(f"{path} is damaged (it holds a {type(value).__name__}). Fix: {fix}")
    return value
