"""--cluster local: the runs train in this process, one after another (the debug mode: a
`breakpoint()` anywhere in the library works)."""

from __future__ import annotations

import argparse
import logging

from bilateral.config import SweepConfig
from bilateral.placement import Offer, Placement, local_offer, place
from bilateral.plan import Plan
from bilateral.store import SweepStore
from bilateral.sweep import InProcessExecutor, run_sweep

log = logging.getLogger("sweep")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """No flags of its own."""


def run(args: argparse.Namespace, cfg: SweepConfig, plan: Plan, store: SweepStore) -> dict[str, str]:
    offer = local_offer()
    placement = place(cfg.device, None, None, 1, offer, default_cpus_per_worker=offer.cpus)
    for note in (placement.note, idle_gpus_note(offer, placement)):
        if note:
            log.warning("%s", note)
    executor = InProcessExecutor(store, plan, placement.device, cfg.data_dir, args.fuse, placement)
    return run_sweep(plan, store, executor)


def idle_gpus_note(offer: Offer, placement: Placement) -> str:
    """What to say when --cluster local, one run at a time on one GPU, leaves this machine's others idle."""
    if not placement.on_gpu or offer.gpus <= 1:
        return ""
    return (
        f"this machine has {offer.gpus:g} GPUs, but --cluster local trains one run at a time on "
        f"{placement.device}: the other {offer.gpus - 1:g} stay idle. For one run per GPU at once, use "
        f"--cluster ray --num-cpus {int(offer.cpus)} (a Ray instance on this machine; docs/ray.md)"
    )
