"""Which device, GPUs and CPUs each run gets: one decision for every backend, made before anything
trains, from what the cluster reports (an `Offer`) and what the user asked.

A cluster that has GPUs gives each run a GPU unless the user asks for something else. Without any,
this machine (the local backend) trains on the CPU and says so, while a cluster (Ray, Slurm) needs
--device cpu said out loud: a sweep that quietly trains on a CPU partition wastes days. A cluster whose
autoscaler starts GPU nodes on demand reports none until asked, so explicit GPU requests stand there.
The backends only translate: Ray reads its offer from `ray.cluster_resources()`, Slurm from
`sinfo`, a local run from `torch.cuda.device_count()`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from bilateral.errors import ConfigError

DEVICE_SPELLING = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class Offer:
    """What a cluster reports it can give one run: GPUs (Slurm: per node of the partition; Ray: in
    the cluster; local: on this machine) and CPUs; `source` names where the numbers came from."""

    gpus: float
    cpus: float
    source: str
    cluster: bool = False  # runs go to other nodes: each numbers its GPUs from 0; no quiet CPU sweep
    autoscales: bool = False  # GPUs not up yet come when asked for (a Ray autoscaler's GPU node group)
    no_gpu_fix: str = ""  # what else to pass when it reports no GPU, besides --device cpu

    def no_gpu(self, asked: str) -> ConfigError:
        """The error for asking (`asked`) for GPUs of a cluster that reports none."""
        also = f", or {self.no_gpu_fix}" if self.no_gpu_fix else ""
        return ConfigError(
            f"{asked}, but {self.source} reports no GPU: pass --device cpu to train on CPUs{also}"
        )


@dataclass(frozen=True)
class Placement:
    """What one run gets. gpus and cpus are per run (all its DDP workers together)."""

    device: str  # cpu | cuda | cuda:N: what the run's processes pass to torch
    gpus: float
    cpus: float
    workers: int = 1
    memory_fraction: float | None = None  # per-process share of a GPU that several runs pack onto
    note: str = ""  # why, when the choice was not the user's own

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def gpus_per_worker(self) -> float:
        return self.gpus / self.workers

    @property
    def cpus_per_worker(self) -> float:
        return self.cpus / self.workers

    @property
    def threads(self) -> int:
        """torch threads of one worker process: its whole CPUs (at least one)."""
        return max(1, math.floor(self.cpus_per_worker))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_device(device: str) -> str:
    if not DEVICE_SPELLING.fullmatch(device):
        raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N: fix --device")
    return device


def place(
    device: str,
    gpus: float | None,
    cpus: float | None,
    workers: int,
    offer: Offer,
    default_cpus_per_worker: float,
) -> Placement:
    """Resolve (--device, --gpus-per-run, --cpus-per-run, --workers-per-run) against an offer.

    gpus / cpus None: not given. With DDP (workers > 1) a run on GPUs needs one whole GPU per worker.
    """
    check_device(device)
    if offer.cluster and device.startswith("cuda:"):
        raise ConfigError(
            f"--device {device}: every job or trial numbers the GPUs it was given from 0, so a fixed "
            "index fails (or shares one GPU) on a cluster: pass --device cuda and let it assign them"
        )
    if workers < 1:
        raise ConfigError(f"--workers-per-run {workers} must be at least 1")
    if gpus is not None and gpus < 0:
        raise ConfigError(f"--gpus-per-run {gpus} cannot be negative")
    if cpus is not None and cpus <= 0:
        raise ConfigError(f"--cpus-per-run {cpus} must be positive")
    cpus = default_cpus_per_worker * workers if cpus is None else cpus
    note = ""
    if device == "cpu":
        if gpus:
            raise ConfigError(
                f"--device cpu with --gpus-per-run {gpus:g}: a CPU run uses no GPU. Drop --gpus-per-run, or "
                "use --device cuda; for N CPU processes of DDP use --workers-per-run N"
            )
        return Placement("cpu", 0.0, cpus, workers)
    if device == "auto" and gpus == 0:
        return Placement("cpu", 0.0, cpus, workers, note="--gpus-per-run 0: the runs train on the CPU")
    if offer.gpus <= 0 and not offer.autoscales:
        if device == "auto" and gpus is None and not offer.cluster:
            note = f"{offer.source} reports no GPU: the runs train on the CPU"
            return Placement("cpu", 0.0, cpus, workers, note=note)
        if device == "auto" and gpus is None:  # a whole sweep on a cluster's CPUs is never a quiet default
            raise offer.no_gpu("--device auto would train every run on the CPU")
        asked = f"--device {device}" if device != "auto" else f"--gpus-per-run {gpus:g}"
        raise offer.no_gpu(f"{asked} asks for a GPU")
    if gpus == 0:
        raise ConfigError(f"--device {device} with --gpus-per-run 0: give the run a GPU or use --device cpu")
    gpus = float(workers) if gpus is None else float(gpus)
    if workers > 1 and gpus != workers:
        raise ConfigError(
            f"--workers-per-run {workers} with --gpus-per-run {gpus:g}: DDP needs one whole GPU per worker "
            f"(NCCL refuses two ranks on one GPU), so give --gpus-per-run {workers}. To pack several runs "
            "on one GPU, use a fractional --gpus-per-run without DDP workers"
        )
    if workers == 1 and gpus > 1:
        raise ConfigError(
            f"--gpus-per-run {gpus:g} for a run of one process: it uses one GPU. For DDP over "
            f"{gpus:g} GPUs add --workers-per-run {gpus:g}"
        )
    if gpus > offer.gpus and not offer.autoscales:
        raise ConfigError(
            f"--gpus-per-run {gpus:g} is more than the {offer.gpus:g} GPU(s) {offer.source} reports"
        )
    if device == "auto":
        device = "cuda"
    fraction = gpus if gpus < 1 else None
    return Placement(device, gpus, cpus, workers, memory_fraction=fraction)


def local_offer() -> Offer:
    import os

    import torch

    return Offer(torch.cuda.device_count(), os.cpu_count() or 1, "this machine (torch.cuda)")
