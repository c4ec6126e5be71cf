"""Where a sweep's runs execute: the contract every `--cluster` backend meets, and the backends.

A backend is a module with `add_arguments(group)` (its own flags, in its own group of the help) and
`run(args, cfg, plan, store) -> {run_id: error}` (train every unfinished run of the plan; the runs
that failed, each with its error). Flags that place a run on a device and that more than one
backend reads (--gpus-per-run, --cpus-per-run, --workers-per-run) are declared once, here. A
backend is imported only when its flags or its run are needed; the library it drives (an optional
extra) is checked before any training.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Protocol

from bilateral.config import SweepConfig
from bilateral.flags import ranged
from bilateral.plan import Plan
from bilateral.store import SweepStore


class Backend(Protocol):
    def add_arguments(self, group: argparse._ArgumentGroup) -> None: ...

    def run(
        self, args: argparse.Namespace, cfg: SweepConfig, plan: Plan, store: SweepStore
    ) -> dict[str, str]: ...


@dataclass(frozen=True)
class BackendEntry:
    name: str  # the --cluster value
    module: str  # where its add_arguments and run live
    library: str | None  # the optional library it drives, or None
    summary: str  # for --help

    def load(self) -> Backend:
        return importlib.import_module(self.module)


BACKENDS = {
    entry.name: entry
    for entry in (
        BackendEntry("local", "launch.local", None, "in this process, one run after another"),
        BackendEntry("ray", "ray_jobs.backend", "ray", "a Ray cluster (started here, or --address)"),
        BackendEntry("slurm", "slurm.backend", "submitit", "Slurm job arrays, or Ray inside an allocation"),
    )
}


def add_placement_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that place a run, read by the Ray and Slurm backends (default None: each resolves
    its own default)."""
    group = parser.add_argument_group("placement (--cluster ray and slurm)")
    group.add_argument(
        "--gpus-per-run",
        type=ranged(float, 0),
        help="GPUs of one run; default: 1 (one per DDP worker) where the cluster has GPUs, else 0. "
        "Ray: a share, 0.25 packs 4 runs per GPU. Slurm: N > 1 = DDP over N GPUs",
    )
    group.add_argument(
        "--cpus-per-run",
        type=ranged(float, 0, low_open=True),
        help="CPUs per run (Ray: per DDP worker, default 1; Slurm: default 2)",
    )
    group.add_argument(
        "--workers-per-run",
        type=ranged(int, 1),
        default=1,
        help="N > 1: DDP over N processes (Ray Train workers; Slurm tasks), one GPU each on GPUs",
    )


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--cluster, with its choices from BACKENDS, then the placement flags and each backend's own."""
    choices = ", ".join(f"{e.name} = {e.summary}" for e in BACKENDS.values())
    parser.add_argument(
        "--cluster", choices=list(BACKENDS), default="local", help=f"where runs execute: {choices}"
    )
    add_placement_arguments(parser)
    for entry in BACKENDS.values():
        entry.load().add_arguments(parser.add_argument_group(f"--cluster {entry.name}"))
