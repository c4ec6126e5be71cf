"""Claims on runs, so that two sweeps on one directory (the same command started twice, two drivers
of one cluster) train different runs, or wait, instead of training the same ones twice.

A claim is an OS file lock (flock, through filelock) on <sweep>/claims/<run_id>.lock, held by the
process that trains the run or drives its job. The kernel drops it when that process ends, however
it ends, so a crashed owner holds nothing and the next sweep resumes its run from the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from bilateral.plan import RunSpec
from bilateral.store import SweepStore, write_json

log = logging.getLogger(__name__)


class Claims:
    """The claims this process holds on one sweep's runs."""

    def __init__(self, store: SweepStore):
        self.store = store
        self.folder = store.root / "claims"
        self.held: dict[str, FileLock] = {}
        self.unsupported = ""  # why claims are off: a filesystem without locks

    def take(self, specs: list[RunSpec]) -> list[RunSpec]:
        """Claim those of the specs that no other process holds and that are still unfinished;
        returns those now held by this process."""
        taken: list[RunSpec] = []
        for spec in specs:
            if self._acquire(spec.run_id):
                if self.store.run(spec.run_id).is_finished():  # its owner finished it meanwhile
                    self.release([spec])
                else:
                    taken.append(spec)
        return taken

    def release(self, specs: list[RunSpec]) -> None:
        for spec in specs:
            lock = self.held.pop(spec.run_id, None)
            if lock is not None:
                self._owner_file(spec.run_id).unlink(missing_ok=True)
                lock.release()

    def holders(self, specs: list[RunSpec]) -> str:
        """Who holds the claims on these runs, as the owners wrote it (pid and host), for the log."""
        owners = set()
        for spec in specs:
            try:
                owner = json.loads(self._owner_file(spec.run_id).read_text())
                owners.add(f"pid {owner['pid']} on {owner['host']}")
            except (OSError, ValueError, KeyError, TypeError):
                owners.add("another process")
        return ", ".join(sorted(owners))

    def _acquire(self, run_id: str) -> bool:
        if self.unsupported:
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.folder / f"{run_id}.lock", fallback_to_soft=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        except (OSError, NotImplementedError) as exc:  # e.g. a network filesystem mounted without locks
            self.unsupported = f"{type(exc).__name__}: {exc}"
            log.warning(
                "%s does not support file locks (%s): this sweep cannot claim its runs, so another sweep "
                "on this directory would train the same runs. Put --out on a filesystem with locks "
                "(flock) to run two sweeps on one directory",
                self.folder,
                self.unsupported,
            )
            return True
        self.held[run_id] = lock
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        write_json(self._owner_file(run_id), owner)
        return True

    def _owner_file(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.owner.json"
